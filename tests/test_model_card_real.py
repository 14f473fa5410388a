"""The shared ERFNet exported to TorchScript, ONNX (fixed and dynamic size) and .pt2, each with a card:
the built-in network's logits and Road Anomaly metrics; a BGR card caught by `sml models check`."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
import yaml

import sml
import sml.models as M
from sml.cli.main import main
from sml.data import open_dataset

pytestmark = pytest.mark.slow
CARD = {"input": {"size": [512, 1024], "channel_order": "RGB", "scale": 1},
        "output": {"classes": "cityscapes", "channels": list(range(19))}, "licence": "CC BY-NC 4.0"}


@pytest.fixture(scope="module")
def exports(erfnet_weights, tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("erfnet_exports")
    builtin = M.load("erfnet", weights=erfnet_weights)
    net = builtin.network.eval()
    small, full = torch.zeros(1, 3, 64, 128), torch.zeros(1, 3, 512, 1024)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.jit.trace(net, small).save(str(d / "erfnet.ts"))
        torch.onnx.export(net, (small,), str(d / "erfnet_dynamic.onnx"), input_names=["x"], dynamo=False,
                          dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"}})
        torch.onnx.export(net, (full,), str(d / "erfnet_fixed.onnx"), input_names=["x"], dynamo=False)
    torch.export.save(torch.export.export(net, (full,)), str(d / "erfnet.pt2"))
    cards = {}
    for file, fmt in (("erfnet.ts", "torchscript"), ("erfnet_dynamic.onnx", "onnx"), ("erfnet_fixed.onnx", "onnx"),
                      ("erfnet.pt2", "export")):
        cards[file] = d / f"{file}.yaml"
        cards[file].write_text(yaml.safe_dump({"name": Path(file).stem, "format": fmt, "file": file, **CARD}))
    return {"dir": d, "builtin": builtin, "cards": cards}


def _run(model, samples) -> tuple[list[torch.Tensor], dict]:
    """Logits of each frame and the pooled metrics of two scores, from one forward pass a frame."""
    logits = [model.predict(s.image, output_size=s.labels.shape) for s in samples]
    out = {}
    for method, fn in (("max_logit", sml.scores.max_logit), ("msp", sml.scores.msp)):
        acc = sml.AnomalyMetrics()
        for s, lg in zip(samples, logits):
            acc.update(fn(lg)[0].numpy(), s.labels)
        out[method] = acc.compute()
    return logits, out


def test_exports_with_cards_give_the_builtin_logits_and_metrics(exports, shared):
    ds = open_dataset(f"road-anomaly:{shared / 'data/road_anomaly/RoadAnomaly_jpg'}", allow_subset=True)
    samples = [ds[i] for i in range(2)]
    ref, ref_metrics = _run(exports["builtin"], samples)
    for file, card in exports["cards"].items():
        model = M.load(str(card))
        assert model.num_classes == 19 and model.input_size == (512, 1024), file
        logits, got = _run(model, samples)
        for lg, r in zip(logits, ref):
            diff = (lg - r).abs().max().item()
            assert diff < 1e-4, (file, diff)
        for method, values in ref_metrics.items():
            for key in ("auroc", "ap", "fpr95"):
                assert got[method][key] == pytest.approx(values[key], abs=1e-6), (file, method, key)


def test_bgr_card_is_flagged_by_models_check(exports, shared, capsys):
    card = exports["cards"]["erfnet_dynamic.onnx"]
    bgr = yaml.safe_load(card.read_text())
    bgr["input"]["channel_order"] = "BGR"
    (exports["dir"] / "bgr.yaml").write_text(yaml.safe_dump(bgr))
    data = f"cityscapes:{shared / 'data/cityscapes_mini'}"
    assert main(["models", "check", "--model", str(card), "--data", data, "--max-frames", "3", "--json"]) == 0
    good = json.loads(capsys.readouterr().out)
    assert good["pixel_accuracy"] > 0.9 and good["miou"] > 0.5 and good["warnings"] == []
    assert main(["models", "check", "--model", str(exports["dir"] / "bgr.yaml"), "--data", data,
                 "--max-frames", "3"]) == 1
    captured = capsys.readouterr()
    err = " ".join(captured.err.split())
    assert "pixel accuracy" in captured.out and "mIoU" in captured.out
    assert "sml: warning:" in err and "input.channel_order is probably wrong" in err


class ImageNetInput(torch.nn.Module):
    """ERFNet behind ImageNet normalisation: takes (x - mean) / std of RGB in [0, 1], as many networks do."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(M.IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(M.IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * self.std + self.mean)


def test_card_that_says_bgr_consistently_is_flagged_by_models_check(exports, shared, capsys):
    """A card with channel_order BGR and mean/std in BGR order, for a network that takes RGB: the probe
    must reverse mean and std with the channels (it is then exactly the right card), or a misnormalised
    probe segments no better than the wrong card and the check passes (it did: exit 0)."""
    d = exports["dir"]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.jit.trace(ImageNetInput(exports["builtin"].network).eval(), torch.zeros(1, 3, 64, 128)).save(
            str(d / "erfnet_imagenet.ts"))
    rgb = {"name": "erfnet-imagenet", "format": "torchscript", "file": "erfnet_imagenet.ts", **CARD}
    rgb["input"] = {**CARD["input"], "mean": list(M.IMAGENET_MEAN), "std": list(M.IMAGENET_STD)}
    bgr = {**rgb, "input": {**rgb["input"], "channel_order": "BGR", "mean": list(M.IMAGENET_MEAN)[::-1],
                            "std": list(M.IMAGENET_STD)[::-1]}}
    data = f"cityscapes:{shared / 'data/cityscapes_mini'}"
    results = {}
    for name, card in (("rgb", rgb), ("bgr", bgr)):
        (d / f"{name}.yaml").write_text(yaml.safe_dump(card))
        code = main(["models", "check", "--model", str(d / f"{name}.yaml"), "--data", data, "--max-frames", "3",
                     "--json"])
        results[name] = (code, json.loads(capsys.readouterr().out))
    (ok, good), (flagged, bad) = results["rgb"], results["bgr"]
    assert ok == 0 and good["warnings"] == [] and good["pixel_accuracy"] > 0.95
    # the probe of the BGR card is the RGB card itself: the same numbers
    assert bad["swapped_miou"] == pytest.approx(good["miou"], abs=1e-9)
    assert bad["swapped_accuracy"] == pytest.approx(good["pixel_accuracy"], abs=1e-9)
    assert flagged == 1 and bad["swap_better"] and bad["miou"] < good["miou"] - 0.1
    assert any("input.channel_order is probably wrong" in w for w in bad["warnings"])
