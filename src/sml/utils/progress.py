"""Progress bars (tqdm) shown on the main process only, with rate and ETA; messages that do not mangle them.

A bar redraws its line in place without a newline, so a plain ``print`` to the
terminal while one is active lands on the bar's line. Messages go through
:func:`write_message` (above the bar); a final error goes after :func:`close_bars`.
"""
from __future__ import annotations

import contextlib
import sys
import warnings
from typing import Iterable, Iterator, TextIO, TypeVar

from tqdm.auto import tqdm

from sml.utils import distributed

__all__ = ["progress", "write_message", "close_bars", "route_warnings"]

T = TypeVar("T")


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "frame",
             disable: bool | None = None, initial: int = 0, file: TextIO | None = None) -> Iterator[T]:
    """Wrap ``iterable`` in a progress bar on rank 0 (to ``file``, default stderr); silent on other ranks."""
    if disable is None:
        disable = not distributed.is_main()
    return iter(tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, initial=initial,
                     file=file if file is not None else sys.stderr, dynamic_ncols=True, smoothing=0.1))


def write_message(text: str, file: TextIO | None = None) -> None:
    """Print ``text`` on its own line(s) (stderr by default), above any active progress bar."""
    tqdm.write(str(text), file=file if file is not None else sys.stderr)


def close_bars() -> None:
    """Finish every live progress bar on its own line, so that a final message starts on a new one.

    A loop left by an exception keeps its bar alive (the traceback holds it)
    with the cursor at the end of the bar's line.
    """
    for bar in list(getattr(tqdm, "_instances", ())):
        with contextlib.suppress(Exception):  # a bar on a closed stream must not hide the real error
            bar.close()


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    write_message(warnings.formatwarning(message, category, filename, lineno, line).rstrip("\n"), file)


def route_warnings() -> None:
    """Print Python warnings through :func:`write_message` from now on (called once by the CLI)."""
    warnings.showwarning = _show_warning  # type: ignore[assignment]
