"""Progress bars (tqdm) shown on the main process only, with rate and ETA."""
from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

from sml.utils import distributed

T = TypeVar("T")


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "frame",
             disable: bool | None = None, initial: int = 0) -> Iterator[T]:
    """Wrap ``iterable`` in a progress bar on rank 0 (to stderr); silent on other ranks."""
    if disable is None:
        disable = not distributed.is_main()
    return iter(tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, initial=initial,
                     file=sys.stderr, dynamic_ncols=True, smoothing=0.1))
