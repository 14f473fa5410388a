"""Model cards: every format against a literal float64 version of the card's order of operations,
every bad field refused with the card, the field and the fix, and `sml models card` templates."""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torch import nn

import sml.models as M
from sml.cli.main import main
from sml.errors import CheckpointError, InputError
from test_pipeline_fixtures import make_cityscapes

NAMES = ["a", "b", "c", "d"]


class Mix(nn.Module):
    """A 1x1 conv to 6 channels then 2x2 average pooling: output at half resolution."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(3, 6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(x), 2)


def build() -> nn.Module:
    """Entry point of the python-format card (imported from this file by the card)."""
    return Mix()


def image(h: int = 30, w: int = 44, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def literal(net: nn.Module, img: np.ndarray, card: dict, out_size: tuple[int, int] | None = None) -> torch.Tensor:
    """models.md's order of operations, step by step in float64 (logits upsampled to ``out_size``,
    default the image's size)."""
    inp, out = card["input"], card["output"]
    x = torch.from_numpy(img).permute(2, 0, 1)[None].double()
    if inp["channel_order"] == "BGR":
        x = x[:, [2, 1, 0]]
    x = x / 255 * inp["scale"]
    if inp["size"] is not None:
        x = F.interpolate(x, size=tuple(inp["size"]), mode="bilinear", antialias=True, align_corners=False)
    x = (x - torch.tensor(inp.get("mean", [0, 0, 0]), dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(
        inp.get("std", [1, 1, 1]), dtype=torch.float64).view(1, 3, 1, 1)
    y = net.double()(x)[:, out.get("channels", list(range(6)))]
    return F.interpolate(y, size=out_size or img.shape[:2], mode="bilinear",
                         align_corners=out.get("upsample") == "bilinear-align-corners").float()


def base_card(file: str, fmt: str, size=(20, 28)) -> dict:
    return {"name": "mix", "format": fmt, "file": file,
            "input": {"size": list(size) if size else None, "channel_order": "BGR", "scale": 255,
                      "mean": [120.0, 110.0, 100.0], "std": [60.0, 50.0, 70.0]},
            "output": {"classes": NAMES, "channels": [5, 0, 3, 1], "upsample": "bilinear-align-corners"}}


def write(path: Path, card: dict) -> Path:
    path.write_text(yaml.safe_dump(card))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("card")
    net = Mix().eval()
    x = torch.zeros(1, 3, 20, 28)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(net, x).save(str(d / "mix.ts"))
        torch.onnx.export(net, (x,), str(d / "mix_dyn.onnx"), input_names=["x"], dynamo=False,
                          dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}})
        torch.onnx.export(net, (x,), str(d / "mix_fix.onnx"), input_names=["x"], dynamo=False)
    torch.export.save(torch.export.export(net, (x,)), str(d / "mix.pt2"))
    torch.save(net.state_dict(), d / "mix.pth")
    (d / "mixnet.py").write_text(Path(__file__).read_text())  # the entry module, beside the card
    return {"dir": d, "net": net}


@pytest.mark.parametrize("file,fmt", [("mix.ts", "torchscript"), ("mix_dyn.onnx", "onnx"), ("mix_fix.onnx", "onnx"),
                                      ("mix.pt2", "export"), (None, "python")])
def test_every_format_follows_the_card_exactly(files, file, fmt):
    card = base_card(file, fmt)
    if fmt == "python":
        del card["file"]
        card.update(entry="mixnet:build", weights="mix.pth")
    path = write(files["dir"] / f"{fmt}-{file}.yaml", card)
    model = M.load(str(path))
    assert model.name == "mix" and model.class_names == NAMES and model.kind == "logits"
    img = image()
    torch.testing.assert_close(model.predict(img), literal(files["net"], img, card), rtol=1e-4, atol=1e-4)


def test_dynamic_onnx_runs_at_each_images_size_and_batches(files):
    card = base_card("mix_dyn.onnx", "onnx", size=None)
    card["input"].update(channel_order="RGB", scale=1, mean=[0.5, 0.4, 0.3], std=[0.2, 0.3, 0.25])
    card["output"] = {"classes": ["c"] * 0 + [f"k{i}" for i in range(6)]}
    model = M.load(str(write(files["dir"] / "dyn.yaml", card)))
    imgs = np.stack([image(24, 36, 1), image(24, 36, 2)])
    ref = torch.cat([literal(files["net"], i, {**card, "output": {}}) for i in imgs])
    torch.testing.assert_close(model.predict(imgs), ref, rtol=1e-4, atol=1e-4)


