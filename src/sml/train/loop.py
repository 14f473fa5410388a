"""The training loop: one process or many (torchrun), CPU or CUDA, exactly resumable.

Shaped like PyTorch's reference training scripts: :func:`setup` builds the
network, optimizer, LR schedule, grad scaler and data (and restores a
checkpoint for ``--resume``), :func:`train_one_step` is one SGD step,
:func:`validate` the periodic evaluation, :func:`save` the checkpoint (a plain
dict, see :mod:`sml.train.checkpoint`), and :func:`train` runs them. A resumed
run computes exactly what the uninterrupted run would have (same weights, bit
for bit, on the CPU with ``train.deterministic``).
"""
from __future__ import annotations

import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sml.errors import InputError
from sml.train.checkpoint import (Optimization, TrainState, load_resume, restore_checkpoint,
                                  save_training_checkpoint, seed_everything)
from sml.train.config import TrainConfig, TrainLoopConfig
from sml.train.evaluate import evaluate_miou
from sml.train.frames import Frames, cityscapes_frames
from sml.train.loss import global_sum, segmentation_loss
from sml.train.metrics_log import MetricsLog
from sml.train.network import (build_network, check_trunk, label_classes, normalize_mode, set_train_mode,
                               split_output, takes_trunk, unused_parameters)
from sml.train.sampling import CropStream, StreamBatchSampler, TrainSet, class_centroids
from sml.train.syncbn import convert_sync_batchnorm
from sml.train.transforms import normalize_batch
from sml.utils import atomic
from sml.utils import distributed as du
from sml.utils.progress import progress

# build_network, check_trunk, takes_trunk and unused_parameters live in sml.train.network; importable here too
__all__ = ["train", "setup", "train_one_step", "validate", "save", "Session", "Runtime", "resolve_device",
           "describe_frames", "build_network", "check_trunk", "takes_trunk", "unused_parameters"]


@dataclass
class Runtime:
    """Where this process runs: device, process group, rank and world size, output folder."""

    device: torch.device
    distributed: bool
    rank: int
    world: int
    out_dir: Path


@dataclass
class Session:
    """Everything a step, a validation and a checkpoint need; built once by :func:`setup`."""

    cfg: TrainConfig
    rt: Runtime
    net: nn.Module                 # the network whose weights are saved
    model: nn.Module               # what a step calls: ``net`` or its DDP wrapper
    opt: Optimization
    state: TrainState
    frames: Frames
    loader: torch.utils.data.DataLoader
    val_frames: Frames | None
    norm: str
    stop: int                      # the last iteration of this invocation (``train.stop_at`` or ``optim.iterations``)
    log: MetricsLog | None         # rank 0 only

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


# ---------------------------------------------------------------- main entry
def train(cfg: TrainConfig, resume: str | os.PathLike | bool | None = None,
          network: nn.Module | None = None) -> dict[str, Any]:
    """Run (or resume) training as ``cfg`` says; returns a summary dict (iteration, loss, last val mIoU).

    ``network`` overrides ``model.arch`` (an ``nn.Module`` to train; tests use a tiny one).
    Under torchrun every process calls this; rank 0 writes the files. ``train.out_dir`` is a run
    folder (``sml.utils.run_folder``): new, empty or an earlier training's, whose files alone are replaced.
    """
    from sml.utils.run_folder import RunFolder

    cfg.validate()
    du.init_from_env(resolve_device(cfg.train.device))   # the folder is claimed by rank 0 alone
    with RunFolder(cfg.train.out_dir, "train"):
        return _train(cfg, resume, network)


def _train(cfg: TrainConfig, resume: str | os.PathLike | bool | None, network: nn.Module | None) -> dict[str, Any]:
    """The loop: :func:`setup`, then per batch :func:`train_one_step`, :func:`validate` and :func:`save`."""
    s = setup(cfg, resume, network)
    start, t0 = s.state.iteration, time.time()
    for images, labels in progress(s.loader, total=s.stop, desc="train", unit="it", initial=start):
        lv = train_one_step(s, images, labels, first=s.state.iteration == start)
        s.state.iteration += 1
        it = s.state.iteration
        if not math.isfinite(lv) and not s.opt.amp:
            raise InputError(f"loss became {lv} at iteration {it}; lower optim.lr or check the labels")
        s.state.add_loss(lv)
        if s.log is not None and (it % cfg.train.log_every == 0 or it == s.stop):
            log_step(s, lv, time.time() - t0, start)
        if s.val_frames is not None and cfg.train.val_every and (it % cfg.train.val_every == 0
                                                                or it == cfg.optim.iterations):
            validate(s)
        if it % cfg.train.checkpoint_every == 0 or it == s.stop:
            save(s)
    s.close()
    du.barrier()
    return {"iteration": s.state.iteration, "loss": s.state.loss_avg, "val_miou": s.state.last_miou,
            "out_dir": str(s.rt.out_dir), "checkpoint": str(s.rt.out_dir / "last.pth")}


