"""The training loop: one process or many (torchrun), CPU or CUDA, exactly resumable.

State that a resume restores (all in ``out_dir/last.pth``, written atomically
so a kill leaves either the previous or the new file, never a torn one):
model, optimizer, LR schedule, AMP grad scaler, iteration (= the sampler
position: crops are a pure function of the stream position, see
``sampling.py``), and the RNG states of every process (torch CPU/CUDA, NumPy,
Python), which dropout uses. The checkpoint is in the published layout
(``state_dict`` with ``module.`` keys, ``epoch``, ``mean_iu``) so ``sml eval``
and the model zoo load it directly; the training state sits beside it under
``training_state``.
"""
from __future__ import annotations

import importlib
import json
import math
import os
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sml.errors import CheckpointError, InputError
from sml.train.config import TrainConfig
from sml.train.frames import Frames, cityscapes_frames
from sml.train.sampling import CropStream, StreamBatchSampler, TrainSet, class_centroids
from sml.train.syncbn import convert_sync_batchnorm
from sml.train.transforms import normalize_batch
from sml.utils import atomic
from sml.utils import distributed as du
from sml.utils.progress import progress

CITYSCAPES_EVAL_CLASSES = 19


# ---------------------------------------------------------------- model
def build_network(cfg: TrainConfig) -> nn.Module:
    """The network named by ``model.arch`` (an ``sml.models`` name or ``pkg.module:factory``), initialised."""
    m = cfg.model
    if ":" in m.arch:
        mod_name, _, fn_name = m.arch.partition(":")
        try:
            factory: Callable[..., nn.Module] = getattr(importlib.import_module(mod_name), fn_name)
        except (ImportError, AttributeError) as exc:
            raise InputError(f"model.arch={m.arch!r}: cannot import {fn_name} from {mod_name} ({exc})") from None
        net = factory(num_classes=m.num_classes)
    else:
        net = _build_registered(m.arch, m.num_classes, m.pretrained_backbone)
    if m.init_weights:
        from sml.models.checkpoint import load_checkpoint, load_into
        load_into(net, load_checkpoint(m.init_weights), source=str(m.init_weights))
    return net


def _build_registered(arch: str, num_classes: int, pretrained: str | None) -> nn.Module:
    from sml.models import build

    kw: dict[str, Any] = {"num_classes": num_classes}
    if pretrained:
        kw["pretrained_backbone"] = pretrained
    try:
        net = build(arch, **kw)
    except TypeError:
        if not pretrained:
            raise
        raise InputError(f"model.pretrained_backbone is not supported for {arch!r}") from None
    return getattr(net, "network", net)   # a SegmentationModel wrapper holds the nn.Module


def unused_parameters(net: nn.Module, cfg: TrainConfig, device: torch.device) -> list[str]:
    """Names of trainable parameters the training loss does not depend on (e.g. ERFNet's encoder-only head).

    Found by one forward and backward pass on a small zero batch in training mode,
    with the loss the loop uses (an auxiliary head with ``optim.aux_weight=0`` is
    unused too). Batch-norm buffers and every RNG are left as they were, so the
    probe changes nothing a run (or its resume) computes. DDP requires every
    trainable parameter to receive a gradient; freezing these is exact (SGD skips
    parameters without a gradient) and cheaper than ``find_unused_parameters``.
    """
    h, w = (min(int(v), 64) for v in cfg.data.crop_size)
    params = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    if not params:
        return []
    buffers = {n: b.detach().clone() for n, b in net.named_buffers()}
    was_training = net.training
    _set_train_mode(net, cfg.model.freeze_bn)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            x = torch.zeros(2, 3, h, w, device=device)
            labels = torch.zeros(2, h, w, dtype=torch.long, device=device)
            main, aux = split_output(net(x))
            loss = segmentation_loss(main, aux, labels, cfg.optim.aux_weight, cfg.data.ignore_index)
            grads = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
    finally:
        with torch.no_grad():
            for n, b in net.named_buffers():
                b.copy_(buffers[n])
        if not was_training:
            net.eval()
    return [n for (n, _), g in zip(params, grads) if g is None]


