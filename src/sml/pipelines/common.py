"""Pieces every pipeline uses: opening the model and the data, one forward pass, frame selection."""
from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from sml.errors import InputError
from sml.utils.precision import InferenceSettings, check_device
from sml.utils.tables import format_table  # noqa: F401  (the console tables' layout; importable from here)

__all__ = ["load_model", "check_device", "open_data", "dataset_kind", "num_classes", "class_names", "model_name",
           "forward", "split_frames", "frame_indices", "Timer", "format_table"]


def load_model(name: Any, weights: str | None = None, device: str = "cpu", trust: bool = False,
               settings: InferenceSettings | None = None) -> Any:
    """``sml.models.load`` with the CLI's options, run as ``settings`` say (precision, TF32, compile).

    A model object passes through (configured with ``settings`` when given). ``device`` and
    ``settings`` are checked by the caller, once (``InferenceSettings.check``, see
    :func:`sml.cli.args.inference_settings`), before data or weights are opened.
    """
    if isinstance(name, str):
        import sml.models

        name = sml.models.load(name, weights=weights, device=device, trust=trust)
    if settings is not None and hasattr(name, "configure"):
        name.configure(settings)
    return name


def open_data(spec: Any, split: str | None = None, allow_subset: bool = False,
              labels_required: bool | None = None, mapping: str | None = None) -> Any:
    """Open ``KIND:PATH`` with ``sml.data.open_dataset`` (a Dataset object passes through unchanged)."""
    if not isinstance(spec, str):
        return spec
    if ":" not in spec:
        raise InputError(f"--data {spec!r} must be KIND:PATH, e.g. road-anomaly:/data/RoadAnomaly_jpg "
                         f"(see datasets.md for the kinds)")
    import sml.data

    kwargs: dict[str, Any] = {"allow_subset": allow_subset}
    if split is not None:
        kwargs["split"] = split
    if labels_required is not None:
        kwargs["labels_required"] = labels_required
    if mapping is not None:
        kwargs["mapping"] = mapping
    return sml.data.open_dataset(spec, **kwargs)


def dataset_kind(dataset: Any) -> str:
    """The data set's kind name (``road-anomaly`` ...), for outputs and metrics.json."""
    return str(getattr(dataset, "kind", "") or type(dataset).__name__)


def num_classes(model: Any) -> int:
    """Number of classes the model's logits have."""
    for attr in ("num_classes", "classes"):
        v = getattr(model, attr, None)
        if isinstance(v, int):
            return v
        if isinstance(v, (list, tuple)):
            return len(v)
    raise InputError(f"cannot tell how many classes model {model!r} predicts; give it a num_classes attribute")


def class_names(model: Any) -> list[str] | None:
    names = getattr(model, "class_names", None)
    return list(names) if names else None


def model_name(model: Any, fallback: str | None = None) -> str:
    return str(fallback or getattr(model, "name", None) or type(model).__name__)


def forward(model: Any, images: Any, output_size: tuple[int, int], whole: bool = False) -> Any:
    """Logits ``B x C x H x W`` (float32, on the model's device) at ``output_size``: the one forward pass.

    ``images``: one frame (a uint8 ``H x W x 3`` array), or a batch of frames of one size (a list of
    such arrays, or of uint8 tensors decoded by :mod:`sml.pipelines.loader`'s workers), which go
    through the network together; :func:`split_frames` gives each frame's part back.
    ``whole``: what the frames' scores are formed from, ``model.predict_output`` (a mask-classification
    network's outputs whole, a :class:`~sml.scores.MaskClassificationOutput`; logits otherwise).
    """
    size = (int(output_size[0]), int(output_size[1]))
    frames = list(images) if isinstance(images, (list, tuple)) else [images]
    predict = model.predict_output if whole and hasattr(model, "predict_output") else model.predict
    with torch.inference_mode():
        x = _network_input(frames, torch.device(getattr(model, "device", "cpu")))
        if len(frames) == 1:
            out = predict(x, output_size=size)
        else:
            out = predict(x, output_size=size, batch_size=len(frames))
    if not isinstance(out, torch.Tensor):
        return out
    return out.unsqueeze(0) if out.ndim == 3 else out


def _network_input(frames: list[Any], device: torch.device) -> Any:
    """Frames of one size as ``predict`` takes them, the same whether they were decoded here or by workers.

    On the CPU: the array (a worker's tensor is viewed as one), several stacked ``B x H x W x 3``. On
    a GPU: each frame copied there (asynchronously from a worker's pinned memory), then stacked there
    as a uint8 ``B x 3 x H x W`` tensor (the layout predict makes of an array).
    """
    if device.type == "cpu":
        arrays = [f.numpy() if isinstance(f, torch.Tensor) else f for f in frames]
        return arrays[0] if len(arrays) == 1 else np.stack(arrays)
    tensors = [f if isinstance(f, torch.Tensor)
               else torch.from_numpy(np.ascontiguousarray(f) if f.flags.writeable else f.copy()) for f in frames]
    return torch.stack([t.to(device, non_blocking=True) for t in tensors]).permute(0, 3, 1, 2)


def split_frames(output: Any, n: int) -> list[Any]:
    """A batch's network output (``B x ...`` logits, or an output object whose tensor fields hold the
    batch, e.g. a dataclass) as ``n`` one-frame outputs of the same kind, in order."""
    if n == 1:
        return [output]
    if isinstance(output, torch.Tensor):
        return [output[i:i + 1] for i in range(n)]
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        batched = {f.name: getattr(output, f.name) for f in dataclasses.fields(output)
                   if isinstance(getattr(output, f.name), torch.Tensor)}
        return [dataclasses.replace(output, **{k: v[i:i + 1] for k, v in batched.items()}) for i in range(n)]
    raise TypeError(f"cannot split a {type(output).__name__} into frames; give a tensor or a dataclass of tensors")


def frame_indices(n: int, limit: int | None) -> list[int]:
    """Indices of the frames a run uses: all, or the first ``limit``."""
    if limit is not None:
        if limit < 1:
            raise InputError(f"--limit must be a positive number of frames (got {limit})")
        n = min(n, int(limit))
    return list(range(n))


@dataclass
class Timer:
    """Accumulated seconds per stage (decode, forward, scoring, metrics, writing)."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0)

    def add(self, stage: str, seconds: float) -> None:
        """Count ``seconds`` towards ``stage`` (for work timed elsewhere, e.g. split between stages)."""
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