def setup(cfg: TrainConfig, resume: str | os.PathLike | bool | None = None,
          network: nn.Module | None = None) -> Session:
    """Check ``cfg``, build network, optimizer, schedule and data, restore ``resume``; nothing trained yet."""
    cfg.validate()
    rt = setup_runtime(cfg.train)
    resumed = load_resume(resume, rt.out_dir) if resume else None
    if resumed is None and network is None:
        check_trunk(cfg)
    # the data before the network: a wrong data.root fails before the (slow) build
    frames = cityscapes_frames(cfg.data.root, cfg.data.train_split)
    if rt.rank == 0:
        print(describe_frames(frames, cfg.optim.iterations, cfg.data.batch_size), file=sys.stderr)
    net = prepare_network(cfg, rt, network)
    opt = build_optimization(cfg, net, rt.device)
    if resumed is not None:
        state = restore_checkpoint(*resumed, net, opt, cfg)
        if rt.rank == 0:
            print(f"resumed from {resumed[0]} at iteration {state.iteration}", file=sys.stderr)
    else:
        state = TrainState()
        # Different dropout masks per rank (as independent GPUs would have), reproducible.
        seed_everything(cfg.train.seed + 7919 * rt.rank)
    model = nn.parallel.DistributedDataParallel(
        net, device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
        broadcast_buffers=False) if rt.distributed else net
    stop = cfg.optim.iterations if cfg.train.stop_at is None else min(cfg.optim.iterations, cfg.train.stop_at)
    loader = build_loader(cfg, frames, rt, state.iteration, stop)
    val_frames = validation_frames(cfg, rt.rank) if cfg.train.val_every else None
    log = MetricsLog(rt.out_dir, state.iteration) if rt.rank == 0 else None
    if rt.rank == 0:
        atomic.write_text(rt.out_dir / "config.yaml", cfg.to_yaml())
    return Session(cfg, rt, net, model, opt, state, frames, loader, val_frames, normalize_mode(cfg), stop, log)


# ---------------------------------------------------------------- one step, validation, checkpoint
def train_one_step(s: Session, images: torch.Tensor, labels: torch.Tensor, first: bool = False) -> float:
    """One SGD step on a batch; returns its loss, the mean over every process's pixels.

    ``first``: this invocation's first step (a missing auxiliary output is reported once, on rank 0).
    """
    d, o, rt = s.cfg.data, s.cfg.optim, s.rt
    images = normalize_batch(images.to(rt.device, non_blocking=True), s.norm)
    labels = labels.to(rt.device, non_blocking=True)
    valid_total = global_sum((labels != d.ignore_index).sum()) if rt.distributed else None
    with torch.autocast(device_type=rt.device.type, dtype=torch.float16, enabled=s.opt.amp):
        main, aux = split_output(s.model(images))
    if aux is None and o.aux_weight > 0 and first and rt.rank == 0:
        warnings.warn(f"{s.cfg.model.arch} returned no auxiliary output; optim.aux_weight ignored", stacklevel=3)
    loss = segmentation_loss(main, aux, labels, o.aux_weight, d.ignore_index, valid_total)
    # DDP averages gradients; the loss is already a global mean
    loss_for_grad = loss * rt.world if rt.distributed else loss
    opt = s.opt
    opt.optimizer.zero_grad(set_to_none=True)
    opt.scaler.scale(loss_for_grad).backward()
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    opt.scheduler.step()
    # each process's loss is its share of the global mean (divided by the global valid count): their sum
    return float(global_sum(loss.detach())) if rt.distributed else float(loss.detach())


def log_step(s: Session, loss: float, elapsed: float, start: int) -> None:
    """One ``metrics.jsonl`` row: this step's loss, the moving average, the LR, time and ETA."""
    it = s.state.iteration
    eta = elapsed / (it - start) * (s.cfg.optim.iterations - it)
    assert s.log is not None
    s.log.log({"iteration": it, "loss": loss, "loss_avg": s.state.loss_avg,
               "lr": s.opt.scheduler.get_last_lr()[0], "elapsed_s": round(elapsed, 2), "eta_s": round(eta, 1)})


def validate(s: Session) -> dict[str, Any]:
    """Evaluate on the validation frames, record the mIoU in the state and the log; returns the result."""
    d = s.cfg.data
    assert s.val_frames is not None
    res = evaluate_miou(s.net, s.val_frames, s.rt.device, s.norm, s.cfg.model.num_classes, d.val_size,
                        d.val_max_frames, d.ignore_index)
    s.state.add_miou(res["miou"])
    if s.log is not None:
        s.log.log({"iteration": s.state.iteration, "val_miou": res["miou"], "val_pixel_acc": res["pixel_acc"]})
    return res