def test_fixed_size_onnx_needs_its_size_in_the_card(files):
    card = base_card("mix_fix.onnx", "onnx", size=(24, 32))
    with pytest.raises(InputError, match=r"fixed 20x28 \(HxW\) input. Set input.size: \[20, 28\]"):
        M.load(str(write(files["dir"] / "fix.yaml", card)))
    card["input"]["size"] = None
    with pytest.raises(InputError, match="input.size is None"):
        M.load(str(write(files["dir"] / "fix.yaml", card)))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_file_models_without_a_card_are_refused_with_how_to_write_one(files, capsys):
    for name in ("mix.ts", "mix_dyn.onnx", "mix.pt2"):
        with pytest.raises(InputError) as info:
            M.load(str(files["dir"] / name))
        msg = str(info.value)
        assert name in msg and "sml models card" in msg and "channel_order:" in msg and "never guesses" in msg
    cs = make_cityscapes(files["dir"] / "cs", n=2)
    assert main(["stats", "--model", str(files["dir"] / "mix.ts"), "--data", f"cityscapes:{cs}",
                 "-o", str(files["dir"] / "s.json")]) == 2
    err = capsys.readouterr().err
    assert "sml: error:" in err and "model card" in err and "Traceback" not in err
    # Python users keep wrap(): the preprocessing is given as arguments there.
    assert M.wrap(files["dir"] / "mix_dyn.onnx", input_size=(20, 28)).num_classes == 6


def test_template_from_a_dry_run_is_refused_until_filled_in(files, capsys):
    out = files["dir"] / "tpl.yaml"
    assert main(["models", "card", str(files["dir"] / "mix_fix.onnx"), "-o", str(out)]) == 0
    text = out.read_text()
    card = yaml.safe_load(text)
    assert card["format"] == "onnx" and card["file"] == "mix_fix.onnx" and card["input"]["size"] == [20, 28]
    assert card["sha256"] == hashlib.sha256((files["dir"] / "mix_fix.onnx").read_bytes()).hexdigest()
    assert "6 output channels at 10x14" in text and card["input"]["channel_order"] == "FILL-IN"
    with pytest.raises(InputError, match="field input.channel_order is still FILL-IN"):
        M.load(str(out))
    card["input"].update(channel_order="RGB", scale=1)
    del card["input"]["mean"], card["input"]["std"]
    card["output"]["classes"] = [f"k{i}" for i in range(6)]
    assert M.load(str(write(out, card))).num_classes == 6
    assert main(["models", "card", str(files["dir"] / "mix_fix.onnx"), "-o", str(out)]) == 2  # never overwritten
    assert main(["models", "card", str(files["dir"] / "mix.pth")]) == 2
    assert "format: python" in capsys.readouterr().err
    assert main(["models", "card", str(files["dir"] / "mix.ts")]) == 0
    assert "size: FILL-IN" in capsys.readouterr().out  # TorchScript does not state its size


