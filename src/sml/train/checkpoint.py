"""Training checkpoints: what ``last.pth`` holds, how it is written and how a resume restores it.

One plain dict, written with ``torch.save`` (atomically: a kill leaves the
previous or the new file, never a torn one) and read back with
``weights_only=True``. Its layout is the published one (``state_dict`` with
``module.`` keys, ``epoch``, ``mean_iu``), so ``sml eval``, ``sml.models.load``
and ``model.init_weights`` read it as weights; the rest of a resume's state
sits beside them::

    {"state_dict": {...}, "epoch": int, "mean_iu": float | None,
     "iteration": int, "arch": str, "num_classes": int, "config": TrainConfig.to_dict(),
     "training_state": {"iteration", "optimizer", "scheduler", "scaler",
                        "sampler": {"seed", "position", "frames"}, "rng": [per rank],
                        "world_size", "batch_size", "best_miou", "loss_avg"}}

(In the terms of PyTorch's reference scripts: ``model`` = ``state_dict``,
``lr_scheduler`` = ``training_state.scheduler``, ``args`` = ``config``.) The
data order needs no state of its own: crops are a pure function of the stream
position, ``iteration x batch_size`` (``sampling.py``); the RNG states of every
process (torch CPU/CUDA, NumPy, Python) are what dropout draws from. A file
without ``training_state`` holds weights only: ``--resume`` refuses it and
names ``model.init_weights``, which loads it.
"""
from __future__ import annotations

import os
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sml.errors import CheckpointError
from sml.train.config import TrainConfig
from sml.train.network import label_classes
from sml.utils import distributed as du


@dataclass
class TrainState:
    """Where a run stands besides its weights and optimizer: what a checkpoint records and a resume restores.

    Every field has its value before the first step (a fresh run's, or the resumed checkpoint's), so a
    checkpoint can be written at any point.
    """

    iteration: int = 0
    loss_avg: float | None = None    # moving average of the loss (factor 0.9); None before the first step
    best_miou: float | None = None
    last_miou: float | None = None   # the latest validation mIoU: the checkpoint's ``mean_iu``

    def add_loss(self, value: float) -> None:
        """Fold one step's loss into the moving average."""
        self.loss_avg = value if self.loss_avg is None else 0.9 * self.loss_avg + 0.1 * value

    def add_miou(self, miou: float) -> None:
        """Record a validation mIoU (the best one is kept too)."""
        self.last_miou = miou
        self.best_miou = miou if self.best_miou is None or miou > self.best_miou else self.best_miou


@dataclass
class Optimization:
    """The optimizer, its LR schedule and the AMP grad scaler (``amp``: whether mixed precision runs)."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp: bool


# ---------------------------------------------------------------- RNG states
def rng_state() -> dict[str, Any]:
    """This process's torch (CPU, CUDA), NumPy and Python RNG states, as tensors and plain values."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [str(np_state[0]), torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "python": [list(random.getstate()[1]), random.getstate()[0], random.getstate()[2]],
    }


def set_rng_state(s: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` recorded."""
    torch.set_rng_state(s["torch"])
    if s.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    n = s["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    p = s["python"]
    random.setstate((p[1], tuple(p[0]), p[2]))


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------- writing
def training_state(state: TrainState, opt: Optimization, cfg: TrainConfig, frames: int,
                   rng: list[dict[str, Any]], world: int) -> dict[str, Any]:
    """The checkpoint's ``training_state`` entry (``rng``: every process's :func:`rng_state`, in rank order)."""
    bs = cfg.data.batch_size
    return {"iteration": state.iteration, "optimizer": opt.optimizer.state_dict(),
            "scheduler": opt.scheduler.state_dict(), "scaler": opt.scaler.state_dict(),
            "sampler": {"seed": cfg.train.seed, "position": state.iteration * bs, "frames": frames},
            "rng": rng, "world_size": world, "batch_size": bs,
            "best_miou": state.best_miou, "loss_avg": state.loss_avg}


def save_training_checkpoint(path: Path, net: nn.Module, state: TrainState, opt: Optimization,
                             cfg: TrainConfig, frames: int) -> None:
    """Write the checkpoint (rank 0); every process must call this (their RNG states are gathered)."""
    rng_all = du.all_gather_object(rng_state())
    if du.rank() != 0:
        return
    from sml.models.checkpoint import save_checkpoint
    it = state.iteration
    save_checkpoint(
        path, net, epoch=it * cfg.data.batch_size // max(1, frames), mean_iu=state.last_miou,
        # num_classes = classes, not output channels (ERFNet's void channel is not one), as sml.models reads it
        iteration=it, arch=cfg.model.arch, num_classes=label_classes(cfg), config=cfg.to_dict(),
        training_state=training_state(state, opt, cfg, frames, rng_all, du.world_size()))


# ---------------------------------------------------------------- reading
def load_resume(resume: str | os.PathLike | bool, out_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint ``--resume`` names (``True``: ``out_dir/last.pth``, None when there is none yet)."""
    path = out_dir / "last.pth" if resume is True else Path(resume)  # type: ignore[arg-type]
    if not path.is_file():
        if resume is True:
            return None   # nothing to resume yet: start fresh (so `--resume` is safe to always pass)
        raise CheckpointError(f"cannot resume: {path} does not exist")
    from sml.models.checkpoint import load_checkpoint
    ckpt = load_checkpoint(path)
    if "training_state" not in ckpt:
        raise CheckpointError(f"{path} holds weights only, no training state; to start from these weights "
                              f"use model.init_weights={path} instead of --resume")
    return path, ckpt


def restore_checkpoint(path: Path, ckpt: dict[str, Any], net: nn.Module, opt: Optimization,
                       cfg: TrainConfig) -> TrainState:
    """Load weights, optimizer, schedule, scaler and this process's RNG state; returns where the run stands.

    With another world size or batch size than the run had, the data order still continues by
    iteration but the RNG states are re-seeded (a warning says so).
    """
    from sml.models.checkpoint import load_into
    load_into(net, ckpt["state_dict"], source=str(path))
    ts = ckpt["training_state"]
    opt.optimizer.load_state_dict(ts["optimizer"])
    opt.scheduler.load_state_dict(ts["scheduler"])
    opt.scaler.load_state_dict(ts["scaler"])
    state = TrainState(int(ts["iteration"]), ts.get("loss_avg"), ts.get("best_miou"), ckpt.get("mean_iu"))
    world, rank, bs = du.world_size(), du.rank(), cfg.data.batch_size
    if ts.get("world_size", world) != world or ts.get("batch_size", bs) != bs:
        warnings.warn(f"resuming with {world} processes / batch {bs} where the run had "
                      f"{ts.get('world_size')} / {ts.get('batch_size')}: the data order continues by "
                      f"iteration, RNG states are re-seeded", stacklevel=3)
        seed_everything(cfg.train.seed + state.iteration * 1000 + rank)
    else:
        set_rng_state(ts["rng"][rank])
    return state
