"""Mask-classification networks through the pipelines (issue 21): a card network of ``format: python``
returning (class logits, mask logits) scored by sml, rba, eam and max_logit from one forward pass, equal
to the Python API and to a literal reference of sml-algorithm.md section 8; resume, --protocol,
--components and torchrun as for every method; gen's settings from the command line."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from sml.cli.main import main
from test_pipeline_fixtures import interrupt_forward_after, make_model

CLASSES = ["road", "thing", "sky"]
INPUT = (32, 64)
TINYMASK = '''\
import torch
from torch import nn


class TinyMask(nn.Module):
    """Q queries over K classes and no object; mask logits at a quarter of the input size."""

    def __init__(self, queries=5, classes=3):
        super().__init__()
        self.body = nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.masks = nn.Conv2d(8, queries, 1)
        self.cls = nn.Linear(8, classes + 1)
        self.queries = nn.Parameter(torch.zeros(queries, 8))

    def forward(self, x):
        f = torch.tanh(self.body(x))
        pooled = f.mean(dim=(2, 3))[:, None, :] + self.queries[None]
        return self.cls(pooled) * 2.0, self.masks(f) * 3.0


def build():
    return TinyMask()
'''


def literal_mask_scores(class_logits: torch.Tensor, mask_logits: torch.Tensor, input_size: tuple[int, int],
                        label_size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Section 8 in float64, one query and class at a time, for one image (batch 1): ``S`` (K x H x W) and
    the maps of max_logit, rba and eam (H x W). Mask logits go to the input size first; S is formed there
    (sigmoid, sum) and resized; EAM's masks are resized first, then the sigmoid."""
    p = class_logits[0].double().softmax(-1)[:, :-1]            # Q x K, no object dropped after the softmax
    u = F.interpolate(mask_logits.double(), size=input_size, mode="bilinear", align_corners=False)[0]
    s_in = torch.zeros(p.shape[1], *input_size, dtype=torch.float64)
    for q in range(p.shape[0]):
        for c in range(p.shape[1]):
            s_in[c] += p[q, c] * torch.sigmoid(u[q])
    s = F.interpolate(s_in[None], size=label_size, mode="bilinear", align_corners=False)[0]
    eam = torch.ones(label_size, dtype=torch.float64)
    for q in range(p.shape[0]):
        m = torch.sigmoid(F.interpolate(u[q][None, None], size=label_size, mode="bilinear", align_corners=False))
        eam -= m[0, 0] * p[q].max()
    return {"S": s, "max_logit": -s.max(0).values, "rba": -torch.tanh(s).sum(0), "eam": eam}


