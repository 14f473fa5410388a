"""`sml diagnose RUN_DIR`: per-class table, figure and plain-language reading of RUN_DIR/diagnostics.json."""
from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diagnose", help="why SML helps or fails here: per-class max logits of inlier vs anomaly pixels",
        description="Read RUN_DIR/diagnostics.json (written by `sml eval`), print per predicted class the "
                    "share of anomaly pixels, the training mean and std of the max logit and the quartiles "
                    "of the max logit of inlier and anomaly pixels, write the figure RUN_DIR/diagnostics.png "
                    "and .svg (box plots per class, training mean +- std drawn in, classes by anomaly share) "
                    "and print one paragraph reading the numbers.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `sml eval --out`")
    p.add_argument("--top", type=int, default=10, metavar="N",
                   help="classes in the table and the figure, largest anomaly share first (default 10)")
    p.add_argument("--out", default=None, metavar="STEM",
                   help="figure path without extension (default RUN_DIR/diagnostics)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sml.diagnostics import ClassDiagnostics, diagnostics_table, explain, plot_diagnostics
    from sml.errors import InputError
    from sml.utils.run_folder import run_files
    from sml.utils.run_layout import DIAGNOSTICS

    if args.top < 1:
        raise InputError(f"--top must be at least 1, got {args.top}")
    root = Path(args.run_dir)
    path = root / DIAGNOSTICS
    if not path.is_file():
        raise InputError(f"{path} not found: `sml diagnose` reads the per-class diagnostics that `sml eval "
                         f"--out {root}` writes there; run the evaluation first (or check the path)")
    owned = run_files(root)
    if owned is not None and DIAGNOSTICS not in owned:
        raise InputError(f"{path} is not from the run in {root} (its run.json does not list it): it was left by "
                         f"an earlier run; evaluate again with `sml eval ... --out {root} --overwrite`")
    diag = ClassDiagnostics.load(path)
    summary = diag.compute()
    stem = Path(args.out) if args.out else root / "diagnostics"
    with _output(root, stem):
        files = plot_diagnostics(summary, stem, top=args.top)
    print(diagnostics_table(summary, top=args.top))
    print()
    print(textwrap.fill(explain(summary), width=100))
    print()
    print("figure: " + ", ".join(str(f) for f in files))
    return 0


def _output(root: Path, stem: Path) -> Any:
    """Inside the run folder: written as the run's files (sml.utils.run_folder); elsewhere: never over a
    file that is not an sml figure."""
    import contextlib
    import os

    from sml.utils import run_folder

    figures = [stem.with_name(f"{stem.name}.{ext}") for ext in ("png", "svg")]
    inside = os.path.abspath(stem).startswith(os.path.abspath(root) + os.sep)
    if inside:
        return run_folder.join_run(root, expected=[os.path.relpath(f, root).replace(os.sep, "/") for f in figures])
    for f in figures:
        run_folder.check_replace(f, "figure")
    return contextlib.nullcontext()
