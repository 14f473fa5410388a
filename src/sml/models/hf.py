"""Hugging Face ``transformers`` segmentation models behind a model card (``format: transformers``).

Two kinds of output (models.md): per-pixel class logits (SegFormer, UperNet, DPT, ...; the
model's ``logits``), and mask classification (Mask2Former, MaskFormer; ``output.kind:
mask-classification``), whose ``class_queries_logits`` and ``masks_queries_logits`` are returned
whole, as the pair every mask-classification network gives: the per-pixel class scores and the
per-query scores are formed from them as sml-algorithm.md section 8 says (mask logits upsampled
to the input size first; not transformers' own post-processing, which passes through 384 x 384).
Mean, std, size and class names come from the model's image processor and ``id2label`` unless the
card states them. ``--model hf:ID_OR_FOLDER`` is a card with only ``source`` (:func:`shorthand`).
Needs the ``[hf]`` extra.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sml.errors import InputError
from sml.models.config import CITYSCAPES_CLASSES, ModelConfig
from sml.models.files import _where


#: universal-segmentation model types whose output is class_queries_logits + masks_queries_logits
_MASK_MODELS = ("mask2former", "maskformer", "eomt", "eomt_dinov3")


class SemanticLogits(nn.Module):
    """A transformers semantic-segmentation model as ``pixel_values -> logits`` (B x K x h x w)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


class MaskClassificationOutputs(nn.Module):
    """A mask-classification model as ``pixel_values -> (class logits B x Q x (K+1), mask logits B x Q x h x w)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(pixel_values=x)
        return out.class_queries_logits, out.masks_queries_logits


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise InputError("format: transformers needs the transformers package: pip install "
                         "'standardized-max-logits[hf]'") from None
    return transformers


def _processor_fields(proc: Any, where: str) -> dict[str, Any]:
    """Card input fields from an image processor (only what it states)."""
    out: dict[str, Any] = {"channel_order": "RGB"}  # transformers' processors take RGB images
    if getattr(proc, "do_rescale", True):
        factor = float(getattr(proc, "rescale_factor", 1 / 255))
        if abs(factor - 1 / 255) > 1e-9:
            raise InputError(f"{where}: the image processor rescales by {factor}, not 1/255; state input.scale, "
                             f"mean and std in the card")
        out["scale"] = 1
    else:
        out["scale"] = 255
    if getattr(proc, "do_normalize", False):
        out["mean"] = tuple(float(v) for v in proc.image_mean)
        out["std"] = tuple(float(v) for v in proc.image_std)
    size = getattr(proc, "size", None)
    if not getattr(proc, "do_resize", True):
        out["input_size"] = None
    elif size is not None:
        get = size.get if hasattr(size, "get") else (lambda k: getattr(size, k, None))
        if get("height") and get("width"):
            out["input_size"] = (int(get("height")), int(get("width")))
    return out


def _network(tf: Any, cfg: ModelConfig, config: Any, where: str) -> tuple[nn.Module, str]:
    """The model of ``cfg.source`` behind an ``nn.Module`` face returning class scores, and its output kind."""
    universal = type(config) in tf.MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING
    kind = "mask-classification" if universal else "logits"
    if "kind" in cfg.given and cfg.kind != kind:
        raise InputError(f"{where}: field output.kind says {cfg.kind} but {cfg.source} is a {config.model_type} "
                         f"model, whose output is {kind}. Set output.kind: {kind} or leave it out.")
    if universal:
        if config.model_type not in _MASK_MODELS:
            raise InputError(f"{where}: {cfg.source} is a {config.model_type} model, whose output sml cannot read "
                             f"yet (OneFormer needs text task inputs); supported mask-classification models: "
                             f"{', '.join(_MASK_MODELS)}")
        return MaskClassificationOutputs(tf.AutoModelForUniversalSegmentation.from_pretrained(cfg.source)), kind
    try:
        model = tf.AutoModelForSemanticSegmentation.from_pretrained(cfg.source)
    except ValueError as exc:
        raise InputError(f"{where}: {cfg.source} ({config.model_type}) is not a semantic-segmentation model "
                         f"({str(exc).splitlines()[0][:200]})") from None
    return SemanticLogits(model), kind


def _model_fields(tf: Any, cfg: ModelConfig, config: Any, where: str) -> dict[str, Any]:
    """Card fields from the image processor (if any) and ``id2label``."""
    filled: dict[str, Any] = {}
    try:
        proc = tf.AutoImageProcessor.from_pretrained(cfg.source)
    except (OSError, ValueError):
        proc = None
    if proc is not None:
        filled.update(_processor_fields(proc, where))
    id2label = getattr(config, "id2label", None) or {}
    if id2label:
        names = tuple(str(id2label[i]) for i in sorted(id2label, key=int))
        same = [n.lower() for n in names] == list(CITYSCAPES_CLASSES)
        filled["class_names"] = CITYSCAPES_CLASSES if same else names
    return filled


#: ``--model hf:ID_OR_FOLDER``: a model card with ``format: transformers`` and only ``source`` (timm's ``hf-hub:``)
SHORTHAND = "hf:"  # sml.models.HF_SHORTHAND, which load() checks without importing this module


def shorthand(spec: str) -> ModelConfig:
    """The card ``hf:ID_OR_FOLDER`` stands for: ``format: transformers`` and ``source``, a folder written by
    ``save_pretrained`` (relative to the working directory) when one exists there, else a hub id. Named
    after the folder or the hub id; every other field comes from the model (:func:`complete_config`)."""
    source = spec[len(SHORTHAND):].strip() if spec.startswith(SHORTHAND) else ""
    if not source:
        raise InputError(f"--model {spec!r}: give a transformers hub id or a folder after '{SHORTHAND}', e.g. "
                         f"hf:facebook/mask2former-swin-large-cityscapes-semantic (a card with format: "
                         f"transformers and that source)")
    local = Path(source).expanduser()
    if local.exists():
        return ModelConfig(name=local.resolve().name, format="transformers", source=str(local.resolve()))
    return ModelConfig(name=source, format="transformers", source=source)


def complete_config(cfg: ModelConfig) -> tuple[nn.Module, ModelConfig]:
    """Load the model of a ``format: transformers`` card and fill the fields the card leaves out."""
    tf = _transformers()
    where = _where(cfg)
    logging.getLogger("transformers").setLevel(logging.ERROR)  # torchvision-fallback notices
    try:
        config = tf.AutoConfig.from_pretrained(cfg.source)
    except (OSError, ValueError) as exc:
        raise InputError(f"{where}: source {cfg.source!r} is neither a folder with a transformers model nor a "
                         f"hub id available here ({str(exc).splitlines()[0][:200]})") from None
    network, kind = _network(tf, cfg, config, where)
    filled = {"kind": kind, **_model_fields(tf, cfg, config, where)}
    filled = {k: v for k, v in filled.items() if k not in cfg.given}
    missing = [f for f in ("input_size", "scale") if f not in cfg.given and f not in filled]
    if missing:
        what = {"input_size": "input.size (its image processor resizes by shortest edge or is missing: give the "
                              "[H, W] to run at, or null)", "scale": "input.scale"}
        raise InputError(f"{where}: {cfg.source} does not state {', '.join(what[m] for m in missing)}; add "
                         f"{'them' if len(missing) > 1 else 'it'} to the card")
    return network.eval(), cfg.replace(**filled)
