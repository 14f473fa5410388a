"""Inference settings: --precision (autocast, float32 logits), --tf32, --compile, channels-last on CUDA."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sml.errors import InputError
from sml.utils.precision import (
    CompiledNetwork,
    InferenceSettings,
    add_inference_args,
    autocast,
    check_precision,
    float32_logits,
    tf32,
)


def _parse(*argv: str) -> InferenceSettings:
    p = argparse.ArgumentParser()
    add_inference_args(p)
    return InferenceSettings.from_args(p.parse_args(list(argv)))


def test_args_parse_to_settings() -> None:
    assert _parse() == InferenceSettings("fp32", compile=False, tf32=False)
    assert _parse("--precision", "bf16", "--tf32", "--compile") == InferenceSettings("bf16", compile=True, tf32=True)
    assert _parse("--precision", "bf16").describe() == "precision bf16, tf32 off, compile off"
    with pytest.raises(SystemExit):
        _parse("--precision", "int8")
    # a namespace without the options (a command that does not offer them) gets the defaults
    assert InferenceSettings.from_args(argparse.Namespace()) == InferenceSettings()
    with pytest.raises(InputError, match="--precision 'fp8'"):
        InferenceSettings.from_args(argparse.Namespace(precision="fp8"))


def test_fp16_refused_on_cpu_bf16_allowed() -> None:
    with pytest.raises(InputError, match="fp16 runs on CUDA only.*use --precision bf16"):
        check_precision("fp16", "cpu")
    with pytest.raises(InputError, match="fp16 runs on CUDA only"):
        InferenceSettings("fp16").check("cpu")
    check_precision("bf16", "cpu")
    check_precision("fp32", "cpu")


def test_autocast_runs_the_network_in_bf16_and_hands_back_float32() -> None:
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(1, 3, 8, 8)
    with autocast("bf16", "cpu"):
        assert conv(x).dtype == torch.bfloat16
    with autocast("fp32", "cpu"):
        assert conv(x).dtype == torch.float32
    out = InferenceSettings("bf16").forward(conv, x)
    assert out.dtype == torch.float32 and out.shape == (1, 4, 8, 8)
    assert not torch.equal(out, conv(x)) and torch.allclose(out, conv(x), atol=0.05, rtol=0.02)
    # (main, aux) tuples and dicts: the main logits
    assert InferenceSettings().forward(lambda t: (conv(t), None), x).shape == (1, 4, 8, 8)   # type: ignore[arg-type]
    assert float32_logits(torch.zeros(2, dtype=torch.bfloat16)).dtype == torch.float32


def test_tf32_is_scoped() -> None:
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with tf32(True):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        with InferenceSettings(tf32=False).session():
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_channels_last_on_cuda_model_default_on_cpu() -> None:
    assert InferenceSettings.channels_last("cuda:0") and InferenceSettings.channels_last("cuda", cpu_default=False)
    assert not InferenceSettings.channels_last("cpu") and InferenceSettings.channels_last("cpu", cpu_default=True)


def test_compile_wraps_and_names_the_option_on_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    x = torch.randn(1, 3, 8, 8)
    wrapped = InferenceSettings(compile=True, compile_backend="eager").prepare(net)
    assert isinstance(wrapped, CompiledNetwork) and InferenceSettings().prepare(net) is net
    torch.testing.assert_close(wrapped(x), net(x))
    assert list(wrapped.state_dict()) == ["network." + k for k in net.state_dict()]   # parameters listed once

    def broken(module: nn.Module, **kw: object):   # what a missing C compiler looks like at the first call
        def run(*a: object) -> None:
            raise RuntimeError("InductorError: CppCompileError: C++ compile error\nmore lines")
        return run
    monkeypatch.setattr(torch, "compile", broken)
    with pytest.raises(InputError, match=r"--compile: torch.compile failed .*CppCompileError.*run without --compile"):
        CompiledNetwork(net)(x)

    def unusable(module: nn.Module, **kw: object) -> None:
        raise RuntimeError("Python 3.14 is not supported")
    monkeypatch.setattr(torch, "compile", unusable)
    with pytest.raises(InputError, match="not usable here"):
        CompiledNetwork(net)


def _erfnet_frames(shared: Path, n: int = 2) -> tuple[torch.Tensor, np.ndarray]:
    """Two Road Anomaly frames at 512 x 256 (ERFNet input, RGB in [0, 1]) and their anomaly labels."""
    from PIL import Image
    root = shared / "data" / "road_anomaly" / "RoadAnomaly_jpg" / "frames"
    images, labels = [], []
    for jpg in sorted(root.glob("*.jpg"))[:n]:
        images.append(np.asarray(Image.open(jpg).convert("RGB").resize((512, 256), Image.BILINEAR)))
        lab = np.asarray(Image.open(jpg.with_suffix(".labels") / "labels_semantic.png").resize((512, 256),
                                                                                           Image.NEAREST))
        labels.append(lab)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255)
    return x, np.stack(labels)


def test_erfnet_bf16_logits_and_metrics_match_fp32(shared: Path, erfnet_weights: Path) -> None:
    """ERFNet on two real frames: bf16 autocast gives float32 logits of the same shape whose max-logit
    anomaly metrics (AUROC/AP by scikit-learn, FPR@95 from its ROC curve) stay within 0.5 points of fp32."""
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    import sml.models
    model = sml.models.load("erfnet", weights=erfnet_weights)
    net = model.network
    x, labels = _erfnet_frames(shared)
    with torch.inference_mode():
        l32 = InferenceSettings("fp32").forward(net, x)[:, :19]
        l16 = InferenceSettings("bf16").forward(net, x)[:, :19]
    assert l32.dtype == l16.dtype == torch.float32 and l32.shape == l16.shape == (2, 19, 256, 512)
    assert not torch.equal(l32, l16)                                           # bf16 did run
    assert (l32.argmax(1) == l16.argmax(1)).float().mean() > 0.98
    assert float((l32 - l16).abs().max()) < 0.1 * float(l32.abs().max())
    keep = labels.reshape(-1) != 255
    y = (labels.reshape(-1)[keep] == 2).astype(np.int64)
    assert 0 < y.sum() < y.size

    def metrics(logits: torch.Tensor) -> np.ndarray:
        s = (-logits.max(1).values).reshape(-1).numpy()[keep]
        fpr, tpr, _ = roc_curve(y, s)
        return np.array([roc_auc_score(y, s), average_precision_score(y, s), fpr[np.searchsorted(tpr, 0.95)]])
    m32, m16 = metrics(l32), metrics(l16)
    print("fp32", m32, "bf16", m16)
    assert m32[0] > 0.6
    assert np.abs(m32 - m16).max() < 0.005, (m32, m16)


# -- the model contract and the CLI ------------------------------------------------------------------
def _tiny_model(**kw: object):
    from sml.models import wrap

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 5, 1))
    return wrap(net, input_size=(32, 48), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=5, **kw)


def test_model_precision_configure_predict_and_describe() -> None:
    model = _tiny_model()
    img = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    assert model.precision == "fp32" and model.describe() == "precision fp32, tf32 off, compile off, channels-last off"
    ref = model.predict(img)
    bf = model.predict(img, precision="bf16")
    assert bf.dtype == torch.float32 and bf.shape == ref.shape == (1, 5, 40, 60)
    assert not torch.equal(bf, ref) and torch.allclose(bf, ref, atol=0.05, rtol=0.05)
    assert torch.equal(model.predict(img, amp=True), bf)                  # amp=True keeps meaning bf16
    assert model.configure(InferenceSettings("bf16")) is model and model.precision == "bf16"
    assert torch.equal(model.predict(img), bf) and torch.equal(model.predict(img, precision="fp32"), ref)
    assert model.describe().startswith("precision bf16")
    with pytest.raises(InputError, match="fp16 runs on CUDA only"):
        model.predict(img, precision="fp16")
    with pytest.raises(InputError, match="is not one of"):
        model.predict(img, precision="int8")


def test_model_compile_through_configure() -> None:
    model = _tiny_model()
    img = np.random.default_rng(1).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    ref = model.predict(img)
    model.configure(InferenceSettings(compile=True, compile_backend="eager"))
    assert isinstance(model._net, CompiledNetwork) and model._net.network is model.network
    torch.testing.assert_close(model.predict(img), ref)
    model.configure(InferenceSettings())
    assert model._net is model.network


def test_model_compile_failure_names_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(module: nn.Module, **kw: object):
        def run(*a: object) -> None:
            raise RuntimeError("InductorError: CppCompileError: C++ compile error")
        return run
    monkeypatch.setattr(torch, "compile", broken)
    model = _tiny_model().configure(InferenceSettings(compile=True))
    with pytest.raises(InputError, match="--compile: torch.compile failed.*run without --compile"):
        model.predict(np.zeros((32, 48, 3), np.uint8))


def test_cli_refuses_fp16_on_cpu_before_anything_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sml.cli.main import main

    for cmd in (["eval", "--data", f"road-anomaly:{tmp_path / 'missing'}", "--method", "max_logit",
                 "--out", str(tmp_path / "run")],
                ["stats", "--data", f"cityscapes:{tmp_path / 'missing'}", "-o", str(tmp_path / "s.json")],
                ["predict", "--method", "max_logit", "--out", str(tmp_path / "pred"), str(tmp_path / "x.png")]):
        code = main([cmd[0], "--model", "erfnet", "--weights", str(tmp_path / "no.pth"), "--precision", "fp16",
                     *cmd[1:]])
        err = capsys.readouterr().err
        assert code == 2 and "--precision fp16 runs on CUDA only" in err and "Traceback" not in err, (cmd[0], err)
    assert not (tmp_path / "run").exists() and not (tmp_path / "pred").exists()


@pytest.mark.slow
def test_cli_eval_bf16_on_real_frames_matches_fp32(shared: Path, erfnet_weights: Path, tmp_path: Path) -> None:
    """`sml eval --precision bf16` on two Road Anomaly frames: float32 maps, metrics within 0.5 points of fp32,
    the settings recorded with the run."""
    import json

    from sml.cli.main import main

    data = f"road-anomaly:{shared / 'data' / 'road_anomaly' / 'RoadAnomaly_jpg'}"
    runs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        assert main(["eval", "--model", "erfnet", "--weights", str(erfnet_weights), "--data", data, "--limit", "2",
                     "--method", "max_logit,msp", "--save-maps", "npy", "--out", str(out),
                     "--precision", precision]) == 0
        runs[precision] = json.loads((out / "metrics.json").read_text())
        maps = sorted(out.rglob("*.npy"))
        assert len(maps) == 4 and all(np.load(m).dtype == np.float32 for m in maps)
    a, b = runs["fp32"]["methods"], runs["bf16"]["methods"]
    for m in ("max_logit", "msp"):
        for k in ("auroc", "ap", "fpr95"):
            assert abs(a[m][k] - b[m][k]) < 0.005, (m, k, a[m][k], b[m][k])
    assert a["max_logit"]["auroc"] != b["max_logit"]["auroc"] or a["msp"]["ap"] != b["msp"]["ap"]   # bf16 did run


def test_one_device_check_for_the_cli_and_the_model() -> None:
    """``InferenceSettings.check`` (the CLI, before anything opens) and ``SegmentationModel.to`` refuse
    a device with the same function and message."""
    from sml.utils.precision import check_device

    assert check_device("cpu") == torch.device("cpu")
    with pytest.raises(InputError, match="--device 'tpu7' is not a torch device"):
        InferenceSettings().check("tpu7")
    with pytest.raises(InputError, match="--device 'tpu7' is not a torch device"):
        _tiny_model().to("tpu7")
    if not torch.cuda.is_available():
        for call in (lambda: InferenceSettings().check("cuda:0"), lambda: _tiny_model().to("cuda:0")):
            with pytest.raises(InputError, match="--device cuda:0: CUDA is not available"):
                call()