# (field path, value or DELETE, fragment of the message); each starts from a valid torchscript card
DELETE = object()
BAD = [
    (("name",), DELETE, "field name is missing"),
    (("format",), "caffe", "field format is 'caffe'. Use one of: torchscript, onnx, export, python, transformers"),
    (("file",), "nope.ts", "field file names 'nope.ts'"),
    (("file",), DELETE, "field file is missing"),
    (("entry",), "x:y", "field entry does not apply to format torchscript"),
    (("sha256",), "abc", "field sha256 must be 64 hex digits"),
    (("sha256",), "0" * 64, "the card says 000"),
    (("colour",), 1, "field colour is not a card field"),
    (("input",), DELETE, "field input is missing"),
    (("input",), [1, 2], "field input must be a mapping"),
    (("input", "size"), DELETE, "field input.size is missing"),
    (("input", "size"), [20], "field input.size must be [height, width]"),
    (("input", "size"), [0, 28], "field input.size must be [height, width]"),
    (("input", "channel_order"), "rgb", "field input.channel_order is 'rgb'. Use one of: RGB, BGR"),
    (("input", "channel_order"), DELETE, "field input.channel_order is missing"),
    (("input", "scale"), 100, "field input.scale is 100. Use 1"),
    (("input", "scale"), DELETE, "field input.scale is missing"),
    (("input", "mean"), [1, 2], "field input.mean must be three numbers"),
    (("input", "std"), [1, 0, 1], "field input.std must be three numbers > 0"),
    (("input", "resize"), "bicubic", "field input.resize is 'bicubic'"),
    (("input", "gamma"), 2, "field input.gamma is not a card field"),
    (("output",), DELETE, "field output is missing"),
    (("output", "kind"), "probabilities", "field output.kind is 'probabilities'"),
    (("output", "classes"), DELETE, "field output.classes is missing"),
    (("output", "classes"), "ade20k", "field output.classes must be 'cityscapes' or a list"),
    (("output", "classes"), ["a", "a", "b", "c"], "field output.classes repeats a class name"),
    (("output", "channels"), [0, 1], "field output.channels lists 2 channels for 4 classes"),
    (("output", "channels"), [0, 1, 2, -1], "field output.channels must be a list of output channel indices"),
    (("output", "channels"), [0, 1, 2, 9], "field output.channels goes up to 9 but the network returns 6"),
    (("output", "upsample"), "cubic", "field output.upsample is 'cubic'"),
]


@pytest.mark.parametrize("where,value,fragment", BAD, ids=[f"{'.'.join(w)}={v if v is not DELETE else 'missing'}"
                                                           for w, v, _ in BAD])
def test_every_bad_field_is_refused_naming_card_field_and_fix(files, where, value, fragment):
    card = base_card("mix.ts", "torchscript")
    target = card
    for key in where[:-1]:
        target = target[key]
    if value is DELETE:
        del target[where[-1]]
    else:
        target[where[-1]] = value
    path = write(files["dir"] / "bad.yaml", card)
    with pytest.raises((InputError, CheckpointError)) as info:
        M.load(str(path))
    msg = " ".join(str(info.value).split())
    assert str(path) in msg and fragment in msg


def test_unreadable_cards_and_dry_run_mismatches(files):
    d = files["dir"]
    (d / "junk.yaml").write_text("name: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        M.load(str(d / "junk.yaml"))
    (d / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(InputError, match="must be a YAML mapping"):
        M.load(str(d / "list.yaml"))
    with pytest.raises(InputError, match="does not exist"):
        M.load(str(d / "missing.yaml"))
    card = base_card("mix.ts", "torchscript")
    del card["output"]["channels"]
    with pytest.raises(InputError, match=r"returns 6 output channels but the card names 4 classes. Give output"):
        M.load(str(write(d / "n.yaml", card)))
    card = base_card("mix.ts", "torchscript")
    with pytest.raises(InputError, match="drop --weights"):
        M.load(str(write(d / "w.yaml", card)), weights=d / "mix.pth")
    card["input"]["size"] = [21, 29]  # a traced network still runs; an export fixed at 20x28 does not
    card.update(format="export", file="mix.pt2")
    with pytest.raises(InputError, match=r"Set input.size: \[20, 28\]"):
        M.load(str(write(d / "e.yaml", card)))


def test_python_entry_that_is_not_a_module_or_missing(files):
    d = files["dir"]
    card = base_card(None, "python")
    del card["file"]
    card.update(entry="mixnet:image", weights="mix.pth")
    with pytest.raises((InputError, CheckpointError)):
        M.load(str(write(d / "p.yaml", card)))
    card.update(entry="no_such_module_xyz:build")
    with pytest.raises(InputError, match="cannot import no_such_module_xyz"):
        M.load(str(write(d / "p.yaml", card)))
    card.update(entry="not an entry")
    with pytest.raises(InputError, match="package.module:function"):
        M.load(str(write(d / "p.yaml", card)))


# -- issue 19: PIL resize, units, YAML aliases, traced sizes, NaN logits -----------------------------
@pytest.mark.parametrize("resize,flt", [("pil-bilinear", Image.Resampling.BILINEAR),
                                        ("pil-bicubic", Image.Resampling.BICUBIC)])
def test_pil_resize_modes_follow_the_card_exactly(files, resize, flt):
    card = base_card("mix.ts", "torchscript")
    card["input"]["resize"] = resize
    model = M.load(str(write(files["dir"] / f"{resize}.yaml", card)))
    img = image(33, 47)
    # models.md: PIL's Image.resize on the uint8 image first, then channels, scale, mean/std (no more resizing)
    small = np.array(Image.fromarray(img).resize((28, 20), flt))
    ref = literal(files["net"], small, {**card, "input": {**card["input"], "size": None}}, img.shape[:2])
    torch.testing.assert_close(model.predict(img), ref, rtol=1e-4, atol=1e-4)


UNITS_OK = [dict(scale=1, mean=[0, 0, 0], std=[1, 1, 1]), dict(scale=255, mean=[0, 0, 0], std=[1, 1, 1]),
            dict(scale=1, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]), dict(scale=1, mean=[1, 1, 1], std=[1, 1, 1]),
            dict(scale=255, mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]),
            dict(scale=255, std=[58.395, 57.12, 57.375]), dict(scale=1, mean=[0.485, 0.456, 0.406])]
