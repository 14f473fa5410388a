"""The first layer of :mod:`sml.models`: what describes a network, before anything is opened.

:class:`ModelConfig` (one per registered ``arch.tag``, one per model card) and the class and
normalisation tables the configurations and the contract share. Imports nothing of ``sml.models``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sml.data.cityscapes import cityscapes_tables

__all__ = ["CITYSCAPES_CLASSES", "IMAGENET_MEAN", "IMAGENET_STD", "FORMATS", "ModelConfig"]

#: the 19 Cityscapes train-id class names, from the official cityscapesscripts table
CITYSCAPES_CLASSES: tuple[str, ...] = cityscapes_tables()[2]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

FORMATS = ("builtin", "torchscript", "onnx", "export", "python", "transformers")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to obtain a network and use it correctly (models.md, "the model card").

    ``name``: ``arch.tag`` for registered configurations, the card's ``name`` otherwise.
    ``format``: ``builtin`` (``arch`` built by the registry, weights from ``weights``/``urls``)
    or a card format. ``mean``/``std`` are in ``channel_order`` and ``scale`` units (None: no
    normalization). ``class_channels`` None means all output channels. ``urls``/``filename``/
    ``sha256``: where the zoo fetches the weights and the checksum of exactly that file.
    """

    name: str
    format: str = "builtin"
    arch: str | None = None
    file: str | None = None
    entry: str | None = None
    weights: str | None = None
    source: str | None = None
    filename: str | None = None
    urls: tuple[str, ...] = ()
    sha256: str | None = None
    input_size: tuple[int, int] | None = None
    channel_order: str = "RGB"
    scale: float = 1.0
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    resize: str = "bilinear-antialias"
    kind: str = "logits"
    class_names: tuple[str, ...] = CITYSCAPES_CLASSES
    class_channels: tuple[int, ...] | None = None
    upsample: str = "bilinear"
    licence: str = ""
    homepage: str = ""
    notes: str = ""
    stats_mean: tuple[float, ...] | None = None
    stats_var: tuple[float, ...] | None = None
    #: the card file this configuration was read from (relative paths are relative to it)
    card: str | None = None
    #: the input/output fields the card states (transformers fills the others from the model)
    given: tuple[str, ...] = ()

    @property
    def tag(self) -> str:
        """The part after ``arch.`` of a registered name ("" for cards)."""
        return self.name.split(".", 1)[1] if "." in self.name and self.format == "builtin" else ""

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with ``changes`` applied."""
        return replace(self, **changes)

    def reference_statistics(self) -> dict | None:
        """The published class statistics in the ``stats.json`` schema (no counts), or None.

        ``sml.ClassStatistics.from_dict(config.reference_statistics())`` turns them into statistics.
        """
        if self.stats_mean is None:
            return None
        n = len(self.stats_mean)
        return {"num_classes": n, "class_names": list(self.class_names), "count": [None] * n,
                "mean": list(self.stats_mean), "var": list(self.stats_var), "model": self.name,
                "data": "published with the reference implementation"}
