"""`sml models check` numbers: confusion, accuracy and mIoU against scikit-learn; chance and swap flags."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix, jaccard_score

from sml.errors import InputError
from sml.models.check import check_model, confusion

NAMES = ["road", "car", "sky"]


class Fake:
    """Predicts fixed label maps; with channels swapped, predicts ``swapped`` instead."""

    def __init__(self, preds, swapped=None, names=NAMES):
        self.preds, self.swapped, self.class_names, self.channel_order = preds, swapped, names, "RGB"
        self.calls = 0

    def predict(self, image, output_size):
        maps = self.preds if self.channel_order == "RGB" or self.swapped is None else self.swapped
        pred = maps[int(image[0, 0, 0])]
        return torch.nn.functional.one_hot(torch.from_numpy(pred).long(), 3).permute(2, 0, 1)[None].float()


def samples(labels):
    return [SimpleNamespace(image=np.full((2, 2, 3), i, np.uint8), labels=lab) for i, lab in enumerate(labels)]


def test_numbers_equal_scikit_learn():
    rng = np.random.default_rng(0)
    labels = [rng.integers(0, 3, (20, 30)).astype(np.uint8) for _ in range(2)]
    labels[0][:3] = 255
    preds = [np.where(rng.random(l.shape) < 0.7, l % 3, rng.integers(0, 3, l.shape)).astype(np.uint8) for l in labels]
    r = check_model(Fake(preds), samples(labels), NAMES, swap=False)
    y = np.concatenate([l.ravel() for l in labels])
    p = np.concatenate([q.ravel() for q in preds])
    keep = y != 255
    np.testing.assert_array_equal(sum(confusion(q, l, 3) for q, l in zip(preds, labels)),
                                  confusion_matrix(y[keep], p[keep], labels=[0, 1, 2]))
    assert r.pixel_accuracy == pytest.approx(float((y[keep] == p[keep]).mean()), abs=1e-12)
    assert r.miou == pytest.approx(jaccard_score(y[keep], p[keep], average="macro"), abs=1e-12)
    assert r.frames == 2 and r.pixels == keep.sum() and not r.near_chance and r.warnings() == []


def test_constant_prediction_is_near_chance_and_a_better_swap_is_flagged():
    labels = [np.array([[0, 0, 1, 2]] * 4, np.uint8)]
    const = [np.zeros((4, 4), np.uint8)]
    r = check_model(Fake(const, swapped=labels), samples(labels), NAMES)
    assert r.near_chance and r.pixel_accuracy == r.chance_accuracy == 0.5 and r.swap_better
    text = " ".join(r.warnings())
    assert "near chance" in text and "BGR order" in text and "channel_order is probably wrong" in text
    good = check_model(Fake(labels, swapped=const), samples(labels), NAMES)
    assert good.miou == 1.0 and not good.near_chance and not good.swap_better


def test_class_mismatch_and_no_labels_are_refused():
    with pytest.raises(InputError, match="output.classes"):
        check_model(Fake([], names=["a", "b"]), [], NAMES)
    with pytest.raises(InputError, match="no labelled frame"):
        check_model(Fake([]), [SimpleNamespace(image=None, labels=None)], NAMES)


class Normalised:
    """Segments perfectly only when fed RGB with its own mean/std (recorded per call), else predicts class 0."""

    def __init__(self, order, mean, std, names=NAMES):
        self.class_names, self.channel_order, self.mean, self.std = names, order, mean, std
        self.labels = None
        self.seen = []

    def predict(self, image, output_size):
        self.seen.append((self.channel_order, self.mean, self.std))
        right = self.channel_order == "RGB" and self.mean == (0.485, 0.456, 0.406) and self.std == (0.229, 0.224, 0.225)
        pred = self.labels[int(image[0, 0, 0])] if right else np.zeros(output_size, np.uint8)
        return torch.nn.functional.one_hot(torch.from_numpy(pred).long(), 3).permute(2, 0, 1)[None].float()


def test_other_order_probe_reverses_mean_and_std_with_the_channels():
    labels = [np.array([[0, 0, 1, 2]] * 4, np.uint8)]
    # a card that says BGR consistently (mean and std in BGR order) for a network that takes RGB
    model = Normalised("BGR", (0.406, 0.456, 0.485), (0.225, 0.224, 0.229))
    model.labels = labels
    r = check_model(model, samples(labels), NAMES)
    assert model.seen == [("BGR", (0.406, 0.456, 0.485), (0.225, 0.224, 0.229)),
                          ("RGB", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
    assert (model.channel_order, model.mean, model.std) == ("BGR", (0.406, 0.456, 0.485), (0.225, 0.224, 0.229))
    assert r.swapped_miou == 1.0 and r.swap_better
    assert "mean and std reversed with them" in " ".join(r.warnings())


def test_nan_logits_are_named_not_blamed_on_channel_order():
    labels = [np.array([[0, 0, 1, 2]] * 4, np.uint8)]

    class NaNs(Fake):
        def predict(self, image, output_size):
            out = super().predict(image, output_size)
            return out * float("nan") if self.channel_order == "RGB" else out

    r = check_model(NaNs([np.zeros((4, 4), np.uint8)], swapped=labels), samples(labels), NAMES)
    assert r.nonfinite_frames == 1 and r.swapped_nonfinite_frames == 0 and not r.swap_better
    (warning,) = r.warnings()
    assert "NaN or infinite logits on 1 of 1 frames" in warning and "channel_order" not in warning
    # NaN in the probe's logits (one pixel) voids the comparison too, however well the rest segments
    class ProbeNaN(Fake):
        def predict(self, image, output_size):
            out = super().predict(image, output_size)
            if self.channel_order == "BGR":
                out[0, :, 0, 0] = float("nan")
            return out

    r = check_model(ProbeNaN([np.zeros((4, 4), np.uint8)], swapped=labels), samples(labels), NAMES)
    assert r.swapped_nonfinite_frames == 1 and r.swapped_miou > r.miou + 0.03 and not r.swap_better
    assert r.as_dict()["miou_definition"].startswith("mIoU is the mean, over the classes present in the labels")