UNITS_BAD = [(dict(scale=1, mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]), "input.mean", "scale: 255"),
             (dict(scale=1, std=[58.395, 57.12, 57.375]), "input.std", "divide both by 255"),
             (dict(scale=1, mean=[0.485, 0.456, 0.406], std=[1.5, 1, 1]), "input.std", "scale: 255"),
             (dict(scale=255, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]), "input.mean", "scale: 1"),
             (dict(scale=255, std=[0.229, 0.224, 0.225]), "input.std", "multiply both by 255"),
             (dict(scale=255, mean=[0, 0, 300], std=[50, 50, 50]), "input.mean", "outside the pixel range [0, 255]")]


@pytest.mark.parametrize("inp", UNITS_OK, ids=[str(i) for i in range(len(UNITS_OK))])
def test_mean_and_std_in_the_units_of_the_scale_are_accepted(files, inp):
    card = base_card("mix.ts", "torchscript")
    card["input"] = {"size": [20, 28], "channel_order": "RGB", **inp}
    model = M.load(str(write(files["dir"] / "units.yaml", card)))
    assert model.scale == inp["scale"]


@pytest.mark.parametrize("inp,field,fix", UNITS_BAD, ids=[str(i) for i in range(len(UNITS_BAD))])
def test_mean_and_std_in_the_other_units_are_refused(files, inp, field, fix):
    card = base_card("mix.ts", "torchscript")
    card["input"] = {"size": [20, 28], "channel_order": "RGB", **inp}
    path = write(files["dir"] / "units.yaml", card)
    with pytest.raises(InputError) as info:
        M.read_card(path)
    msg = str(info.value)
    assert f"model card {path}: field {field} is [" in msg and fix in msg
    assert f"scale is {inp['scale']}" in msg or f"of scale {inp['scale']}" in msg
    with pytest.raises(InputError, match="in 0-255 units"):  # the same rule for Python's wrap()
        M.wrap(files["net"], mean=[120, 110, 100], std=[60, 50, 70], num_classes=6)


def test_yaml_anchors_and_aliases_are_refused_before_anything_expands(files):
    d = files["dir"]
    levels = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}' if i else 'lol'] * 9)}]\n" for i in range(9))
    (d / "bomb.yaml").write_text(levels + "name: *l8\n")  # 9**9 strings once expanded
    with pytest.raises(InputError) as info:
        M.read_card(d / "bomb.yaml")
    msg = str(info.value)
    assert "uses a YAML anchor or alias (&name / *name) at line 1, column 5" in msg and "lol" not in msg
    assert len(msg) < 400
    card = base_card("mix.ts", "torchscript")  # a harmless alias is refused as well: one rule, no expansion
    text = yaml.safe_dump(card).replace("mean:\n", "mean: &m\n", 1)
    (d / "alias.yaml").write_text(text)
    with pytest.raises(InputError, match=r"alias.yaml uses a YAML anchor or alias .* at line \d+"):
        M.read_card(d / "alias.yaml")
    card["output"]["channels"] = ["x" * 50] * 1000  # a huge wrong value is quoted cut short
    with pytest.raises(InputError) as info:
        M.read_card(write(d / "long.yaml", card))
    assert "field output.channels must be a list" in str(info.value) and len(str(info.value)) < 500