def takes_trunk(arch: str) -> bool:
    """Whether ``arch`` is a registered architecture whose builder takes ``pretrained_backbone`` (DeepLabV3+)."""
    if ":" in arch:
        return False
    import inspect

    from sml.models.registry import get_model
    try:
        builder, _ = get_model(arch)
    except InputError:
        return False
    return "pretrained_backbone" in inspect.signature(builder).parameters


def check_trunk(cfg: TrainConfig) -> None:
    """Warn about (or refuse, per ``model.trunk_required``) a fresh run without the ImageNet trunk."""
    m = cfg.model
    if m.pretrained_backbone or m.init_weights or m.trunk_required == "ignore" or not takes_trunk(m.arch):
        return
    msg = (f"model.pretrained_backbone is not set: {m.arch} will train its trunk from random weights, "
           f"and this recipe's published numbers need the ImageNet-pretrained trunk. Give "
           f"model.pretrained_backbone=/path/to/resnet_imagenet.pth (a local file; nothing is downloaded), "
           f"or model.init_weights=... to fine-tune, or model.trunk_required=ignore to train from scratch on purpose")
    if m.trunk_required == "error":
        raise InputError(msg + " (model.trunk_required=error refuses to start)")
    if du.is_main():
        warnings.warn(msg + " (model.trunk_required=error makes this an error)", stacklevel=3)


def normalize_mode(cfg: TrainConfig) -> str:
    """``imagenet`` or ``none``: DeepLabV3+ and custom factories use ImageNet mean/std, ERFNet [0, 1]."""
    if cfg.model.normalize != "auto":
        return cfg.model.normalize
    return "none" if cfg.model.arch == "erfnet" else "imagenet"