def folder_data(root: Path, n: int = 4, size: tuple[int, int] = (48, 80)) -> Path:
    """A ``folder`` data set: smooth random images, 0/1 labels with a block of anomaly, a void border."""
    rng = np.random.default_rng(3)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    h, w = size
    for i in range(n):
        base = rng.integers(0, 256, size=(h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        Image.fromarray(np.asarray(Image.fromarray(base).resize((w, h), Image.BILINEAR))).save(
            root / "images" / f"f{i}.png")
        lab = np.zeros(size, np.uint8)
        lab[8 + i:20 + i, 10:30 + 2 * i] = 1
        lab[:, :2] = 255
        Image.fromarray(lab).save(root / "labels" / f"f{i}.png")
    return root


def _tinymask_module(folder: Path):  # noqa: ANN202 - the module written beside the card
    spec = importlib.util.spec_from_file_location("tinymask_api", folder / "tinymask.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("maskcls")
    (base / "tinymask.py").write_text(TINYMASK)
    torch.manual_seed(0)
    net = _tinymask_module(base).build()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape))
    torch.save(net.state_dict(), base / "tinymask.pth")
    card = {"name": "tinymask", "format": "python", "entry": "tinymask:build", "weights": "tinymask.pth",
            "input": {"size": list(INPUT), "channel_order": "RGB", "scale": 1},
            "output": {"kind": "mask-classification", "classes": CLASSES}}
    (base / "tinymask.yaml").write_text(yaml.safe_dump(card))
    data = folder_data(base / "data")
    assert main(["stats", "--model", str(base / "tinymask.yaml"), "--data", f"folder:{data}",
                 "-o", str(base / "stats.json")]) == 0
    return {"base": base, "card": base / "tinymask.yaml", "data": data, "stats": base / "stats.json"}


def _eval(setup: dict[str, Path], out: Path, *extra: str, method: str = "sml,rba,eam,max_logit") -> int:
    return main(["eval", "--model", str(setup["card"]), "--stats", str(setup["stats"]), "--data",
                 f"folder:{setup['data']}", "--method", method, "--out", str(out), *extra])


def _api_model(setup: dict[str, Path]):  # noqa: ANN202 - a SegmentationModel
    import sml.models

    net = _tinymask_module(setup["base"]).build()
    net.load_state_dict(torch.load(setup["base"] / "tinymask.pth", weights_only=True))
    return sml.models.wrap(net, input_size=INPUT, class_names=CLASSES, kind="mask-classification")


def test_python_card_equals_the_python_api_and_the_literal_reference(setup: dict[str, Path]) -> None:
    import sml.data
    from sml.scores import EAM, MaskClassificationOutput, MaxLogit, RbA

    out = setup["base"] / "run"
    assert _eval(setup, out, "--save-maps", "npy") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["methods"]) == ["sml", "rba", "eam", "max_logit"]
    model = _api_model(setup)
    captured: list[tuple[torch.Tensor, torch.Tensor]] = []
    model.network.register_forward_hook(lambda mod, inp, o: captured.append((o[0].clone(), o[1].clone())))
    ds = sml.data.open_dataset(f"folder:{setup['data']}")
    counts = np.zeros((2, len(CLASSES)), np.int64)   # inlier / anomaly pixels per class of argmax S
    for frame in ds.frames:
        sample = ds.load(frame)
        output = model.predict_output(sample.image, output_size=sample.labels.shape)
        assert isinstance(output, MaskClassificationOutput) and output.input_size == INPUT
        assert output.mask_logits.shape[-2:] == (INPUT[0] // 4, INPUT[1] // 4)   # kept at network resolution
        api = {"rba": RbA()(output), "eam": EAM()(output), "max_logit": MaxLogit()(output.class_scores())}
        ref = literal_mask_scores(*captured[-1], INPUT, sample.labels.shape)
        pred = ref["S"].argmax(0).numpy()
        for kind in (0, 1):
            counts[kind] += np.bincount(pred[sample.labels == kind], minlength=len(CLASSES))
        # predict gives S, the class scores, in place of logits (statistics and the Python API use it)
        np.testing.assert_allclose(model.predict(sample.image, output_size=sample.labels.shape)[0].numpy(),
                                   ref["S"].numpy(), rtol=1e-6, atol=1e-6)
        for m, amap in api.items():
            got = np.load(out / "npy" / m / f"{frame.id}.npy")
            np.testing.assert_allclose(got, amap[0].numpy(), rtol=0, atol=1e-6)
            np.testing.assert_allclose(got, ref[m].numpy(), rtol=1e-6, atol=1e-6)   # float32 against float64
    # the statistics are those of max S, and the diagnostics read the argmax and max of S
    stats = json.loads(setup["stats"].read_text())
    assert stats["class_names"] == CLASSES and stats["model"]["name"] == "tinymask"
    diag = json.loads((out / "diagnostics.json").read_text())
    assert [c["name"] for c in diag["classes"]] == CLASSES
    assert [[c["inlier_pixels"] for c in diag["classes"]], [c["anomaly_pixels"] for c in diag["classes"]]] == \
        counts.tolist()


def test_methods_that_do_not_apply_are_refused_before_the_first_forward(
        setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    from sml.pipelines import common

    monkeypatch.setattr(common, "forward", lambda *a, **k: pytest.fail("the network ran"))
    assert _eval(setup, tmp_path / "r", method="sml,rba,gen") == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "gen: not applicable to this network, whose output kind is mask-classification" in err
    assert "gen needs per-pixel class logits (output.kind: logits)" in err
    assert not (tmp_path / "r").exists()
    logits_card = make_model(tmp_path)
    assert main(["predict", "--model", str(logits_card), "--method", "eam,rba", str(setup["data"] / "images"),
                 "--out", str(tmp_path / "p")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "eam, rba: not applicable to this network, whose output kind is logits" in err
    assert "need a mask-classification network's class and mask logits per query" in err
    assert not (tmp_path / "p").exists()


def test_predict_writes_every_method_from_one_forward_pass(setup: dict[str, Path], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from sml.pipelines import common

    calls = {"n": 0}
    real = common.forward

    def counted(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(common, "forward", counted)
    assert main(["predict", "--model", str(setup["card"]), "--stats", str(setup["stats"]), "--method",
                 "sml,rba,eam", str(setup["data"] / "images" / "f0.png"), "--out", str(tmp_path / "p")]) == 0
    assert calls["n"] == 1
    assert main(["eval", "--model", str(setup["card"]), "--stats", str(setup["stats"]), "--data",
                 f"folder:{setup['data']}", "--method", "rba,eam", "--limit", "1", "--save-maps", "npy",
                 "--out", str(tmp_path / "e")]) == 0
    for m in ("rba", "eam"):
        np.testing.assert_array_equal(np.load(tmp_path / "p" / m / "f0.npy"), np.load(tmp_path / "e" / "npy" / m / "f0.npy"))


@pytest.mark.parametrize("network", ["mask", "logits"])
def test_resume_protocol_and_components_as_every_method(setup: dict[str, Path], tmp_path: Path, network: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    if network == "mask":
        args = ["--model", str(setup["card"]), "--stats", str(setup["stats"]), "--method", "sml,rba,eam,max_logit"]
    else:  # gen on a logits network, with its settings from the command line
        args = ["--model", str(make_model(tmp_path)), "--method", "gen,max_logit", "--gen-gamma", "0.5",
                "--gen-m", "4"]
    args = ["eval", *args, "--data", f"folder:{setup['data']}", "--components", "--protocol", "sml-reference",
            "--save-maps", "npy"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    with monkeypatch.context() as m:
        interrupt_forward_after(m, 2)
        assert main([*args, "--out", str(tmp_path / "b"), "--save-interval", "0"]) == 130
    assert main([*args, "--out", str(tmp_path / "b"), "--resume"]) == 0
    a, b = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in "ab")
    assert a["methods"] == b["methods"] and a["protocol"] == "sml-reference"
    assert all("components" in v for v in a["methods"].values())
    assert (tmp_path / "a" / "frames.json").read_text() == (tmp_path / "b" / "frames.json").read_text()
    for f in (tmp_path / "a" / "npy").rglob("*.npy"):
        np.testing.assert_array_equal(np.load(f), np.load(tmp_path / "b" / f.relative_to(tmp_path / "a")))
    if network == "logits":
        assert a["methods"]["gen"]["settings"] == {"gamma": 0.5, "M": 4}
        import sml.data
        import sml.models
        from sml.scores import gen

        model = sml.models.load(str(make_model(tmp_path)))
        ds = sml.data.open_dataset(f"folder:{setup['data']}")
        sample = ds.load(ds.frames[0])
        logits = model.predict(sample.image, output_size=sample.labels.shape)
        np.testing.assert_allclose(np.load(tmp_path / "a" / "npy" / "gen" / "f0.npy"), gen(logits, 0.5, 4)[0].numpy(),
                                   rtol=0, atol=1e-6)
        # other gen settings: another run, whose partial state cannot be resumed
        with monkeypatch.context() as m:
            interrupt_forward_after(m, 1)
            assert main([*args, "--out", str(tmp_path / "c"), "--save-interval", "0"]) == 130
        other = [("0.25" if a == "0.5" else a) for a in args]
        assert main([*other, "--out", str(tmp_path / "c"), "--resume"]) == 2


@pytest.mark.distributed
def test_two_processes_equal_one(setup: dict[str, Path], tmp_path: Path) -> None:
    from test_distributed_pipelines import _sml

    for n in (1, 2):
        _sml(["eval", "--model", str(setup["card"]), "--stats", str(setup["stats"]), "--data",
              f"folder:{setup['data']}", "--method", "sml,rba,eam,max_logit", "--components", "--save-maps", "npy",
              "--out", str(tmp_path / f"e{n}")], n, setup["base"])
    a, b = (json.loads((tmp_path / f"e{n}" / "metrics.json").read_text()) for n in (1, 2))
    assert a["methods"] == b["methods"] and list(a["methods"]) == ["sml", "rba", "eam", "max_logit"]
    assert (tmp_path / "e1" / "frames.json").read_text() == (tmp_path / "e2" / "frames.json").read_text()
    assert (tmp_path / "e1" / "diagnostics.json").read_bytes() == (tmp_path / "e2" / "diagnostics.json").read_bytes()
    for f in (tmp_path / "e1" / "npy").rglob("*.npy"):
        np.testing.assert_array_equal(np.load(f), np.load(tmp_path / "e2" / f.relative_to(tmp_path / "e1")))


def test_gen_settings_need_gen_and_fit_the_network(setup: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    card = str(make_model(tmp_path))
    base = ["eval", "--model", card, "--data", f"folder:{setup['data']}", "--out", str(tmp_path / "r")]
    assert main([*base, "--method", "max_logit", "--gen-gamma", "0.5"]) == 2
    assert "--gen-gamma sets method gen, which is not in --method (max_logit)" in " ".join(
        capsys.readouterr().err.split())
    assert main([*base, "--method", "gen", "--gen-m", "20"]) == 2
    assert "gen M=20 exceeds the network's 19 classes" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "r").exists()


def test_mask_output_kind_is_checked_at_load(setup: dict[str, Path], tmp_path: Path) -> None:
    import sml.models
    from sml.errors import InputError

    card = {**yaml.safe_load(setup["card"].read_text()), "weights": str(setup["base"] / "tinymask.pth")}
    (tmp_path / "tinymask.py").write_text(TINYMASK)
    bad = {**card, "output": {**card["output"], "channels": [0, 1]}, "name": "t"}
    bad["output"]["classes"] = CLASSES[:2]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(InputError, match=r"output\.channels is \[0, 1\], but a mask-classification network's "
                                         r"classes are all the columns"):
        sml.models.load(str(tmp_path / "c.yaml"))
    bad = {**card, "output": {"kind": "mask-classification", "classes": ["a", "b"]}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(InputError, match=r"class logits have 3 classes \(and 'no object', the last column\) but "
                                         r"the card names 2"):
        sml.models.load(str(tmp_path / "c.yaml"))
    bad = {**card, "output": {"classes": CLASSES}}   # kind left at logits: the pair is not logits
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(InputError, match=r"set output\.kind: mask-classification"):
        sml.models.load(str(tmp_path / "c.yaml"))
    model = _api_model(setup)
    with pytest.raises(InputError, match="sliding-window mode"):
        model.predict(np.zeros((40, 80, 3), np.uint8), sliding_window=True)
    two = sml.models.wrap(model.network, input_size=INPUT, num_classes=2, kind="mask-classification")
    with pytest.raises(InputError, match=r"class logits have 3 classes and 'no object', but the model was given 2 "
                                         r"classes .*give num_classes=3"):
        two.predict_output(np.zeros((40, 80, 3), np.uint8))
    # a batch of images: one output, the same as image by image
    imgs = [np.asarray(Image.open(setup["data"] / "images" / f"f{i}.png")) for i in range(3)]
    batch = model.predict_output(imgs, output_size=(48, 80), batch_size=2)
    assert batch.class_logits.shape[0] == 3
    for i, img in enumerate(imgs):
        one = model.predict_output(img, output_size=(48, 80))
        torch.testing.assert_close(batch.eam()[i], one.eam()[0], rtol=1e-6, atol=1e-6)


def test_batches_split_into_frames(setup: dict[str, Path], tmp_path: Path) -> None:
    """--batch-size: one MaskClassificationOutput for the batch, split per frame (sml.pipelines.common.split_frames);
    every map is the frame-by-frame run's (to float rounding: the first convolution's kernel depends on the batch)."""
    assert _eval(setup, tmp_path / "one", "--save-maps", "npy") == 0
    assert _eval(setup, tmp_path / "batch", "--save-maps", "npy", "--batch-size", "3", "--workers", "1") == 0
    a, b = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("one", "batch"))
    for m, r in a["methods"].items():
        assert r["auroc"] == pytest.approx(b["methods"][m]["auroc"], abs=1e-6), m
    maps = sorted((tmp_path / "one" / "npy").rglob("*.npy"))
    assert len(maps) == 16
    for f in maps:
        np.testing.assert_allclose(np.load(f), np.load(tmp_path / "batch" / f.relative_to(tmp_path / "one")),
                                   rtol=1e-5, atol=1e-5)
