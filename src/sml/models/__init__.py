"""Segmentation networks behind one contract (``models.md``): built-ins, a zoo, safe loading, inference.

>>> model = sml.models.load("erfnet", weights="erfnet_cityscapes.pth")
>>> logits = model.predict(image)   # uint8 H x W x 3 -> float32 1 x 19 x H x W

``load`` takes a registered name (``list_models()``), a zoo name (``list_zoo()``; weights are
fetched and checked when no path is given) or a file: a checkpoint (its architecture read off
its keys or its ``arch`` entry), a TorchScript file or an ``.onnx`` file. ``wrap`` puts any
``nn.Module`` under the same contract; ``build`` gives a fresh network for training.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from sml.errors import CheckpointError, InputError
from sml.models.checkpoint import load_checkpoint, load_into, save_checkpoint, unwrap_state_dict
from sml.models.contract import CITYSCAPES_CLASSES, IMAGENET_MEAN, IMAGENET_STD, SegmentationModel, wrap
from sml.models.registry import ModelConfig, build, detect_arch, get_model, list_models, register_model
from sml.models.zoo import ZOO, ZooEntry, fetch, list_zoo, locate, register_zoo

__all__ = [
    "load", "build", "wrap", "register_model", "list_models", "list_zoo", "SegmentationModel", "ModelConfig",
    "ZooEntry", "ZOO", "register_zoo", "fetch", "locate", "load_checkpoint", "load_into", "save_checkpoint",
    "CITYSCAPES_CLASSES", "IMAGENET_MEAN", "IMAGENET_STD", "CheckpointError",
]

_CONTRACT_KEYS = ("input_size", "mean", "std", "class_names", "class_channels")


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zips holding compiled code; weight checkpoints hold none."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any("/code/" in n or n.endswith("constants.pkl") for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _looks_like_path(name: str) -> bool:
    return os.sep in name or name.endswith((".pth", ".pt", ".pt2", ".onnx", ".ts", ".pth.tar")) or Path(name).is_file()


def load(name_or_path: str | os.PathLike, weights: str | os.PathLike | None = None,
         device: str | torch.device = "cpu", trust: bool = False, **kw: Any) -> SegmentationModel:
    """A ready :class:`SegmentationModel` (eval mode, on ``device``) from a name or a file.

    ``weights``: a local checkpoint path (overrides the zoo's URL). Without it a zoo entry is
    fetched (``$SML_MIRROR``, ``$SML_CACHE``, download with sha256 check). ``trust=True``
    allows checkpoints that need arbitrary unpickling. ``kw``: ``num_classes``, contract
    overrides (``input_size``, ``mean``, ``std``, ``class_names``, ``class_channels``), and
    builder options.
    """
    name = os.fspath(name_or_path)
    entry = ZOO.get(name)
    if weights is None and entry is None and _looks_like_path(name):
        path = Path(name)
        if not path.is_file():
            raise InputError(f"model file {path} does not exist; give a registered name ({', '.join(list_models())}) "
                             f"or an existing file")
        if path.suffix.lower() in (".onnx", ".pt2") or _is_torchscript(path):
            return wrap(path, device=device, **kw)
        ckpt = load_checkpoint(path, trust=trust)
        arch = ckpt.get("arch") if isinstance(ckpt.get("arch"), str) else detect_arch(unwrap_state_dict(ckpt))
        if arch is None:
            raise CheckpointError(f"cannot tell which architecture {path} holds; name it: "
                                  f"sml.models.load(ARCH, weights='{path}') with ARCH one of {', '.join(list_models())}")
        return _from_checkpoint(arch, ckpt, str(path), device, entry=None, **kw)
    if entry is not None:
        arch = entry.arch
        path = Path(weights) if weights is not None else fetch(name)
    else:
        get_model(name)  # raises with the known names
        if weights is None:
            raise InputError(f"model {name!r} has no published weights; pass weights=PATH (CLI --weights) "
                             f"or use build({name!r}) to train one")
        arch, path = name, Path(weights)
    return _from_checkpoint(arch, load_checkpoint(path, trust=trust), str(path), device, entry=entry, **kw)


def _from_checkpoint(arch: str, ckpt: dict, source: str, device: str | torch.device,
                     entry: ZooEntry | None, **kw: Any) -> SegmentationModel:
    _, config = get_model(arch)
    contract = {k: kw.pop(k) for k in _CONTRACT_KEYS if k in kw}
    sd = unwrap_state_dict(ckpt)
    # Read the class count off the checkpoint; extra channels (ERFNet's void) are not classes.
    outputs = None
    if config.classifier_key and config.classifier_key in sd:
        outputs = int(sd[config.classifier_key].shape[0])
    num_classes = kw.pop("num_classes", None) or ckpt.get("num_classes")
    if num_classes is None:
        num_classes = outputs if outputs is not None else len(config.class_names)
        if config.extra_channels and outputs == len(config.class_names) + config.extra_channels:
            num_classes = len(config.class_names)
    num_classes = int(num_classes)
    if outputs is not None and outputs not in (num_classes, num_classes + config.extra_channels):
        raise CheckpointError(f"{source} has {outputs} output channels, which does not fit num_classes="
                              f"{num_classes}; pass num_classes={outputs}")
    network = build(arch, num_classes=outputs or num_classes, **kw)
    load_into(network, sd, source=source)
    names = contract.pop("class_names", None) or ckpt.get("class_names")
    if names is None and entry is not None and len(entry.class_names) == num_classes:
        names = entry.class_names
    if names is None and len(config.class_names) == num_classes:
        names = config.class_names
    pre = entry if entry is not None else config
    settings = {"input_size": pre.input_size, "mean": pre.mean, "std": pre.std,
                "class_channels": list(range(num_classes)), "cpu_channels_last": config.cpu_channels_last,
                **contract}
    return SegmentationModel(network, name=entry.name if entry else arch, class_names=names, device=device,
                             **settings)
