"""Safe checkpoint loading: weights_only, the trust flag, key/shape errors, the published save layout."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from torch import nn

import sml.models as M
from sml.errors import CheckpointError
from sml.models.checkpoint import load_checkpoint, load_into, save_checkpoint


class Opaque:
    """A class a safe unpickler must refuse (module-level so trust=True can import it)."""

    def __init__(self) -> None:
        self.value = 3


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))


def test_arbitrary_pickle_is_refused_with_the_trust_flag_named(tmp_path):
    torch.save({"state_dict": small_net().state_dict(), "extra": Opaque()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "evil.pth")
    msg = str(info.value)
    assert "evil.pth" in msg and "Opaque" in msg and "trust=True" in msg and "--trust-checkpoint" in msg
    ckpt = load_checkpoint(tmp_path / "evil.pth", trust=True)
    assert ckpt["extra"].value == 3
    with pytest.raises(CheckpointError, match="trust"):
        M.load("erfnet", weights=tmp_path / "evil.pth")


def test_whole_pickled_module_is_refused(tmp_path):
    torch.save(small_net(), tmp_path / "model.pth")
    with pytest.raises(CheckpointError, match="refusing"):
        load_checkpoint(tmp_path / "model.pth")


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "junk.pth")


def test_published_layout_with_numpy_scalars_loads_from_its_path_alone(tmp_path):
    """The published DeepLabV3+ file stores a NumPy ``mean_iu``: it loads without trust (models.md)."""
    sd = small_net().state_dict()
    path = tmp_path / "np.pth"
    torch.save({"state_dict": sd, "epoch": np.int64(5), "mean_iu": np.float64(0.75),
                "f32": np.float32(0.5)}, path)
    # what torch itself says such a file needs beyond its defaults: only NumPy's scalar reconstruction
    needs = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    assert needs and all(n.startswith("numpy.") for n in needs), needs
    ckpt = load_checkpoint(path)
    assert float(ckpt["mean_iu"]) == 0.75 and int(ckpt["epoch"]) == 5 and float(ckpt["f32"]) == 0.5
    assert torch.equal(ckpt["state_dict"]["0.weight"], sd["0.weight"])
    # the allowance is scoped to our load: torch's own default stays strict afterwards
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)
    torch.save({"state_dict": {}, "epoch": 5, "mean_iu": 0.75}, tmp_path / "plain.pth")
    assert load_checkpoint(tmp_path / "plain.pth")["mean_iu"] == 0.75


class _Shell:
    """Pickles as a call of ``os.system``: a checkpoint that runs a command on load."""

    def __reduce__(self):
        import os
        return (os.system, ("true",))


def test_checkpoint_with_os_system_is_still_refused(tmp_path):
    torch.save({"state_dict": small_net().state_dict(), "mean_iu": np.float64(0.5), "x": _Shell()},
               tmp_path / "evil.pth")
    assert any("system" in n for n in torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "evil.pth"))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "evil.pth")
    assert "evil.pth" in str(info.value) and "system" in str(info.value) and "--trust-checkpoint" in str(info.value)


@pytest.mark.parametrize("content, reason", [(b"", "empty (0 bytes)"), (b"text\n", "not a PyTorch checkpoint")])
def test_unreadable_files_give_a_true_reason(tmp_path, content, reason):
    (tmp_path / "w0.pth").write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "w0.pth")
    assert "w0.pth" in str(info.value) and reason in str(info.value)
    assert ": ." not in str(info.value)


def test_load_into_names_missing_unexpected_and_shapes():
    src = small_net().state_dict()
    net = small_net()
    bad = dict(src)
    bad.pop("0.weight")
    bad["head.weight"] = torch.zeros(1)
    bad["2.weight"] = torch.zeros(5, 4, 1, 1)
    bad["2.bias"] = torch.zeros(5)
    with pytest.raises(CheckpointError) as info:
        load_into(net, bad, source="x.pth")
    msg = str(info.value)
    assert "1 missing key(s): 0.weight" in msg and "1 unexpected key(s): head.weight" in msg
    assert "2.weight checkpoint (5, 4, 1, 1) vs network (2, 4, 1, 1)" in msg


def test_wrong_class_count_and_wrong_architecture(erfnet_weights):
    with pytest.raises(CheckpointError, match=r"num_classes=20") as info:
        load_into(M.build("erfnet", num_classes=19), load_checkpoint(erfnet_weights))
    assert "decoder.output_conv.weight" in str(info.value)
    with pytest.raises(CheckpointError) as info:
        M.load("deeplabv3plus_r50_os16", weights=erfnet_weights)
    msg = str(info.value)
    assert "missing key(s): aspp." in msg and "unexpected key(s): decoder." in msg
    with pytest.raises(CheckpointError, match="output channels"):
        M.load("erfnet", weights=erfnet_weights, num_classes=7)


def test_prefix_nesting_multiscale_and_missing_counters(tmp_path):
    src = small_net()
    sd = {"module." + k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    sd["module.multi_scale.first_conv.weight"] = torch.zeros(1, 1, 3, 3)
    net = load_into(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1)), {"state_dict": sd})
    for k, v in src.state_dict().items():
        assert torch.equal(net.state_dict()[k], v)


def test_save_checkpoint_published_layout_round_trip(tmp_path):
    net = M.build("erfnet", num_classes=5)
    ddp_like = nn.Module()
    ddp_like.module = net  # what DataParallel/DDP wrappers look like
    path = tmp_path / "out" / "ckpt.pth"
    save_checkpoint(path, ddp_like, epoch=3, mean_iu=np.float64(0.5), arch="erfnet", num_classes=5,
                    class_names=list("abcde"))
    raw = torch.load(path, weights_only=True)  # plain torch can read it safely
    assert set(raw) == {"state_dict", "epoch", "mean_iu", "arch", "num_classes", "class_names"}
    assert all(k.startswith("module.") for k in raw["state_dict"]) and raw["epoch"] == 3
    assert raw["mean_iu"] == 0.5 and isinstance(raw["mean_iu"], float)
    assert not list(tmp_path.joinpath("out").glob("*.tmp"))
    model = M.load(str(path))  # arch and classes travel with the file
    assert model.name == "erfnet" and model.class_names == list("abcde") and model.num_classes == 5
    for k, v in net.state_dict().items():
        assert torch.equal(model.network.state_dict()[k], v)


@pytest.mark.slow
def test_readme_python_example_runs_as_written(shared, tmp_path, monkeypatch):
    """The README's first Python block, verbatim, on a checkpoint in the published layout (random weights,
    NumPy ``mean_iu``), the reference statistics and a small frame: no trust flag needed."""
    import re
    import shutil
    from pathlib import Path

    from PIL import Image

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"## Python\s+```python\n(.*?)```", text, re.S).group(1)
    assert "trust" not in block
    net = M.build("deeplabv3plus_r101_os8", num_classes=19)
    torch.save({"state_dict": {"module." + k: v for k, v in net.state_dict().items()}, "epoch": 175,
                "mean_iu": np.float64(0.803)}, tmp_path / "r101_os8_base_cty.pth")
    for name in ("cityscapes_mean.npy", "cityscapes_var.npy"):
        shutil.copy(shared / "reference" / name, tmp_path / name)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "frame.png")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert scope["logits"].shape == (1, 19, 48, 64) and scope["anomaly"].shape == (1, 48, 64)
    assert scope["anomaly"].dtype == torch.float32
