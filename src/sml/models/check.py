"""``sml models check``: pixel accuracy and mIoU of a model on labelled in-distribution frames.

A network fed with the wrong channel order, scale or normalisation still returns logits of
the right shape; its segmentation is what shows it. The check compares the model's argmax
with the labels, compares both numbers with what a constant prediction of the most frequent
class reaches on the same frames (chance here), and runs the frames once more with the other
channel order, its mean and std reversed with the channels (so the probe is the same card
written for the other order): a network that segments better that way is being fed in the
wrong order (a swap costs a network without normalisation only a few points, so chance alone
would not show it). NaN or infinite logits are reported as such: they say nothing about the
channel order.

mIoU (:data:`MIOU_DEFINITION`): one confusion matrix is pooled over all labelled pixels of all
frames (label 255 ignored); each class's IoU is TP / (TP + FP + FN) from it, and mIoU is their
mean over the classes that occur in the labels (a class only predicted, never labelled, is left
out of the mean; its pixels still count against the classes they belong to).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from sml.errors import InputError

#: a model whose mIoU is below this, or whose accuracy is within ACC_MARGIN of chance, is flagged
MIOU_FLOOR = 0.25
ACC_MARGIN = 0.25
#: mIoU gain of the swapped channel order above which the stated order is flagged
SWAP_MARGIN = 0.03
MIOU_DEFINITION = ("mIoU is the mean, over the classes present in the labels, of TP / (TP + FP + FN) from one "
                   "confusion matrix pooled over all labelled pixels of all frames (label 255 ignored)")


@dataclass
class CheckResult:
    """Confusion-based numbers of one check (fractions in [0, 1]).

    ``nonfinite_frames``: frames whose logits held NaN or infinity with the stated channel order
    (``swapped_nonfinite_frames``: with the other order).
    """

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
    nonfinite_frames: int = 0
    swapped_nonfinite_frames: int = 0
    miou_definition: str = MIOU_DEFINITION

    @property
    def near_chance(self) -> bool:
        """True when the segmentation is too poor to be a correctly fed network."""
        return self.miou < MIOU_FLOOR or self.pixel_accuracy < self.chance_accuracy + ACC_MARGIN * (
            1 - self.chance_accuracy)

    @property
    def swap_better(self) -> bool:
        """True when the other channel order segments clearly better than the stated one (both with
        finite logits)."""
        return (self.swapped_miou is not None and not self.nonfinite_frames and not self.swapped_nonfinite_frames
                and self.swapped_miou > self.miou + SWAP_MARGIN)

    def warnings(self) -> list[str]:
        """One sentence per finding that suggests the model is misread (empty when none)."""
        if self.nonfinite_frames:  # the numbers below come from broken logits: say only that
            return [f"the network returned NaN or infinite logits on {self.nonfinite_frames} of {self.frames} "
                    f"frames, so its accuracy and mIoU say nothing about channel order or normalisation: check "
                    f"the network file and its weights, and the input scale, mean and std (inputs far outside "
                    f"the trained range can overflow)"]
        out = []
        if self.near_chance:
            out.append(f"pixel accuracy {self.pixel_accuracy:.1%} and mIoU {self.miou:.1%} are near chance "
                       f"({self.chance_accuracy:.1%} and {self.chance_miou:.1%} for always predicting the most "
                       f"frequent class): the network is probably fed wrongly (channel order, scale, mean/std, "
                       f"input size) or its output channels are not the classes stated")
        if self.swap_better:
            other = "BGR" if self.channel_order == "RGB" else "RGB"
            out.append(f"with the channels in {other} order (mean and std reversed with them) the network "
                       f"segments better (mIoU {self.swapped_miou:.1%} against {self.miou:.1%} in "
                       f"{self.channel_order}): the card's input.channel_order is probably wrong (with mean and "
                       f"std listed in the order of the other)")
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
    """Pixel accuracy, mIoU (:data:`MIOU_DEFINITION`) and per-class IoU of a pooled confusion matrix."""
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    present = conf.sum(1) > 0  # classes that occur in the labels
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    return float(tp.sum() / max(conf.sum(), 1)), float(np.nanmean(iou[present])) if present.any() else 0.0, iou


@contextlib.contextmanager
def other_order(model: Any) -> Iterator[None]:
    """``model`` fed in the other channel order for the block, its mean and std reversed with the
    channels: the same card written for the other order, not a half-swapped one."""
    saved = model.channel_order, getattr(model, "mean", None), getattr(model, "std", None)
    model.channel_order = "BGR" if saved[0] == "RGB" else "RGB"
    if saved[1] is not None:
        model.mean, model.std = tuple(reversed(saved[1])), tuple(reversed(saved[2]))
    try:
        yield
    finally:
        model.channel_order = saved[0]
        if saved[1] is not None:
            model.mean, model.std = saved[1], saved[2]


class _Tally:
    """Confusion counts and frames with non-finite logits, for one way of feeding the model."""

    def __init__(self, n: int) -> None:
        self.conf, self.nonfinite = np.zeros((n, n), np.int64), 0

    def add(self, model: Any, sample: Any) -> None:
        logits = model.predict(sample.image, output_size=sample.labels.shape)
        self.nonfinite += int(not bool(torch.isfinite(logits).all()))
        self.conf += confusion(logits.argmax(1)[0].cpu().numpy(), sample.labels, self.conf.shape[0])


def check_model(model: Any, samples: Iterable[Any], class_names: list[str] | tuple[str, ...],
                swap: bool = True) -> CheckResult:
    """Accuracy and mIoU of ``model`` (a SegmentationModel) on labelled ``samples`` (train-id labels).

    ``class_names`` are the data set's classes; the model's must be the same, in the same order.
    ``swap`` also scores the model with the other channel order, mean and std reversed with it
    (one more forward pass a frame).
    """
    if list(model.class_names) != list(class_names):
        raise InputError(f"sml models check compares the model's classes with the data's: the model has "
                         f"{len(model.class_names)} classes ({', '.join(model.class_names[:4])}, ...), the data "
                         f"{len(class_names)} ({', '.join(class_names[:4])}, ...). Check output.classes and "
                         f"output.channels in the model card")
    n = len(class_names)
    stated, swapped = _Tally(n), _Tally(n)
    frames = 0
    for s in samples:
        if s.labels is None:
            continue
        stated.add(model, s)
        if swap:
            with other_order(model):
                swapped.add(model, s)
        frames += 1
    if frames == 0:
        raise InputError("no labelled frame to check the model on; give a data set with labels, e.g. "
                         "--data cityscapes:PATH with gtFine")
    conf = stated.conf
    acc, miou, iou = _scores(conf)
    counts = conf.sum(1)
    chance = np.zeros_like(conf)
    chance[:, int(counts.argmax())] = counts  # always the most frequent class
    chance_acc, chance_miou, _ = _scores(chance)
    swap_acc, swap_miou = _scores(swapped.conf)[:2] if swap else (None, None)
    return CheckResult(frames, int(conf.sum()), acc, miou,
                       {c: float(v) for c, v, p in zip(class_names, iou, counts > 0) if p},
                       chance_acc, chance_miou, model.channel_order, swap_acc, swap_miou,
                       stated.nonfinite, swapped.nonfinite)
