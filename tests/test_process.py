"""sml.utils.process.tune_process: the process settings the `sml` command starts with."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, ctypes.util, os, sys
import numpy as np
if sys.argv[1] == "tune":
    from sml.utils.process import tune_process
    tune_process()
    tune_process()  # idempotent

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.mallinfo2.restype = MallInfo2
mapped = []
for _ in range(3):  # a 64 MB block (a frame of logits), freed and taken again
    before = libc.mallinfo2().hblkhd
    a = np.ones(64 << 20, np.uint8)
    mapped.append(libc.mallinfo2().hblkhd - before)
    del a
print(os.environ.get("THP_MEM_ALLOC_ENABLE"), max(mapped))
"""


def _glibc_with_mallinfo2() -> bool:
    try:
        return hasattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _glibc_with_mallinfo2(), reason="glibc only")
def test_tune_process_serves_large_blocks_from_the_heap():
    def probe(mode: str, **env: str) -> tuple[str, int]:
        e = {k: v for k, v in os.environ.items() if k not in ("THP_MEM_ALLOC_ENABLE", "SML_MALLOC_TUNING")}
        out = subprocess.run([sys.executable, "-c", PROBE, mode], env={**e, **env}, capture_output=True, text=True,
                             check=True).stdout.split()
        return out[0], int(out[1])

    # glibc's default maps a 64 MB block on its own (and unmaps it when freed: fresh pages every time)
    thp, mapped = probe("plain")
    assert thp == "None" and mapped >= 64 << 20
    # tuned: from the heap, which keeps freed memory for the next block
    thp, mapped = probe("tune")
    assert thp == "1" and mapped == 0
    # an explicit environment wins
    thp, mapped = probe("tune", SML_MALLOC_TUNING="0", THP_MEM_ALLOC_ENABLE="0")
    assert thp == "0" and mapped >= 64 << 20
