"""`sml train` on the real recipes: torchrun on the CPU, exact resume, parameters the loss leaves unused,
the ImageNet-trunk check and the frame counts printed at start."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from sml.errors import InputError
from sml.train import load_config
from sml.train.frames import cityscapes_frames
from sml.train.loop import build_network, check_trunk, describe_frames, takes_trunk, unused_parameters

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ unused parameters
def test_erfnet_encoder_head_is_the_only_unused_parameter() -> None:
    cfg = load_config("erfnet_cityscapes", ["data.crop_size=[64,128]"])
    torch.manual_seed(0)
    net = build_network(cfg)
    buffers = {n: b.clone() for n, b in net.named_buffers()}
    rng = torch.get_rng_state()
    assert sorted(unused_parameters(net, cfg, torch.device("cpu"))) == ["encoder.output_conv.bias",
                                                                       "encoder.output_conv.weight"]
    # the probe leaves no trace: batch-norm statistics and the RNG (dropout) as before
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(b, buffers[n]) for n, b in net.named_buffers())


@pytest.mark.parametrize("aux_weight, unused_prefix", [(0.4, None), (0.0, "dsn.")])
def test_deeplab_aux_head_unused_only_without_aux_loss(aux_weight: float, unused_prefix: str | None) -> None:
    cfg = load_config(None, ["model.arch=deeplabv3plus_r50_os16", f"optim.aux_weight={aux_weight}",
                             "data.crop_size=[32,32]"])
    net = build_network(cfg)
    unused = unused_parameters(net, cfg, torch.device("cpu"))
    if unused_prefix is None:
        assert unused == []
    else:
        assert unused and all(n.startswith(unused_prefix) for n in unused)
        assert len(unused) == sum(1 for n, _ in net.named_parameters() if n.startswith(unused_prefix))


# ------------------------------------------------------------------ ImageNet trunk
def test_missing_trunk_warns_errors_or_is_ignored() -> None:
    with pytest.warns(UserWarning, match="pretrained_backbone is not set.*trunk_required=error"):
        check_trunk(load_config(None))
    with pytest.raises(InputError, match="trunk_required=error refuses"):
        check_trunk(load_config(None, ["model.trunk_required=error"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_trunk(load_config("erfnet_cityscapes"))                                      # recipe: ignore
        check_trunk(load_config(None, ["model.pretrained_backbone=/w/r101.pth"]))         # trunk given
        check_trunk(load_config(None, ["model.init_weights=/w/sml.pth", "model.trunk_required=error"]))
        # networks without a trunk option (ERFNet, the demo's, custom factories): nothing to ask for
        check_trunk(load_config(None, ["model.arch=erfnet", "model.trunk_required=error"]))
        check_trunk(load_config(None, ["model.arch=sml.demo.net:tiny_net", "model.trunk_required=error"]))
    assert takes_trunk("deeplabv3plus_r50_os16") and not takes_trunk("erfnet") and not takes_trunk("x.y:z")
    with pytest.raises(InputError, match="trunk_required must be"):
        load_config(None, ["model.trunk_required=maybe"])


def test_refused_before_any_work(tmp_path: Path) -> None:
    from sml.cli.main import main
    assert main(["train", "model.trunk_required=error", f"data.root={tmp_path / 'nowhere'}",
                 f"train.out_dir={tmp_path / 'out'}", "train.device=cpu"]) == 2
    assert not (tmp_path / "out" / "last.pth").exists()


def test_start_line_counts_frames(shared: Path) -> None:
    frames = cityscapes_frames(shared / "data" / "cityscapes_mini", "train")
    line = describe_frames(frames, 2, 2)
    assert line.startswith("train data: 188 frames found in ") and "8 with labels, 8 used for training" in line
    assert "(180 without labels skipped)" in line and "4 crops reach only part of them" in line
    assert "reach only" not in describe_frames(frames, 60000, 4)


# ------------------------------------------------------------------ torchrun on the real recipes
def _run(args: list[str], procs: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore::FutureWarning")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"] \
        if procs > 1 else [sys.executable]
    res = subprocess.run([*launcher, "-m", "sml", "train", *args], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def _losses(out: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("config, arch, crop", [
    ("erfnet_cityscapes", "erfnet", "[64,128]"),
    ("deeplabv3plus_r101_os8_cityscapes", "deeplabv3plus_r50_os8", "[64,64]"),
])
def test_recipe_under_torchrun_resumes_exactly(shared: Path, tmp_path: Path, config: str, arch: str,
                                               crop: str) -> None:
    """2 iterations on 2 processes (gloo, SyncBN, DDP) on the real cityscapes_mini frames; resuming from the
    checkpoint of iteration 1 gives the same weights bit for bit and the same logged loss at iteration 2."""
    def args(out: Path, *extra: str) -> list[str]:
        return ["--config", config, f"model.arch={arch}", f"data.root={shared / 'data' / 'cityscapes_mini'}",
                f"data.crop_size={crop}", "data.batch_size=2", "data.num_workers=0",
                f"data.class_uniform.cache={tmp_path / 'centroids.json'}", "optim.iterations=2",
                "train.val_every=0", "train.log_every=1", "train.checkpoint_every=1", "train.keep_every=1",
                "train.device=cpu", "train.deterministic=true", "train.threads=1", f"train.out_dir={out}", *extra]

    res = _run(args(tmp_path / "a"), 2)
    assert "188 frames found" in res.stderr and "8 with labels, 8 used for training" in res.stderr
    if arch == "erfnet":
        assert "not trained (the training loss does not use them): encoder.output_conv.bias" in res.stderr
    else:   # the published recipe without the ImageNet trunk says so at start
        assert "pretrained_backbone is not set" in res.stderr
    _run(args(tmp_path / "b") + ["--resume", str(tmp_path / "a" / "iter_0000001.pth")], 2)
    a = torch.load(tmp_path / "a" / "last.pth", map_location="cpu", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pth", map_location="cpu", weights_only=True)
    assert a["training_state"]["iteration"] == b["training_state"]["iteration"] == 2
    assert a["training_state"]["world_size"] == 2
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    la, lb = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert len(la) == 2 and lb == la[1:]
    # from random weights the mean cross entropy is about log(K) (x 1.4 with DeepLab's aux term): the true
    # global mean, not half of it as the old double division by the world size logged
    cfg = load_config(config)
    expected = math.log(cfg.model.num_classes) * (1 + cfg.optim.aux_weight)
    assert all(0.75 * expected < v < 1.5 * expected for v in la), (la, expected)
