"""Where a map is counted: the one switch between the host path and the device path of the per-frame states.

The per-frame states of ``sml eval`` (the exact pixel metric, the SegmentMeIfYouCan
binned metric, the per-class diagnostics) take torch tensors that live on an
accelerator without copying them to the host: they sort, count and histogram
where the map lives, and only per-frame compact tables (distinct keys with their
counts, bins, histograms) cross. :func:`on_device` says which path a value
takes; :func:`to_host` is the one place a full map is copied to the host (map
files, ``--components``).

``DEVICE_PATH_ON_CPU`` (tests) sends CPU tensors through the device path, so the
device code runs, and is compared with the host path, on a machine without a GPU.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["DEVICE_PATH_ON_CPU", "on_device", "to_host"]

#: tests: CPU tensors take the device path too (torch ops, only compact tables made into NumPy arrays)
DEVICE_PATH_ON_CPU = False


def on_device(x: Any) -> bool:
    """Whether ``x`` takes the device path: a torch tensor off the CPU (or any tensor under ``DEVICE_PATH_ON_CPU``)."""
    dev = getattr(x, "device", None)
    if dev is None or not hasattr(x, "detach"):
        return False
    return getattr(dev, "type", "cpu") != "cpu" or DEVICE_PATH_ON_CPU


def to_host(x: Any) -> np.ndarray:
    """``x`` as a NumPy array on the host (a tensor is copied off its device; NumPy input is returned as is).

    On the device path every copy to the host goes through here, as a dispatched
    copy (``copy=True``), so a dispatch hook sees it even for CPU tensors.
    """
    if not hasattr(x, "detach"):
        return np.asarray(x)
    t = x.detach()
    if t.device.type == "cpu" and not DEVICE_PATH_ON_CPU:
        return t.numpy()
    return t.to("cpu", copy=True).numpy()
