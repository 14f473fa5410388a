"""ERFNet with the real Cityscapes weights on real labelled Cityscapes frames (models.md figures)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sml.models as M
from sml.models.erfnet import ERFNet


def train_id_lut() -> np.ndarray:
    from cityscapesscripts.helpers.labels import id2label

    lut = np.full(256, 255, np.uint8)
    for i, label in id2label.items():
        if 0 <= i < 256:
            lut[i] = 255 if label.trainId in (255, -1) else label.trainId
    return lut


def labelled_frames(shared: Path) -> list[tuple[Path, Path]]:
    root = shared / "data" / "cityscapes_mini"
    gts = sorted(root.glob("gtFine/train/aachen/*_gtFine_labelIds.png")) + sorted(root.glob("gtFine/val/*/*_gtFine_labelIds.png"))
    pairs = []
    for gt in gts:
        rel = gt.relative_to(root / "gtFine")
        image = root / "leftImg8bit" / rel.parent / rel.name.replace("_gtFine_labelIds", "_leftImg8bit")
        pairs.append((image, gt))
    return pairs


def confusion(model: M.SegmentationModel, pairs) -> np.ndarray:
    lut = train_id_lut()
    conf = np.zeros((19, 19), np.int64)
    for image, gt in pairs:
        rgb = np.asarray(Image.open(image).convert("RGB"))
        labels = lut[np.asarray(Image.open(gt))]
        logits = model.predict(rgb, output_size=labels.shape)
        assert logits.shape == (1, 19, *labels.shape)
        pred = logits.argmax(1)[0].numpy()
        valid = labels != 255
        conf += np.bincount(labels[valid].astype(np.int64) * 19 + pred[valid], minlength=361).reshape(19, 19)
    return conf


def scores(conf: np.ndarray) -> tuple[float, float]:
    acc = np.trace(conf) / conf.sum()
    present = conf.sum(1) > 0
    inter = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - inter
    return float(acc), float(np.mean(inter[present] / union[present]))


def test_weights_load_strict(erfnet_weights):
    net = ERFNet(num_classes=20)
    net.load_state_dict(torch.load(erfnet_weights, map_location="cpu", weights_only=True), strict=True)
    assert [m.eps for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)] == [1e-3] * 39


def test_contract_of_the_loaded_model(erfnet_weights):
    model = M.load("erfnet", weights=erfnet_weights)
    assert model.input_size == (512, 1024) and model.mean is None and model.std is None
    assert model.class_channels == list(range(19)) and model.class_names == list(M.CITYSCAPES_CLASSES)
    assert model.network.decoder.output_conv.out_channels == 20 and not model.network.training


def test_two_frames_segment_well(shared, erfnet_weights):
    model = M.load("erfnet", weights=erfnet_weights)
    acc, miou = scores(confusion(model, labelled_frames(shared)[:2]))
    assert acc >= 0.95 and miou >= 0.6, (acc, miou)


@pytest.mark.slow
def test_nine_labelled_frames_reach_the_published_figures(shared, erfnet_weights):
    pairs = labelled_frames(shared)
    assert len(pairs) == 9
    acc, miou = scores(confusion(M.load("erfnet", weights=erfnet_weights), pairs))
    assert acc >= 0.96 and miou >= 0.70, (acc, miou)


def test_cpu_default_is_channels_last_close_to_the_standard_layout_and_thread_independent(shared, erfnet_weights):
    """The loaded ERFNet runs channels-last on the CPU: same argmax almost everywhere, logits within 1e-5."""
    model = M.load("erfnet", weights=erfnet_weights)
    assert model.cpu_channels_last
    image, _ = labelled_frames(shared)[0]
    rgb = np.asarray(Image.open(image).convert("RGB"))[::2, ::2]  # 512 x 1024: the network's own size
    fast = model.predict(rgb)
    assert fast.is_contiguous() and torch.equal(fast, model.predict(rgb, channels_last=True))
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = model.predict(rgb)
    finally:
        torch.set_num_threads(prev)
    assert torch.equal(one, fast)  # bit for bit whatever the thread count (torchrun shards rely on it)
    std = model.predict(rgb, channels_last=False)
    torch.testing.assert_close(fast, std, rtol=1e-5, atol=1e-4)
    assert (fast.argmax(1) == std.argmax(1)).float().mean().item() > 0.9999
