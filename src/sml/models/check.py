"""``sml models check``: pixel accuracy and mIoU of a model on labelled in-distribution frames.

A network fed with the wrong channel order, scale or normalisation still returns logits of
the right shape; its segmentation is what shows it. The check compares the model's argmax
with the labels, compares both numbers with what a constant prediction of the most frequent
class reaches on the same frames (chance here), and runs the frames once more with the other
channel order: a network that segments better with the channels swapped is being fed in the
wrong order (a swap costs a network without normalisation only a few points, so chance alone
would not show it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from sml.errors import InputError

#: a model whose mIoU is below this, or whose accuracy is within ACC_MARGIN of chance, is flagged
MIOU_FLOOR = 0.25
ACC_MARGIN = 0.25
#: mIoU gain of the swapped channel order above which the stated order is flagged
SWAP_MARGIN = 0.03


@dataclass
class CheckResult:
    """Confusion-based numbers of one check (fractions in [0, 1])."""

    frames: int
    pixels: int
    pixel_accuracy: float
    miou: float
    per_class_iou: dict[str, float]
    chance_accuracy: float
    chance_miou: float
    channel_order: str = "RGB"
    swapped_accuracy: float | None = None
    swapped_miou: float | None = None

    @property
    def near_chance(self) -> bool:
        """True when the segmentation is too poor to be a correctly fed network."""
        return self.miou < MIOU_FLOOR or self.pixel_accuracy < self.chance_accuracy + ACC_MARGIN * (
            1 - self.chance_accuracy)

    @property
    def swap_better(self) -> bool:
        """True when the other channel order segments clearly better than the stated one."""
        return self.swapped_miou is not None and self.swapped_miou > self.miou + SWAP_MARGIN

    def warnings(self) -> list[str]:
        """One sentence per finding that suggests the model is misread (empty when none)."""
        out = []
        if self.near_chance:
            out.append(f"pixel accuracy {self.pixel_accuracy:.1%} and mIoU {self.miou:.1%} are near chance "
                       f"({self.chance_accuracy:.1%} and {self.chance_miou:.1%} for always predicting the most "
                       f"frequent class): the network is probably fed wrongly (channel order, scale, mean/std, "
                       f"input size) or its output channels are not the classes stated")
        if self.swap_better:
            other = "BGR" if self.channel_order == "RGB" else "RGB"
            out.append(f"with the channels in {other} order the network segments better (mIoU "
                       f"{self.swapped_miou:.1%} against {self.miou:.1%} in {self.channel_order}): the card's "
                       f"input.channel_order is probably wrong")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "near_chance": self.near_chance, "swap_better": self.swap_better,
                "warnings": self.warnings()}


def confusion(pred: np.ndarray, labels: np.ndarray, num_classes: int, ignore: int = 255) -> np.ndarray:
    """``num_classes x num_classes`` int64 counts (rows: label, columns: prediction), ``ignore`` skipped."""
    keep = labels != ignore
    idx = labels[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _scores(conf: np.ndarray) -> tuple[float, float, np.ndarray]:
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    present = conf.sum(1) > 0  # classes that occur in the labels
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    return float(tp.sum() / max(conf.sum(), 1)), float(np.nanmean(iou[present])) if present.any() else 0.0, iou


def check_model(model: Any, samples: Iterable[Any], class_names: list[str] | tuple[str, ...],
                swap: bool = True) -> CheckResult:
    """Accuracy and mIoU of ``model`` (a SegmentationModel) on labelled ``samples`` (train-id labels).

    ``class_names`` are the data set's classes; the model's must be the same, in the same order.
    ``swap`` also scores the model with the other channel order (one more forward pass a frame).
    """
    if list(model.class_names) != list(class_names):
        raise InputError(f"sml models check compares the model's classes with the data's: the model has "
                         f"{len(model.class_names)} classes ({', '.join(model.class_names[:4])}, ...), the data "
                         f"{len(class_names)} ({', '.join(class_names[:4])}, ...). Check output.classes and "
                         f"output.channels in the model card")
    n = len(class_names)
    conf = np.zeros((n, n), np.int64)
    swapped = np.zeros((n, n), np.int64)
    frames = 0
    order = model.channel_order
    try:
        for s in samples:
            if s.labels is None:
                continue
            for stated, target in ((True, conf), (False, swapped)) if swap else ((True, conf),):
                model.channel_order = order if stated else ("BGR" if order == "RGB" else "RGB")
                pred = model.predict(s.image, output_size=s.labels.shape).argmax(1)[0].cpu().numpy()
                target += confusion(pred, s.labels, n)
            frames += 1
    finally:
        model.channel_order = order
    if frames == 0:
        raise InputError("no labelled frame to check the model on; give a data set with labels, e.g. "
                         "--data cityscapes:PATH with gtFine")
    acc, miou, iou = _scores(conf)
    counts = conf.sum(1)
    majority = int(counts.argmax())
    chance = np.zeros_like(conf)
    chance[:, majority] = counts
    chance_acc, chance_miou, _ = _scores(chance)
    swap_acc, swap_miou = _scores(swapped)[:2] if swap else (None, None)
    return CheckResult(frames, int(conf.sum()), acc, miou,
                       {c: float(v) for c, v, p in zip(class_names, iou, counts > 0) if p},
                       chance_acc, chance_miou, order, swap_acc, swap_miou)
