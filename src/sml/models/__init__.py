"""Segmentation networks behind one contract (``models.md``): built-ins, model cards, a zoo, safe loading.

>>> model = sml.models.load("erfnet", weights="erfnet_cityscapes.pth")
>>> model = sml.models.load("my_network.yaml")   # a model card: TorchScript, ONNX, .pt2, python, transformers
>>> logits = model.predict(image)   # uint8 H x W x 3 -> float32 1 x 19 x H x W

``load`` takes a registered name (``arch`` or ``arch.tag``, see ``list_models()`` and
``list_pretrained()``; weights from ``weights=``, a mirror or the cache), a model card
(``.yaml``; ``hf:ID_OR_FOLDER`` is a ``format: transformers`` card with only ``source``), or a
checkpoint (its architecture read off its keys or its ``arch`` entry). A
network file (TorchScript, ONNX, ``.pt2``) needs a card, or :func:`wrap` in Python, which puts
any ``nn.Module`` or network file under the same contract; ``build`` gives a fresh network.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from sml.errors import CheckpointError, InputError
from sml.models.card import card_template, is_card, load_card, needs_card_message, read_card
from sml.models.checkpoint import load_checkpoint, load_into, save_checkpoint, unwrap_state_dict
from sml.models.config import CITYSCAPES_CLASSES, IMAGENET_MEAN, IMAGENET_STD, ModelConfig
from sml.models.contract import SegmentationModel, wrap
from sml.models.files import file_format
from sml.models.registry import (Architecture, build, detect_arch, get_architecture, get_config, get_model,
                                 is_registered, list_models, list_pretrained, register_model, register_pretrained)
from sml.models.zoo import fetch, list_zoo, locate

__all__ = [
    "load", "build", "wrap", "register_model", "register_pretrained", "list_models", "list_pretrained",
    "list_zoo", "get_config", "get_model", "SegmentationModel", "ModelConfig", "Architecture", "fetch", "locate",
    "read_card", "load_card", "card_template", "load_checkpoint", "load_into", "save_checkpoint",
    "CITYSCAPES_CLASSES", "IMAGENET_MEAN", "IMAGENET_STD", "CheckpointError",
]

_CONTRACT_KEYS = ("input_size", "mean", "std", "class_names", "class_channels")


def _looks_like_path(name: str) -> bool:
    return os.sep in name or name.endswith((".pth", ".pt", ".pt2", ".onnx", ".ts", ".pth.tar")) or Path(name).is_file()


def load(name_or_path: str | os.PathLike | ModelConfig, weights: str | os.PathLike | None = None,
         device: str | torch.device = "cpu", trust: bool = False, **kw: Any) -> SegmentationModel:
    """A ready :class:`SegmentationModel` (eval mode, on ``device``) from a name, a card or a checkpoint.

    ``weights``: a local checkpoint for a registered name (else the zoo's mirror/cache/URL, sha256
    checked). ``trust=True`` allows checkpoints that need arbitrary unpickling. ``kw``:
    ``num_classes``, contract overrides (``input_size``, ``mean``, ``std``, ``class_names``,
    ``class_channels``) and builder options, for registered networks.
    """
    if isinstance(name_or_path, ModelConfig) and name_or_path.format != "builtin":
        return load_card(name_or_path, device=device)
    name = name_or_path.name if isinstance(name_or_path, ModelConfig) else os.fspath(name_or_path)
    if is_card(name) or name.startswith(HF_SHORTHAND):
        if weights is not None or kw:
            raise InputError(_card_says_weights(name, kw))
        return load_card(_card(name), device=device)
    if isinstance(name_or_path, ModelConfig) or is_registered(name):
        cfg = name_or_path if isinstance(name_or_path, ModelConfig) else get_config(name)
        if weights is not None:
            path = Path(weights)
        elif cfg.filename:
            path = fetch(cfg.name)
        else:
            raise InputError(f"model {name!r} has no published weights; pass weights=PATH (CLI --weights) "
                             f"or use build({cfg.arch!r}) to train one")
        return _from_checkpoint(cfg, load_checkpoint(path, trust=trust), str(path), device, **kw)
    if weights is None and _looks_like_path(name):
        path = Path(name)
        if not path.is_file():
            raise InputError(f"model file {path} does not exist; give a registered name "
                             f"({', '.join(list_models())}), a model card (.yaml) or an existing checkpoint")
        fmt = file_format(path)
        if fmt is not None:
            raise InputError(needs_card_message(path, fmt))
        ckpt = load_checkpoint(path, trust=trust)
        arch = ckpt.get("arch") if isinstance(ckpt.get("arch"), str) else detect_arch(unwrap_state_dict(ckpt))
        if arch is None:
            raise CheckpointError(f"cannot tell which architecture {path} holds; name it: "
                                  f"sml.models.load(ARCH, weights='{path}') with ARCH one of {', '.join(list_models())}")
        return _from_checkpoint(get_config(arch), ckpt, str(path), device, **kw)
    get_config(name)  # raises naming the known names
    raise AssertionError("unreachable")  # pragma: no cover


HF_SHORTHAND = "hf:"  # --model hf:ID_OR_FOLDER: a transformers card with only its source (sml.models.hf.shorthand)


def _card(name: str) -> str | ModelConfig:
    """A card's path, or the configuration ``hf:ID_OR_FOLDER`` stands for."""
    if name.startswith(HF_SHORTHAND):
        from sml.models.hf import shorthand

        return shorthand(name)
    return name


