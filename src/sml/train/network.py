"""The network a training run trains: built from ``model.*``, probed for parameters the loss leaves unused,
its ImageNet trunk checked, its input normalization and output layout."""
from __future__ import annotations

import importlib
import inspect
import warnings
from typing import Any, Callable

import torch
from torch import nn

from sml.errors import InputError
from sml.train.config import TrainConfig
from sml.train.loss import segmentation_loss
from sml.utils import distributed as du

CITYSCAPES_EVAL_CLASSES = 19


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
    set_train_mode(net, cfg.model.freeze_bn)
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


def set_train_mode(net: nn.Module, freeze_bn: bool) -> None:
    """Training mode; with ``freeze_bn`` batch norms stay in eval mode (running statistics, not updated)."""
    net.train()
    if freeze_bn:
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    net._sml_freeze_bn = freeze_bn   # type: ignore[attr-defined]


def bn_frozen(net: nn.Module) -> bool:
    """Whether :func:`set_train_mode` last left ``net``'s batch norms frozen."""
    return bool(getattr(net, "_sml_freeze_bn", False))


def label_classes(cfg: TrainConfig) -> int:
    """Classes the labels hold (what a checkpoint's ``num_classes`` records): not ERFNet's void 20th channel."""
    # ERFNet's 20th channel is void: no label ever has train id 19.
    n = cfg.model.num_classes
    return CITYSCAPES_EVAL_CLASSES if n > CITYSCAPES_EVAL_CLASSES and cfg.data.kind == "cityscapes" else n