def split_output(out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(main logits, auxiliary logits or None) from a tensor, a (main, aux) tuple or a dict."""
    if isinstance(out, dict):
        return out.get("out", next(iter(out.values()))), out.get("aux")
    if isinstance(out, (tuple, list)):
        return out[0], (out[1] if len(out) > 1 else None)
    return out, None


# ---------------------------------------------------------------- loss
def segmentation_loss(main: torch.Tensor, aux: torch.Tensor | None, labels: torch.Tensor, aux_weight: float,
                      ignore_index: int, valid_total: torch.Tensor | None = None) -> torch.Tensor:
    """Cross entropy (+ ``aux_weight`` x the auxiliary head's, labels resized nearest to its size).

    Each term is a sum over valid pixels divided by ``valid_total`` (this batch's
    count of valid pixels over *all* processes, default: the local count), so
    that averaging gradients over processes gives exactly the global-batch mean.
    """
    def term(logits: torch.Tensor, lab: torch.Tensor, total: torch.Tensor | None) -> torch.Tensor:
        if logits.shape[-2:] != lab.shape[-2:]:
            logits = F.interpolate(logits, size=lab.shape[-2:], mode="bilinear", align_corners=False)
        s = F.cross_entropy(logits.float(), lab, ignore_index=ignore_index, reduction="sum")
        n = total if total is not None else (lab != ignore_index).sum()
        return s / n.clamp_min(1).to(s.dtype)

    loss = term(main, labels, valid_total)
    if aux is not None and aux_weight > 0:
        aux_lab = F.interpolate(labels[:, None].float(), size=aux.shape[-2:], mode="nearest")[:, 0].long()
        aux_total = None
        if valid_total is not None:   # the aux labels have their own global valid count
            aux_total = _global_sum((aux_lab != ignore_index).sum())
        loss = loss + aux_weight * term(aux, aux_lab, aux_total)
    return loss


def _global_sum(t: torch.Tensor) -> torch.Tensor:
    if du.is_distributed():
        t = t.clone()
        torch.distributed.all_reduce(t)
    return t


# ---------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_miou(net: nn.Module, frames: Frames, device: torch.device, normalize: str,
                  num_classes: int, size: list[int] | None = None, max_frames: int | None = None,
                  ignore_index: int = 255, desc: str = "val") -> dict[str, Any]:
    """Mean IoU of ``net`` on ``frames`` (sharded over processes): ``{"miou", "iou", "pixel_acc", "frames"}``.

    Images are resized to ``size`` (h, w) with the normative antialiased bilinear
    resize when given; logits go back to the label size bilinearly.
    """
    was_training = net.training
    net.eval()
    k = min(num_classes, CITYSCAPES_EVAL_CLASSES) if num_classes >= CITYSCAPES_EVAL_CLASSES else num_classes
    conf = torch.zeros(k * k, dtype=torch.int64)
    n = len(frames) if max_frames is None else min(len(frames), max_frames)
    for i in progress(du.shard_indices(n), total=len(range(du.rank(), n, du.world_size())), desc=desc):
        image, labels = frames.load(i)
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float().div(255).to(device)
        if size is not None and tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
        logits, _ = split_output(net(normalize_batch(x, normalize)))
        logits = F.interpolate(logits.float(), size=labels.shape, mode="bilinear", align_corners=False)
        pred = logits[0, :k].argmax(0).cpu().view(-1)
        lab = torch.from_numpy(labels.astype(np.int64)).view(-1)
        ok = lab < k
        conf += torch.bincount(lab[ok] * k + pred[ok], minlength=k * k)
    conf = sum(du.all_gather_object(conf))   # type: ignore[assignment]
    conf = conf.view(k, k).double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
    if was_training:
        _set_train_mode(net, _bn_frozen(net))
    return {"miou": float(np.nanmean(iou.numpy())) if bool((union > 0).any()) else float("nan"),
            "iou": [None if math.isnan(v) else float(v) for v in iou.tolist()],
            "pixel_acc": float(tp.sum() / conf.sum().clamp_min(1)), "frames": n}


# ---------------------------------------------------------------- state
def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [str(np_state[0]), torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "python": [list(random.getstate()[1]), random.getstate()[0], random.getstate()[2]],
    }


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    if s.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    n = s["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    p = s["python"]
    random.setstate((p[1], tuple(p[0]), p[2]))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


class MetricsLog:
    """``metrics.jsonl``: one JSON line per logged step, rewritten atomically; TensorBoard when installed."""

    def __init__(self, out_dir: Path, start: int) -> None:
        self.path = out_dir / "metrics.jsonl"
        self.rows: list[dict[str, Any]] = []
        if start > 0 and self.path.is_file():   # keep the history up to the resume point only
            for line in self.path.read_text().splitlines():
                row = json.loads(line)
                if row.get("iteration", 0) <= start:
                    self.rows.append(row)
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(out_dir / "tensorboard"), purge_step=start + 1 if start else None)
        except Exception:   # tensorboard not installed: the plain log is enough
            self.tb = None

    def log(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        atomic.write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))
        if self.tb is not None:
            for k, v in row.items():
                if k != "iteration" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, row["iteration"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _load_resume(resume: str | os.PathLike | bool, out_dir: Path) -> tuple[Path, dict[str, Any]] | None:
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
    cfg.validate()
    t, d, o = cfg.train, cfg.data, cfg.optim
    device = resolve_device(t.device)
    distributed = du.init_from_env(device)
    if distributed and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    rank, world = du.rank(), du.world_size()
    out_dir = Path(t.out_dir)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    if t.threads:
        torch.set_num_threads(t.threads)
    if t.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    resumed = _load_resume(resume, out_dir) if resume else None
    if resumed is None and network is None:
        check_trunk(cfg)
    # the data before the network: a wrong data.root fails before the (slow) build
    frames = cityscapes_frames(d.root, d.train_split)
    if rank == 0:
        print(describe_frames(frames, o.iterations, d.batch_size), file=sys.stderr)

    # Same seed on every rank: identical initial weights (DDP also broadcasts them).
    _seed_everything(t.seed)
    net = network if network is not None else build_network(cfg)
    net.to(device)
    unused = set(unused_parameters(net, cfg, device))
    if distributed and cfg.model.sync_bn:
        net = convert_sync_batchnorm(net, device)
        net.to(device)
    for name, p in net.named_parameters():
        if name in unused:
            p.requires_grad_(False)
    if unused and rank == 0:
        print(f"not trained (the training loss does not use them): {', '.join(sorted(unused))}", file=sys.stderr)
    _set_train_mode(net, cfg.model.freeze_bn)

    params_decay = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params_decay, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                                nesterov=o.nesterov)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: max(0.0, 1.0 - it / o.iterations) ** o.poly_power)
    amp = bool(t.amp and device.type == "cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    start, best_miou, last_val = 0, None, None
    if resumed is not None:
        path, ckpt = resumed
        from sml.models.checkpoint import load_into
        load_into(net, ckpt["state_dict"], source=str(path))
        ts = ckpt["training_state"]
        optimizer.load_state_dict(ts["optimizer"])
        scheduler.load_state_dict(ts["scheduler"])
        scaler.load_state_dict(ts["scaler"])
        start = int(ts["iteration"])
        best_miou, last_val = ts.get("best_miou"), ckpt.get("mean_iu")
        if ts.get("world_size", world) != world or ts.get("batch_size", d.batch_size) != d.batch_size:
            warnings.warn(f"resuming with {world} processes / batch {d.batch_size} where the run had "
                          f"{ts.get('world_size')} / {ts.get('batch_size')}: the data order continues by "
                          f"iteration, RNG states are re-seeded", stacklevel=2)
            _seed_everything(t.seed + start * 1000 + rank)
        else:
            _set_rng_state(ts["rng"][rank])
        if rank == 0:
            print(f"resumed from {path} at iteration {start}", file=sys.stderr)
    else:
        # Different dropout masks per rank (as independent GPUs would have), reproducible.
        _seed_everything(t.seed + 7919 * rank)

    model = net
    if distributed:
        model = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)

    # data
    cu = d.class_uniform
    centroids = class_centroids(frames, cu.tile, _label_classes(cfg), cu.cache, out_dir) if cu.share > 0 else None
    stream = CropStream(len(frames), centroids, cu.share, t.seed)
    stop = o.iterations if t.stop_at is None else min(o.iterations, t.stop_at)
    sampler = StreamBatchSampler(start, stop, d.batch_size, rank, world)
    loader = torch.utils.data.DataLoader(
        TrainSet(frames, stream, d, t.seed), batch_sampler=sampler, num_workers=d.num_workers,
        pin_memory=device.type == "cuda", persistent_workers=False,
        # its own generator: creating the loader's iterator must not advance the global torch RNG,
        # or a resumed run's dropout masks would differ from an uninterrupted run's
        generator=torch.Generator().manual_seed(t.seed))
    val_frames = None
    if t.val_every:
        try:
            val_frames = cityscapes_frames(d.root, d.val_split)
        except InputError as exc:
            if rank == 0:
                warnings.warn(f"no validation: {exc}", stacklevel=2)
    norm = normalize_mode(cfg)
    log = MetricsLog(out_dir, start) if rank == 0 else None
    if rank == 0:
        atomic.write_text(out_dir / "config.yaml", cfg.to_yaml())

    def save(it: int, path: Path) -> None:
        rng_all = du.all_gather_object(_rng_state())
        if rank != 0:
            return
        from sml.models.checkpoint import save_checkpoint
        save_checkpoint(
            path, net, epoch=it * d.batch_size // max(1, len(frames)), mean_iu=last_val,
            # num_classes = classes, not output channels (ERFNet's void channel is not one), as sml.models reads it
            iteration=it, arch=cfg.model.arch, num_classes=_label_classes(cfg), config=cfg.to_dict(),
            training_state={"iteration": it, "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                            "sampler": {"seed": t.seed, "position": it * d.batch_size, "frames": len(frames)},
                            "rng": rng_all, "world_size": world, "batch_size": d.batch_size,
                            "best_miou": best_miou, "loss_avg": loss_ema})

    it, t0 = start, time.time()
    loss_ema = resumed[1]["training_state"].get("loss_avg") if resumed is not None else None
    warned_aux = False
    bar = progress(loader, total=stop, desc="train", unit="it", initial=start)
    for images, labels in bar:
        images = normalize_batch(images.to(device, non_blocking=True), norm)
        labels = labels.to(device, non_blocking=True)
        valid_total = _global_sum((labels != d.ignore_index).sum()) if distributed else None
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            main, aux = split_output(model(images))
        if aux is None and o.aux_weight > 0 and not warned_aux and rank == 0:
            warnings.warn(f"{cfg.model.arch} returned no auxiliary output; optim.aux_weight ignored", stacklevel=2)
        warned_aux = True
        loss = segmentation_loss(main, aux, labels, o.aux_weight, d.ignore_index, valid_total)
        if distributed:
            loss_for_grad = loss * world   # DDP averages gradients; the loss is already a global mean
        else:
            loss_for_grad = loss
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss_for_grad).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        it += 1
        # each process's loss is its share of the global mean (divided by the global valid count): their sum
        lv = float(_global_sum(loss.detach())) if distributed else float(loss.detach())
        if not math.isfinite(lv) and not amp:
            raise InputError(f"loss became {lv} at iteration {it}; lower optim.lr or check the labels")
        loss_ema = lv if loss_ema is None else 0.9 * loss_ema + 0.1 * lv
        if log is not None and (it % t.log_every == 0 or it == stop):
            el = time.time() - t0
            eta = el / (it - start) * (o.iterations - it)
            log.log({"iteration": it, "loss": lv, "loss_avg": loss_ema, "lr": scheduler.get_last_lr()[0],
                     "elapsed_s": round(el, 2), "eta_s": round(eta, 1)})
        if t.val_every and val_frames is not None and (it % t.val_every == 0 or it == o.iterations):
            res = evaluate_miou(net, val_frames, device, norm, cfg.model.num_classes, d.val_size,
                                d.val_max_frames, d.ignore_index)
            last_val = res["miou"]
            best_miou = last_val if best_miou is None or last_val > best_miou else best_miou
            if log is not None:
                log.log({"iteration": it, "val_miou": last_val, "val_pixel_acc": res["pixel_acc"]})
        if it % t.checkpoint_every == 0 or it == stop:
            save(it, out_dir / "last.pth")
            if t.keep_every and it % t.keep_every == 0 and rank == 0:
                atomic.write_bytes(out_dir / f"iter_{it:07d}.pth", (out_dir / "last.pth").read_bytes())
    if log is not None:
        log.close()
    du.barrier()
    return {"iteration": it, "loss": loss_ema, "val_miou": last_val, "out_dir": str(out_dir),
            "checkpoint": str(out_dir / "last.pth")}


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


def _set_train_mode(net: nn.Module, freeze_bn: bool) -> None:
    """Training mode; with ``freeze_bn`` batch norms stay in eval mode (running statistics, not updated)."""
    net.train()
    if freeze_bn:
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    net._sml_freeze_bn = freeze_bn   # type: ignore[attr-defined]


def _bn_frozen(net: nn.Module) -> bool:
    return bool(getattr(net, "_sml_freeze_bn", False))


def _label_classes(cfg: TrainConfig) -> int:
    # ERFNet's 20th channel is void: no label ever has train id 19.
    n = cfg.model.num_classes
    return CITYSCAPES_EVAL_CLASSES if n > CITYSCAPES_EVAL_CLASSES and cfg.data.kind == "cityscapes" else n
