"""Entry point of the ``sml`` command (also ``python -m sml``)."""
from __future__ import annotations

import argparse
import importlib
import sys
import textwrap
from typing import Sequence

from sml import __version__
from sml.errors import SMLError
from sml.utils.process import tune_process
from sml.utils.progress import route_warnings

# Sub-commands, in the order `sml --help` lists them. Each module defines
# `register(subparsers)`, which adds its parser and sets `func=run(args) -> int`.
COMMANDS = ["stats", "eval", "predict", "train", "demo", "report", "compare", "diagnose", "export", "models"]

DESCRIPTION = """\
Standardized Max Logits (Jung et al., ICCV 2021): find unexpected obstacles on
the road in the output of any semantic-segmentation network, with no
retraining and no outlier data.

Typical use:
  sml stats --model erfnet --weights erfnet_cityscapes.pth \\
            --data cityscapes:/data/cityscapes -o stats.json
  sml eval  --model erfnet --weights erfnet_cityscapes.pth --stats stats.json \\
            --data road-anomaly:/data/RoadAnomaly_jpg --out runs/ra --report
  sml demo  # everything above on a generated data set, no download
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sml", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"sml {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"sml.cli.{name}").register(sub)
    return parser


def _fail(message: str, code: int = 2) -> int:
    from sml.utils.progress import close_bars, write_message

    close_bars()  # the message starts on its own line, not after a bar left by the exception
    # paths are never broken: no wrapping at hyphens or inside long words
    text = "\n".join(textwrap.fill(p, width=100, break_on_hyphens=False, break_long_words=False)
                     for p in f"sml: error: {message}".split("\n"))
    write_message(text, sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    # huge pages for torch's big tensors and a malloc that reuses freed blocks (see there): before
    # any command allocates; an explicit environment wins. Here, not at import: importing the
    # CLI (tests, other programs) must not change the process.
    tune_process()
    route_warnings()  # warnings above any progress bar, on their own line
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except SMLError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(_os_error(exc))
    except KeyboardInterrupt:
        return _fail("interrupted. sml stats and sml eval keep what they had saved in their partial state (a "
                     "save every --save-interval seconds or --save-every frames): the same command with --resume "
                     "continues from there", 130)


def _os_error(exc: OSError) -> str:
    """One paragraph for a failed file operation: the path, what went wrong, what to do."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is None:  # sml's own writes name their path (sml.utils.atomic); this one did not say
        return f"a file operation failed: {reason}; check the output location (free space, permissions) and try again"
    path = exc.filename
    fixes = {"FileNotFoundError": "check the path and try again",
             "PermissionError": "fix its permissions or choose a location you can write to",
             "IsADirectoryError": "give a file, not a folder", "NotADirectoryError": "a file stands where a folder "
             "should be: remove it or choose another location"}
    fix = fixes.get(type(exc).__name__, "check the location (free space, permissions) and try again")
    return f"{path}: {reason}; {fix}"


if __name__ == "__main__":
    raise SystemExit(main())