def _card_says_weights(name: str, kw: dict[str, Any]) -> str:
    if name.startswith(HF_SHORTHAND):
        return (f"--model {name} is a transformers model with its own weights; drop --weights / "
                f"{', '.join(kw) or 'weights'} (write a card with format: transformers to set fields)")
    return (f"model card {name} says where its network and weights are; drop --weights / "
            f"{', '.join(kw) or 'weights'} (edit the card instead)")


def _from_checkpoint(cfg: ModelConfig, ckpt: dict, source: str, device: str | torch.device,
                     **kw: Any) -> SegmentationModel:
    arch = get_architecture(cfg.arch)
    contract = {k: kw.pop(k) for k in _CONTRACT_KEYS if k in kw}
    sd = unwrap_state_dict(ckpt)
    # Read the class count off the checkpoint; extra channels (ERFNet's void) are not classes.
    outputs = None
    if arch.classifier_key and arch.classifier_key in sd:
        outputs = int(sd[arch.classifier_key].shape[0])
    num_classes = kw.pop("num_classes", None) or ckpt.get("num_classes")
    if num_classes is None:
        num_classes = outputs if outputs is not None else len(cfg.class_names)
        if arch.extra_channels and outputs == len(cfg.class_names) + arch.extra_channels:
            num_classes = len(cfg.class_names)
    num_classes = int(num_classes)
    if outputs is not None and outputs not in (num_classes, num_classes + arch.extra_channels):
        raise CheckpointError(f"{source} has {outputs} output channels, which does not fit num_classes="
                              f"{num_classes}; pass num_classes={outputs}")
    network = build(arch.name, num_classes=outputs or num_classes, **kw)
    load_into(network, sd, source=source)
    names = contract.pop("class_names", None) or ckpt.get("class_names")
    if names is None and len(cfg.class_names) == num_classes:
        names = cfg.class_names
    settings = {"input_size": cfg.input_size, "mean": cfg.mean, "std": cfg.std,
                "class_channels": list(range(num_classes)), "cpu_channels_last": arch.cpu_channels_last,
                "channel_order": cfg.channel_order, "scale": cfg.scale, "resize": cfg.resize,
                "upsample": cfg.upsample, **contract}
    return SegmentationModel(network, name=arch.name, class_names=names,
                             device=device, **settings).identify(source)