def save(s: Session) -> None:
    """Write ``last.pth`` (and ``iter_<n>.pth`` every ``train.keep_every``); every process calls this."""
    it, out = s.state.iteration, s.rt.out_dir
    save_training_checkpoint(out / "last.pth", s.net, s.state, s.opt, s.cfg, len(s.frames))
    keep = s.cfg.train.keep_every
    if keep and it % keep == 0 and s.rt.rank == 0:
        atomic.write_bytes(out / f"iter_{it:07d}.pth", (out / "last.pth").read_bytes())


# ---------------------------------------------------------------- set-up pieces
def resolve_device(name: str) -> torch.device:
    """``auto`` = this process's CUDA device when there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r} requested but CUDA is not available; use train.device=cpu")
        if dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev


def setup_runtime(t: TrainLoopConfig) -> Runtime:
    """Device, process group (under torchrun), output folder, threads and determinism settings."""
    device = resolve_device(t.device)
    distributed = du.init_from_env(device)
    if distributed and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    rt = Runtime(device, distributed, du.rank(), du.world_size(), Path(t.out_dir))
    if rt.rank == 0:
        rt.out_dir.mkdir(parents=True, exist_ok=True)
    if t.threads:
        torch.set_num_threads(t.threads)
    if t.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return rt


def prepare_network(cfg: TrainConfig, rt: Runtime, network: nn.Module | None) -> nn.Module:
    """The network on its device, in training mode: SyncBN under torchrun, parameters the loss ignores frozen."""
    # Same seed on every rank: identical initial weights (DDP also broadcasts them).
    seed_everything(cfg.train.seed)
    net = network if network is not None else build_network(cfg)
    net.to(rt.device)
    unused = set(unused_parameters(net, cfg, rt.device))
    if rt.distributed and cfg.model.sync_bn:
        net = convert_sync_batchnorm(net, rt.device)
        net.to(rt.device)
    for name, p in net.named_parameters():
        if name in unused:
            p.requires_grad_(False)
    if unused and rt.rank == 0:
        print(f"not trained (the training loss does not use them): {', '.join(sorted(unused))}", file=sys.stderr)
    set_train_mode(net, cfg.model.freeze_bn)
    return net


def build_optimization(cfg: TrainConfig, net: nn.Module, device: torch.device) -> Optimization:
    """SGD on the trainable parameters, the poly LR schedule, the grad scaler (AMP on CUDA only)."""
    o = cfg.optim
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                                nesterov=o.nesterov)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: max(0.0, 1.0 - it / o.iterations) ** o.poly_power)
    amp = bool(cfg.train.amp and device.type == "cuda")
    return Optimization(optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=amp), amp)


def build_loader(cfg: TrainConfig, frames: Frames, rt: Runtime, start: int, stop: int) -> torch.utils.data.DataLoader:
    """Batches of iterations ``start + 1 .. stop``: this process's share of the crop stream."""
    d, t, cu = cfg.data, cfg.train, cfg.data.class_uniform
    centroids = class_centroids(frames, cu.tile, label_classes(cfg), cu.cache, rt.out_dir) if cu.share > 0 else None
    stream = CropStream(len(frames), centroids, cu.share, t.seed)
    sampler = StreamBatchSampler(start, stop, d.batch_size, rt.rank, rt.world)
    return torch.utils.data.DataLoader(
        TrainSet(frames, stream, d, t.seed), batch_sampler=sampler, num_workers=d.num_workers,
        pin_memory=rt.device.type == "cuda", persistent_workers=False,
        # its own generator: creating the loader's iterator must not advance the global torch RNG,
        # or a resumed run's dropout masks would differ from an uninterrupted run's
        generator=torch.Generator().manual_seed(t.seed))


def validation_frames(cfg: TrainConfig, rank: int) -> Frames | None:
    """The validation split, or None (with a warning) when the data set has none."""
    try:
        return cityscapes_frames(cfg.data.root, cfg.data.val_split)
    except InputError as exc:
        if rank == 0:
            warnings.warn(f"no validation: {exc}", stacklevel=3)
        return None


def describe_frames(frames: Frames, iterations: int, batch_size: int) -> str:
    """One line: frames found in the split, frames with labels, frames training draws crops from."""
    found = len(frames) + frames.skipped
    line = (f"train data: {found} frames found in {frames.root} ({frames.split}), {len(frames)} with labels, "
            f"{len(frames)} used for training")
    if frames.skipped:
        line += f" ({frames.skipped} without labels skipped)"
    crops = iterations * batch_size
    if crops < len(frames):
        line += (f"; {iterations} iteration{'s' if iterations != 1 else ''} x batch {batch_size} = {crops} "
                 f"crops reach only part of them")
    return line
