"""Process-wide memory settings for the ``sml`` command (and benchmarks that time it).

Set once at start-up, before large arrays are allocated; a library import never
changes them. Both are about first-touch page faults: the kernel zero-fills every
fresh page, and on small VMs that costs as much as the arithmetic that fills it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# glibc mallopt() parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

#: blocks up to this size come from malloc's heap (glibc's ceiling for the setting on 64-bit)
MMAP_THRESHOLD = 32 << 20
#: freed heap memory kept for reuse before any is handed back to the kernel
TRIM_THRESHOLD = 1 << 30

_done = False


def tune_process() -> None:
    """Huge pages for torch's large CPU tensors, and a malloc that keeps freed blocks for reuse.

    - ``THP_MEM_ALLOC_ENABLE=1`` (read by torch at its first allocation): full-resolution
      logits every frame, first-touched 4 KB page by page, took longer than the bilinear
      upsampling that fills them (160 MB Cityscapes logits: 68 ms of faults vs 16 ms).
    - glibc's malloc maps each block above a moving threshold afresh and unmaps it when
      freed, and trims the heap top, so the NumPy temporaries of the pooled metrics
      (tens of MB per method, allocated once per run) fault in every page each time:
      the metrics of one method took 101 ms cold against 20 ms warm. Serving blocks up
      to 32 MB from the heap and keeping up to 1 GB of freed memory makes the first call
      cost 27 ms. Only on glibc; elsewhere nothing changes.

    An explicit environment wins: ``THP_MEM_ALLOC_ENABLE`` is only defaulted, and
    ``SML_MALLOC_TUNING=0`` leaves malloc alone. Idempotent.
    """
    global _done
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    if _done or os.environ.get("SML_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return
    _done = True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # a fixed threshold also turns off glibc's own sliding one
    mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    mallopt(_M_TOP_PAD, 16 << 20)
