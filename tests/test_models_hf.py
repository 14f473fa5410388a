"""Hugging Face transformers models through a model card (format: transformers) or --model hf:FOLDER: tiny
random-weight SegFormer, Mask2Former and MaskFormer saved to a temporary folder, never the network."""
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
from test_mask_classification_runs import folder_data, literal_mask_scores

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
    swin16 = tf.SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                           window_size=2, out_features=["stage1", "stage2", "stage3", "stage4"])
    detr = dict(model_type="detr", d_model=32, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=16,
                decoder_ffn_dim=16, encoder_attention_heads=1, decoder_attention_heads=1, num_queries=6)
    mf = tf.MaskFormerForInstanceSegmentation(tf.MaskFormerConfig(
        backbone_config=swin16, fpn_feature_size=32, mask_feature_size=32, num_queries=6, decoder_config=detr,
        num_labels=19, id2label=labels, label2id={n: i for i, n in labels.items()}, use_pretrained_backbone=False))
    mf.save_pretrained(d / "maskformer")
    tf.MaskFormerImageProcessor(size={"height": 64, "width": 128}).save_pretrained(d / "maskformer")
    for name in ("segformer", "mask2former", "maskformer"):
        (d / f"{name}.yaml").write_text(f"name: tiny-{name}\nformat: transformers\nsource: {name}\n")
    return {"dir": d, **{name: d / f"{name}.yaml" for name in ("segformer", "mask2former", "maskformer")}}


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


def _capture(model) -> list:  # noqa: ANN001 - the raw (class logits, mask logits) of every forward pass
    seen: list = []
    model.network.register_forward_hook(lambda mod, inp, out: seen.append((out[0].clone(), out[1].clone())))
    return seen


@pytest.mark.parametrize("name", ["mask2former", "maskformer"])
def test_mask_classification_scores_follow_section_8(models, name):
    model = M.load(str(models[name]))
    assert model.kind == "mask-classification" and model.input_size == (64, 128) and model.num_classes == 19
    seen = _capture(model)
    img = image(seed=1)
    got = model.predict(img)   # S, the class scores, in place of logits
    ref = literal_mask_scores(*seen[-1], (64, 128), img.shape[:2])["S"]
    torch.testing.assert_close(got[0].double(), ref, rtol=1e-6, atol=1e-6)
    # the raw outputs are the transformers model's own, of the same preprocessed input
    hf = tf.AutoModelForUniversalSegmentation.from_pretrained(models["dir"] / name).eval()
    with torch.no_grad():
        out = hf(pixel_values=pixel_values(img, (64, 128), M.IMAGENET_MEAN, M.IMAGENET_STD))
    torch.testing.assert_close(seen[-1][0], out.class_queries_logits, rtol=1e-4, atol=1e-4)
    # not transformers' own convention (the sigmoid at the masks' resolution, before any upsampling)
    p = out.class_queries_logits.softmax(-1)[..., :-1]
    theirs = torch.einsum("bqc,bqhw->bchw", p, out.masks_queries_logits.sigmoid())
    theirs = F.interpolate(theirs, size=img.shape[:2], mode="bilinear", align_corners=False)
    assert float((theirs - got).abs().max()) > 1e-3
    whole = model.predict_output(img)
    assert whole.input_size == (64, 128) and whole.output_size == img.shape[:2]
    assert tuple(whole.mask_logits.shape[-2:]) == (16, 32)   # never upsampled for all queries at once


def test_eval_scores_equal_the_literal_reference(models, tmp_path):
    import sml.data
    from sml.pipelines.evaluate import EvalConfig, evaluate

    model = M.load(str(models["mask2former"]))
    seen = _capture(model)
    data = folder_data(tmp_path / "data", n=2)
    ds = sml.data.open_dataset(f"folder:{data}")
    run = evaluate(model, ds, tmp_path / "run", EvalConfig(methods=["max_logit", "rba", "eam"], save_maps=["npy"]),
                   show_progress=False)
    assert len(seen) == len(ds) == run.metrics["frames_scored"]   # one forward pass per frame for every method
    for frame, raw in zip(ds.frames, seen):
        ref = literal_mask_scores(*raw, (64, 128), ds.load(frame).labels.shape)
        for m in ("max_logit", "rba", "eam"):
            got = np.load(tmp_path / "run" / "npy" / m / f"{frame.id}.npy")
            np.testing.assert_allclose(got, ref[m].numpy(), rtol=1e-6, atol=1e-6, err_msg=m)


