"""One image's labels, checked and counted once, for every pixel metric that scores a map against them."""
from __future__ import annotations

from typing import Any

import numpy as np

from sml.errors import InputError
from sml.metrics._inputs import label_counts, scores_and_labels, to_numpy

__all__ = ["FrameLabels"]


class FrameLabels:
    """One image's labels, validated and counted once, for scoring several anomaly maps against them.

    ``update(anomaly, frame_labels)`` of any :class:`~sml.metrics.PixelMetric`
    then skips the label work (value check, counts, masks) that every method
    would otherwise repeat.
    """

    def __init__(self, labels: Any, ignore_index: int = 255) -> None:
        y = to_numpy(labels, "labels")
        if y.dtype.kind not in "iub":
            # scores_and_labels' checks and messages (float labels holding integers are accepted)
            _, y = scores_and_labels(np.zeros(y.shape, np.float32), y)
        if y.dtype.kind == "b":
            y = y.view(np.uint8)
        self.ignore_index = int(ignore_index)
        self.shape = tuple(y.shape)
        self.n_pos, self.n_neg, self.n_ignored = label_counts(y, self.ignore_index)
        flat = y.reshape(-1)
        #: evaluated pixels (None: all of them)
        self.keep = flat != self.ignore_index if self.n_ignored else None
        kept = flat[self.keep] if self.keep is not None else flat
        #: anomaly pixels among the evaluated ones (None: no anomaly pixel)
        self.positive = kept == 1 if self.n_pos else None
        self._labels = labels if hasattr(labels, "detach") else None
        self._keep_on: dict[str, Any] = {}

    def check_map(self, shape: tuple[int, ...], ignore_index: int) -> None:
        """Refuse a map of another ``shape`` than these labels (or not one image), or a metric's other ``ignore_index``."""
        if self.ignore_index != ignore_index:
            raise InputError(f"labels were prepared with ignore_index {self.ignore_index}, this metric uses "
                             f"{ignore_index}")
        if shape != self.shape:
            raise InputError(f"anomaly map shape {shape} does not match labels shape {self.shape}; "
                             "pass the map at label resolution (H x W)")
        if len(shape) not in (1, 2) and not (len(shape) == 3 and shape[0] == 1):
            raise InputError(f"update() with FrameLabels takes one image (H x W), got shape {shape}")

    def keep_on(self, device: Any) -> Any:
        """``keep`` as a torch bool tensor on ``device`` (None: every pixel), made once per device.

        From the labels themselves when they already live there, else copied from the host.
        """
        if self.keep is None:
            return None
        key = str(device)
        if key not in self._keep_on:
            import torch

            lab = self._labels
            if lab is not None and lab.device == torch.device(device):
                self._keep_on[key] = lab.detach().reshape(-1) != self.ignore_index
            else:
                self._keep_on[key] = torch.from_numpy(self.keep).to(device)
        return self._keep_on[key]

    def positive_on(self, device: Any) -> Any:
        """``positive`` (anomaly pixels among the evaluated ones) as a torch bool tensor on ``device``
        (None: no anomaly pixel), copied from the host once per device."""
        if self.positive is None:
            return None
        key = f"positive:{device}"
        if key not in self._keep_on:
            import torch

            self._keep_on[key] = torch.from_numpy(self.positive).to(device)
        return self._keep_on[key]
