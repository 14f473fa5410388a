"""Tiny synthetic data sets and a tiny TorchScript network for the pipeline / CLI tests.

Imported by the other ``test_pipeline*`` / ``test_cli_*`` / ``test_distributed*`` files;
the one test here checks that the fixtures themselves load through ``sml.data``/``sml.models``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn


class TinyNet(nn.Module):
    """A fixed random 2-layer conv net with 19 class outputs (spatially varied predictions)."""

    def __init__(self, seed: int = 0, classes: int = 19):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, classes, 3, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(torch.tanh(self.c1(x))) * 3.0


def make_model(folder: Path, seed: int = 0) -> Path:
    """Save :class:`TinyNet` as TorchScript with a model card (``sml --model CARD`` loads it); return the card."""
    path = folder / f"tiny{seed}.pt"
    card = folder / f"tiny{seed}.yaml"
    if not path.exists():
        torch.jit.script(TinyNet(seed).eval()).save(str(path))
    if not card.exists():
        card.write_text(f"name: tiny{seed}\nformat: torchscript\nfile: {path.name}\ninput:\n  size: null\n"
                        f"  channel_order: RGB\n  scale: 1\noutput:\n  classes: cityscapes\n")
    return card


def _image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    # smooth blobs, so that the network's prediction has regions and boundaries
    base = rng.integers(0, 256, size=(h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(base).resize((w, h), Image.BILINEAR))
    return img


def make_smiyc(root: Path, n: int = 4, size: tuple[int, int] = (48, 64), seed: int = 0,
               unlabelled: int = 0) -> Path:
    """A SegmentMeIfYouCan-layout folder: images/<id>.png, labels_masks/<id>_labels_semantic.png."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels_masks").mkdir(parents=True, exist_ok=True)
    h, w = size
    for i in range(n + unlabelled):
        Image.fromarray(_image(rng, h, w)).save(root / "images" / f"frame{i:02d}.png")
        if i >= n:
            continue
        lab = np.zeros((h, w), np.uint8)
        y, x = rng.integers(4, h - 16), rng.integers(4, w - 20)
        lab[y:y + 10 + i % 3, x:x + 12] = 1
        lab[:, :3] = 255
        if i == 1:
            lab[-6:-2, -8:-2] = 1  # a second, small component
        Image.fromarray(lab).save(root / "labels_masks" / f"frame{i:02d}_labels_semantic.png")
    return root


def make_cityscapes(root: Path, n: int = 5, size: tuple[int, int] = (32, 64), seed: int = 1) -> Path:
    """A Cityscapes-layout train split without labels (statistics need none)."""
    rng = np.random.default_rng(seed)
    folder = root / "leftImg8bit" / "train" / "testcity"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(_image(rng, *size)).save(folder / f"testcity_{i:06d}_000019_leftImg8bit.png")
    return root


def interrupt_forward_after(monkeypatch: pytest.MonkeyPatch, frames: int) -> None:
    """Make the pipelines' forward pass raise KeyboardInterrupt (Ctrl-C) after ``frames`` frames."""
    from sml.pipelines import common

    real, calls = common.forward, {"n": 0}

    def dies(*a, **k):
        calls["n"] += 1
        if calls["n"] > frames:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(common, "forward", dies)


def make_eval_setup(base: Path, cs_frames: int = 4, **smiyc: object) -> dict[str, Path]:
    """What an `sml eval` test runs on: a tiny network (``model``), Cityscapes frames (``cs``) and the network's
    statistics on them (``stats``, made by `sml stats`), a SMIYC set (``smiyc``, ``make_smiyc``'s keywords)."""
    from sml.cli.main import main

    s = {"base": base, "model": make_model(base), "cs": make_cityscapes(base / "cs", n=cs_frames),
         "smiyc": make_smiyc(base / "smiyc", **smiyc)}
    assert main(["stats", "--model", str(s["model"]), "--data", f"cityscapes:{s['cs']}",
                 "-o", str(base / "stats.json")]) == 0
    s["stats"] = base / "stats.json"
    return s


@pytest.fixture
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Paths of a tiny model, a tiny cityscapes train split and a tiny SMIYC set."""
    base = tmp_path_factory.mktemp("tiny")
    return {"model": make_model(base), "cityscapes": make_cityscapes(base / "cs"),
            "smiyc": make_smiyc(base / "smiyc")}


def test_fixtures_load(tmp_path: Path) -> None:
    import sml.data
    import sml.models

    m = sml.models.load(str(make_model(tmp_path)))
    ds = sml.data.open_dataset(f"smiyc-anomaly:{make_smiyc(tmp_path / 's')}")
    s = ds[0]
    logits = m.predict(s.image, output_size=s.labels.shape)
    assert logits.shape == (1, 19, 48, 64)
    pred = logits.argmax(1)
    assert len(torch.unique(pred)) >= 3  # varied predictions: boundaries exist
    cs = sml.data.open_dataset(f"cityscapes:{make_cityscapes(tmp_path / 'c')}", split="train", labels_required=False)
    assert len(cs) == 5
