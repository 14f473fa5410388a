"""Hugging Face transformers models through a model card (format: transformers): tiny random-weight
SegFormer and Mask2Former saved to a temporary folder, never the network."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

import sml.models as M
from sml.cli.main import main
from sml.errors import InputError

tf = pytest.importorskip("transformers")
MEAN, STD = (0.4, 0.45, 0.5), (0.2, 0.25, 0.3)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    with pytest.MonkeyPatch.context() as mp:  # module scope runs before the autouse fixture
        mp.setenv("HF_HUB_OFFLINE", "1")
        return _build(tmp_path_factory.mktemp("hf"))


def _build(d: Path) -> dict[str, Path]:
    labels = {i: n for i, n in enumerate(M.CITYSCAPES_CLASSES)}
    torch.manual_seed(0)
    seg = tf.SegformerForSemanticSegmentation(tf.SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16], num_attention_heads=[1, 1],
        decoder_hidden_size=16, num_labels=19, id2label=labels, label2id={n: i for i, n in labels.items()}))
    seg.save_pretrained(d / "segformer")
    tf.SegformerImageProcessor(size={"height": 64, "width": 128}, image_mean=list(MEAN),
                               image_std=list(STD)).save_pretrained(d / "segformer")
    swin = tf.SwinConfig(image_size=64, patch_size=4, embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                         window_size=2, out_features=["stage1", "stage2", "stage3", "stage4"])
    m2f = tf.Mask2FormerForUniversalSegmentation(tf.Mask2FormerConfig(
        backbone_config=swin, num_queries=8, hidden_dim=32, encoder_feedforward_dim=32, dim_feedforward=32,
        encoder_layers=1, decoder_layers=2, num_attention_heads=2, feature_size=32, mask_feature_size=32,
        num_labels=19, id2label=labels, label2id={n: i for i, n in labels.items()}, use_pretrained_backbone=False))
    m2f.save_pretrained(d / "mask2former")
    tf.Mask2FormerImageProcessor(size={"height": 64, "width": 128}).save_pretrained(d / "mask2former")
    for name in ("segformer", "mask2former"):
        (d / f"{name}.yaml").write_text(f"name: tiny-{name}\nformat: transformers\nsource: {name}\n")
    return {"dir": d, "segformer": d / "segformer.yaml", "mask2former": d / "mask2former.yaml"}


def image(h: int = 48, w: int = 80, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def pixel_values(img: np.ndarray, size: tuple[int, int], mean, std) -> torch.Tensor:
    x = torch.from_numpy(img).permute(2, 0, 1)[None].double() / 255
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return ((x - torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1))
            / torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)).float()


def test_segformer_fields_come_from_its_processor_and_config(models):
    model = M.load(str(models["segformer"]))
    assert model.kind == "logits" and model.input_size == (64, 128) and model.scale == 1
    assert model.mean == pytest.approx(MEAN) and model.std == pytest.approx(STD)
    assert tuple(model.class_names) == M.CITYSCAPES_CLASSES and model.channel_order == "RGB"
    img = image()
    hf = tf.SegformerForSemanticSegmentation.from_pretrained(models["dir"] / "segformer").eval()
    with torch.no_grad():
        ref = hf(pixel_values=pixel_values(img, (64, 128), MEAN, STD)).logits
    ref = F.interpolate(ref, size=img.shape[:2], mode="bilinear", align_corners=False)
    torch.testing.assert_close(model.predict(img), ref, rtol=1e-4, atol=1e-4)


def test_mask2former_scores_are_the_semantic_inference(models):
    model = M.load(str(models["mask2former"]))
    assert model.kind == "mask-classification" and model.input_size == (64, 128) and model.num_classes == 19
    img = image(seed=1)
    hf = tf.Mask2FormerForUniversalSegmentation.from_pretrained(models["dir"] / "mask2former").eval()
    with torch.no_grad():
        out = hf(pixel_values=pixel_values(img, (64, 128), M.IMAGENET_MEAN, M.IMAGENET_STD))
    # literal: for each class, sum over queries of P(class | query) * sigmoid(mask of query), null class dropped
    probs = out.class_queries_logits[0].double().softmax(-1)
    masks = out.masks_queries_logits[0].double().sigmoid()
    ref = torch.zeros(19, *masks.shape[1:], dtype=torch.float64)
    for q in range(probs.shape[0]):
        for c in range(19):
            ref[c] += probs[q, c] * masks[q]
    ref = F.interpolate(ref[None].float(), size=img.shape[:2], mode="bilinear", align_corners=False)
    got = model.predict(img)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    assert float(got.min()) >= 0  # scores, not logits


def test_card_overrides_and_refusals(models, tmp_path):
    d = models["dir"]
    card = {"name": "s", "format": "transformers", "source": str(d / "segformer"),
            "input": {"size": [32, 64], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
            "output": {"classes": [f"k{i}" for i in range(19)]}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(card))
    model = M.load(str(tmp_path / "c.yaml"))
    assert model.input_size == (32, 64) and model.mean == (0.5, 0.5, 0.5) and model.class_names[0] == "k0"
    card["input"] = {"mean": [0.5, 0.5, 0.5]}  # each field overrides alone: std still from the processor
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(card))
    model = M.load(str(tmp_path / "c.yaml"))
    assert model.mean == (0.5, 0.5, 0.5) and model.std == pytest.approx(STD) and model.input_size == (64, 128)
    card["output"]["kind"] = "mask-classification"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(InputError, match="output.kind says mask-classification but .* is a segformer model"):
        M.load(str(tmp_path / "c.yaml"))
    card = {"name": "s", "format": "transformers", "source": str(tmp_path / "nothing-here")}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(InputError, match="neither a folder with a transformers model nor a hub id"):
        M.load(str(tmp_path / "c.yaml"))
    card = {"name": "s", "format": "transformers", "source": str(d / "segformer"), "sha256": "0" * 64}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(InputError, match="sha256 does not apply to format transformers"):
        M.load(str(tmp_path / "c.yaml"))


def test_card_scale_must_fit_the_processors_mean_and_std(models, tmp_path):
    card = {"name": "s", "format": "transformers", "source": str(models["dir"] / "segformer"),
            "input": {"scale": 255}}  # the processor's mean/std are in [0, 1] units
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(card))
    with pytest.raises(InputError, match=rf"model card {path}: field input.mean is \[0.4, 0.45, 0.5\] but scale is "
                                         r"255 .*Set scale: 1, or multiply both by 255"):
        M.load(str(path))
    card["input"] = {"scale": 255, "mean": [102.0, 114.75, 127.5], "std": [51.0, 63.75, 76.5]}
    path.write_text(yaml.safe_dump(card))
    assert M.load(str(path)).scale == 255


@pytest.mark.slow
@pytest.mark.parametrize("name", ["segformer", "mask2former"])
def test_stats_and_eval_cli_on_two_shared_frames(models, name, shared, tmp_path):
    card = str(models[name])
    cs = shared / "data" / "cityscapes_mini"
    ra = shared / "data" / "road_anomaly" / "RoadAnomaly_jpg"
    assert main(["stats", "--model", card, "--data", f"cityscapes:{cs}", "--limit", "2",
                 "-o", str(tmp_path / "stats.json")]) == 0
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["num_classes"] == 19 and sum(c or 0 for c in stats["count"]) == 2 * 2048 * 1024
    assert main(["eval", "--model", card, "--stats", str(tmp_path / "stats.json"), "--data", f"road-anomaly:{ra}",
                 "--limit", "2", "--method", "sml,max_logit", "--out", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["model"] == card and metrics["frames_scored"] == 2
    assert {"sml", "max_logit"} <= set(metrics["methods"])