class FixedOut(nn.Module):
    """Returns logits at the size it was traced at, whatever the input: int() turns the traced size
    into constants (torch.jit.trace and torch.onnx.export alike)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.conv = nn.Conv2d(3, 4, 3, stride=4, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[2]), int(x.shape[3])
        return F.interpolate(self.conv(x), size=(h, w), mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def fixed(files) -> dict[str, Path]:
    d, net, x = files["dir"], FixedOut().eval(), torch.zeros(1, 3, 24, 40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(net, x).save(str(d / "fixed.ts"))
        torch.onnx.export(net, (x,), str(d / "fixed.onnx"), input_names=["x"], dynamo=False,
                          dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}})
    return {"ts": d / "fixed.ts", "onnx": d / "fixed.onnx", "net": net}


@pytest.mark.parametrize("kind", ["ts", "onnx"])
def test_file_traced_with_fixed_sizes_runs_only_at_its_size(files, fixed, kind, capsys):
    d = files["dir"]
    card = {"name": "fixed", "format": "torchscript" if kind == "ts" else "onnx", "file": fixed[kind].name,
            "input": {"size": None, "channel_order": "RGB", "scale": 1}, "output": {"classes": NAMES}}
    with pytest.raises(InputError) as info:
        M.load(str(write(d / f"fixed-{kind}.yaml", card)))
    msg = " ".join(str(info.value).split())
    assert ("field input.size is null (each image's own size), but " + fixed[kind].name) in msg
    assert "a 256x512 input gives 24x40 logits, and a 128x256 input also gives 24x40" in msg
    assert "likely [24, 40]" in msg
    card["input"]["size"] = [30, 50]
    with pytest.raises(InputError, match=r"field input.size is \[30, 50\], but fixed"):
        M.load(str(write(d / f"fixed-{kind}.yaml", card)))
    card["input"]["size"] = [24, 40]  # the traced size: runs, and gives the network's own logits
    model = M.load(str(write(d / f"fixed-{kind}.yaml", card)))
    img = image(50, 70)
    torch.testing.assert_close(model.predict(img), literal(fixed["net"], img, {**card, "output": {"channels": [0, 1, 2, 3]}}),
                               rtol=1e-4, atol=1e-4)
    assert main(["models", "card", str(fixed[kind])]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out)["input"]["size"] == [24, 40] and "never null" in out
    assert "null for each image's own size" not in out
    with pytest.raises(InputError, match=r"input_size is None .* \(likely \[24, 40\]"):
        M.wrap(fixed[kind])
    assert M.wrap(fixed[kind], input_size=(24, 40)).num_classes == 4


class NaNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 19, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return torch.where(y > 0, y, torch.full_like(y, float("nan")))


def test_models_check_names_nan_logits_and_its_miou(tmp_path, shared, capsys):
    torch.jit.script(NaNNet().eval()).save(str(tmp_path / "nan.ts"))
    card = {"name": "nan", "format": "torchscript", "file": "nan.ts",
            "input": {"size": [64, 128], "channel_order": "RGB", "scale": 1}, "output": {"classes": "cityscapes"}}
    args = ["models", "check", "--model", str(write(tmp_path / "nan.yaml", card)),
            "--data", f"cityscapes:{shared / 'data/cityscapes_mini'}", "--max-frames", "1"]
    assert main(args) == 1
    captured = capsys.readouterr()
    err = " ".join(captured.err.split())
    assert "sml: warning: the network returned NaN or infinite logits on 1 of 1 frames" in err
    assert "channel_order" not in err and "near chance" not in err
    assert "mIoU is the mean, over the classes present in the labels, of TP / (TP + FP + FN)" in captured.out
    assert main([*args, "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["nonfinite_frames"] == 1 and result["miou_definition"].startswith("mIoU is the mean")