def test_stats_eval_and_compare_cli(models, tmp_path, capsys):
    data = folder_data(tmp_path / "data", n=2)
    for name in ("mask2former", "maskformer"):
        card, stats = str(models[name]), str(tmp_path / f"{name}.json")
        assert main(["stats", "--model", card, "--data", f"folder:{data}", "-o", stats]) == 0
        base = ["eval", "--model", card, "--stats", stats, "--data", f"folder:{data}"]
        assert main([*base, "--method", "sml,rba,eam,gen,max_logit", "--out", str(tmp_path / name)]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert "gen: not applicable to this network, whose output kind is mask-classification; gen needs " \
               "per-pixel class logits" in err
        assert not (tmp_path / name).exists()
        assert main([*base, "--method", "sml,rba,eam,max_logit", "--out", str(tmp_path / name), "--report"]) == 0
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        assert list(metrics["methods"]) == ["sml", "rba", "eam", "max_logit"]
        report = (tmp_path / name / "report" / "index.html").read_text()
        assert all(report.count(f">{m}<") >= 2 for m in ("rba", "eam"))   # the table and the gallery
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "mask2former"), str(tmp_path / "maskformer"),
                 "--out", str(tmp_path / "cmp")]) == 0
    table = (tmp_path / "cmp" / "compare.md").read_text()
    for name in ("mask2former", "maskformer"):   # rows: network (the card's name) x method
        assert [row.split("|")[2].strip() for row in table.splitlines() if row.startswith(f"| {name} |")] == \
            ["sml", "max_logit", "rba", "eam"]


def test_hf_shorthand_is_a_card_with_only_its_source(models, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(models["dir"])
    model = M.load("hf:mask2former")
    assert model.name == "mask2former" and model.kind == "mask-classification" and model.input_size == (64, 128)
    card = model.identity["card"]
    assert card == {"name": "mask2former", "format": "transformers", "source": str(models["dir"] / "mask2former"),
                    "input": {"size": [64, 128], "channel_order": "RGB", "scale": 1, "resize": "bilinear-antialias",
                              "mean": list(M.IMAGENET_MEAN), "std": list(M.IMAGENET_STD)},
                    "output": {"kind": "mask-classification", "classes": "cityscapes", "upsample": "bilinear"}}
    # the card it stands for, written out, is the same network with the same scores
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(card))
    img = image(seed=2)
    torch.testing.assert_close(M.load(str(tmp_path / "card.yaml")).predict(img), model.predict(img), rtol=0, atol=0)
    data = folder_data(tmp_path / "data", n=2)
    assert main(["stats", "--model", "hf:mask2former", "--data", f"folder:{data}", "-o", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["model"]["card"] == card
    assert main(["eval", "--model", "hf:mask2former", "--stats", str(tmp_path / "s.json"), "--data", f"folder:{data}",
                 "--method", "sml,eam", "--out", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["model"] == "hf:mask2former" and metrics["network"]["card"] == card
    assert metrics["stats_pairing"]["verdict"] == "same-network"
    # statistics of the same network from an sml that formed S as transformers does (no card recorded)
    old = json.loads((tmp_path / "s.json").read_text())
    del old["model"]["card"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert main(["eval", "--model", "hf:mask2former", "--stats", str(tmp_path / "old.json"), "--data",
                 f"folder:{data}", "--method", "sml", "--out", str(tmp_path / "run2")]) == 2
    assert "by an earlier sml, which formed a mask-classification network's class scores as transformers' " \
           "post-processing does" in " ".join(capsys.readouterr().err.split())
    with pytest.raises(InputError, match=r"give a transformers hub id or a folder after 'hf:'"):
        M.load("hf:")
    with pytest.raises(InputError, match=r"--model hf:mask2former is a transformers model with its own weights"):
        M.load("hf:mask2former", weights="w.pth")


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
