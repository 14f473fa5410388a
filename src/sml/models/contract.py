"""The model contract: a network plus everything needed to use it correctly.

:class:`SegmentationModel` holds the network, its input size, normalization, which output
channels are the classes, their names, and does the resizing of ``models.md`` ("Resizing, in
and out"): the float image in [0, 1] is resized to the input size (bilinear, antialias,
``align_corners=False``) before normalization; logits are resized to the output size
(bilinear, ``align_corners=False``). Scoring, statistics and evaluation see only
``predict``'s float32 ``B x num_classes x H x W`` logits, so any network plugs in. A
mask-classification network (``kind="mask-classification"``) returns the pair (class logits
``B x Q x (K+1)``, mask logits ``B x Q x h x w``); ``predict`` gives its per-pixel class scores
``S`` in place of logits, and ``predict_output`` the pair itself as a
:class:`~sml.scores.mask_classification.MaskClassificationOutput` (sml-algorithm.md section 8).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from sml.errors import InputError
from sml.scores.mask_classification import MaskClassificationOutput
from sml.utils.precision import InferenceSettings, autocast, check_device, float32_logits, tf32

# The layers below: the class tables (config), network files and their output conventions (files), dry runs
# (probe). CITYSCAPES_CLASSES, IMAGENET_MEAN/STD and OnnxNetwork stay importable from here.
from sml.models.config import CITYSCAPES_CLASSES, IMAGENET_MEAN, IMAGENET_STD  # noqa: F401
from sml.models.files import OnnxNetwork, _eval, _first_output, mask_outputs, sha256_of  # noqa: F401
from sml.models.probe import dry_run, open_file

Images = Union[np.ndarray, torch.Tensor, Sequence[np.ndarray]]
# interpolate() settings of each resize / upsample name (models.md, "Resizing, in and out")
_RESIZE = {"bilinear-antialias": dict(mode="bilinear", antialias=True, align_corners=False),
           "bilinear": dict(mode="bilinear", antialias=False, align_corners=False),
           "nearest": dict(mode="nearest")}
# resize names that are PIL's own filters, applied to the uint8 image before anything else (models.md)
_PIL_RESIZE = {"pil-bilinear": Image.Resampling.BILINEAR, "pil-bicubic": Image.Resampling.BICUBIC}
#: every ``input.resize`` name a card or :class:`SegmentationModel` takes
RESIZE_MODES: tuple[str, ...] = (*_RESIZE, *_PIL_RESIZE)
_UPSAMPLE = {"bilinear": dict(mode="bilinear", align_corners=False),
             "bilinear-align-corners": dict(mode="bilinear", align_corners=True)}


def _check_pixels(shape: Sequence[int], hw: tuple[int, int], batch: int = 1) -> None:
    if batch < 1:
        raise InputError(f"a batch of shape {tuple(shape)} holds no image; give at least one")
    if min(hw) < 1:
        raise InputError(f"an image of shape {tuple(shape)} has {hw[0]}x{hw[1]} (HxW) pixels; every image needs at "
                         f"least one pixel (was it cropped or decoded to nothing?). Leave it out.")


def _tensor_batch(t: torch.Tensor) -> torch.Tensor:
    """A uint8 image tensor (``3 x H x W``, ``B x 3 x H x W`` or channels-last) as ``B x 3 x H x W``."""
    if t.dtype != torch.uint8:
        raise InputError(f"image tensor must be uint8 RGB, got {t.dtype}; convert with (x * 255).round().byte()")
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.dim() != 4:
        raise InputError(f"image tensor must be B x 3 x H x W or B x H x W x 3, got shape {tuple(t.shape)}")
    if t.shape[1] != 3:  # tensors are channels-first unless the channel axis is clearly last
        if t.shape[-1] != 3:
            raise InputError(f"image tensor must have 3 RGB channels, got shape {tuple(t.shape)}")
        t = t.permute(0, 3, 1, 2)
    _check_pixels(t.shape, (t.shape[2], t.shape[3]), t.shape[0])
    return t


def _array_batch(a: Any) -> torch.Tensor:
    """A uint8 ``H x W x 3`` or ``B x H x W x 3`` array as a ``B x 3 x H x W`` tensor."""
    a = np.asarray(a)
    if a.dtype != np.uint8:
        raise InputError(f"images must be uint8 RGB, got dtype {a.dtype}; read them with sml.data.read_image")
    if a.ndim not in (3, 4) or a.shape[-1] != 3:
        raise InputError(f"images must be H x W x 3 (RGB), got shape {a.shape}")
    _check_pixels(a.shape, (a.shape[-3], a.shape[-2]), a.shape[0] if a.ndim == 4 else 1)
    if a.ndim == 3:
        a = a[None]
    if not a.flags.writeable or not a.flags.c_contiguous:  # torch wants writable memory
        a = np.array(a, copy=True, order="C")
    return torch.from_numpy(a).permute(0, 3, 1, 2)


def _as_batches(images: Images) -> list[torch.Tensor]:
    """uint8 images in any accepted form -> list of uint8 ``1 x 3 x H x W`` or ``B x 3 x H x W`` tensors."""
    if isinstance(images, torch.Tensor):
        return [_tensor_batch(images)]
    if isinstance(images, np.ndarray):
        return [_array_batch(images)]
    if not isinstance(images, (list, tuple)):
        raise InputError(f"images must be a uint8 H x W x 3 array, a list of them, or a uint8 tensor; "
                         f"got {type(images).__name__}")
    if not images:
        raise InputError("no images given to predict")
    return [_array_batch(a) for a in images]


def _pil_resize(batch: torch.Tensor, size: tuple[int, int], resample: Image.Resampling) -> torch.Tensor:
    """uint8 ``B x 3 x H x W`` resized to ``size`` by PIL's ``Image.resize`` with ``resample``, image by image."""
    frames = batch.cpu().permute(0, 2, 3, 1).numpy()
    out = [np.asarray(Image.fromarray(f).resize((size[1], size[0]), resample)) for f in frames]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)


def normalisation_problem(scale: float, mean: Sequence[float] | None,
                          std: Sequence[float] | None) -> tuple[str, str, str] | None:
    """(field, problem, fix) when mean/std cannot be in the units of ``scale``, else None.

    Pixels are in [0, scale], so a mean must lie there and a std cannot exceed it. Values in
    the other unit are what such a mistake leaves: a mean above 1 (or a std above 1) with
    ``scale`` 1; a mean of at most one grey level that is not 0, or a std below one grey level,
    with ``scale`` 255. The identity (mean 0, std 1) is valid at both scales.
    """
    if mean is None or std is None:
        return None
    m, s = [float(v) for v in mean], [float(v) for v in std]
    problem = _other_units(int(scale), m, s)
    if problem is None and (min(m) < 0 or max(m) > scale):
        problem = ("mean", f"is {_fmt(m)}, outside the pixel range [0, {int(scale)}] of scale {int(scale)}",
                   "A mean is the per-channel average pixel value in the card's scale; check its sign and units.")
    return problem


def _other_units(scale: int, m: list[float], s: list[float]) -> tuple[str, str, str] | None:
    """(field, problem, fix) when mean and std are in the units of the other scale."""
    if scale == 1:
        field = "mean" if max(m) > 1 else "std" if max(s) > 1 else None
        factor, units, verb, other = 1 / 255, "0-255", "divide", 255
    else:
        field = "mean" if 0 < max(m) <= 1 else "std" if min(s) < 1 else None
        factor, units, verb, other = 255.0, "[0, 1]", "multiply", 1
    if field is None:
        return None
    return (field, f"is {_fmt(m if field == 'mean' else s)} but scale is {scale} (pixels in [0, {scale}]), so "
            f"mean {_fmt(m)} and std {_fmt(s)} are in {units} units",
            f"Set scale: {other}, or {verb} both by 255 (mean {_fmt([v * factor for v in m])}, std "
            f"{_fmt([v * factor for v in s])}).")


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"


def _check_choices(channel_order: str, scale: float, resize: str, upsample: str, kind: str) -> None:
    if channel_order not in ("RGB", "BGR"):
        raise InputError(f"channel_order must be 'RGB' or 'BGR', got {channel_order!r}")
    if scale not in (1, 255):
        raise InputError(f"scale must be 1 (pixels in [0, 1]) or 255 (pixels in [0, 255]), got {scale!r}")
    if resize not in RESIZE_MODES:
        raise InputError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
    if upsample not in _UPSAMPLE:
        raise InputError(f"upsample must be one of {', '.join(_UPSAMPLE)}, got {upsample!r}")
    if kind not in ("logits", "mask-classification"):
        raise InputError(f"kind must be 'logits' or 'mask-classification', got {kind!r}")


def _input_size(input_size: Sequence[int] | None) -> tuple[int, int] | None:
    if input_size is None:
        return None
    if len(input_size) != 2 or min(int(v) for v in input_size) < 1:
        raise InputError(f"input_size must be (height, width), got {input_size!r}")
    return int(input_size[0]), int(input_size[1])


def _mean_std(mean: Sequence[float] | None, std: Sequence[float] | None, scale: int,
              name: str) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """Checked per-channel mean and std as float tuples (None, None: no normalization)."""
    if (mean is None) != (std is None):
        raise InputError("give both mean and std, or neither (no normalization)")
    if mean is None or std is None:
        return None, None
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise InputError(f"mean/std must be 3 values each with std > 0, got mean={mean!r} std={std!r}")
    problem = normalisation_problem(scale, mean, std)
    if problem is not None:
        field, what, fix = problem
        raise InputError(f"{name}: {field} {what}. {fix}")
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _classes(class_channels: Sequence[int] | None, class_names: Sequence[str] | None,
             num_classes: int | None) -> tuple[list[int], list[str]]:
    """The class channels and names, from whichever of the three is given (see SegmentationModel)."""
    if class_channels is None:
        n = num_classes if num_classes is not None else (len(class_names) if class_names else None)
        if n is None:
            raise InputError("give class_channels, class_names or num_classes so the classes are known")
        class_channels = range(n)
    channels = [int(c) for c in class_channels]
    if not channels or min(channels) < 0:
        raise InputError(f"class_channels must be non-negative channel indices, got {class_channels!r}")
    if num_classes is not None and num_classes != len(channels):
        raise InputError(f"num_classes={num_classes} but {len(channels)} class_channels were given")
    if class_names is None:
        class_names = CITYSCAPES_CLASSES if len(channels) == 19 else [f"class_{i}" for i in range(len(channels))]
    if len(class_names) != len(channels):
        raise InputError(f"{len(class_names)} class_names for {len(channels)} classes")
    return channels, [str(c) for c in class_names]


def _tensors_sha256(network: nn.Module) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes and bytes, in name order)."""
    import hashlib

    h = hashlib.sha256()
    for key, t in sorted(network.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _windows(size: int, window: int, stride: int) -> list[int]:
    """Window starts covering ``[0, size)``; the last window is aligned to the end."""
    if size <= window:
        return [0]
    starts = list(range(0, size - window, stride))
    return starts + [size - window]


class SegmentationModel:
    """A segmentation network with its input contract (see module docstring).

    Attributes: ``network`` (eval mode), ``name``, ``input_size`` ((H, W) or None = run at the
    image's own size), ``mean``/``std`` (per-channel tuples, or None = input in [0, 1]),
    ``class_channels`` (indices of the network's output channels that are the classes, in
    class order), ``class_names``, ``num_classes``, ``device``, ``cpu_channels_last`` (run the
    network in channels-last layout on the CPU unless :meth:`predict` is told otherwise; set
    by :func:`sml.models.load` for the built-in networks, off for wrapped ones, whose module
    is the caller's and is left in its own layout). As a model card says (models.md):
    ``channel_order`` ("RGB"/"BGR"), ``scale`` (1: pixels in [0, 1], 255: in [0, 255]; mean/std
    are in that scale), ``resize`` ("bilinear-antialias", "bilinear", "nearest"), ``upsample``
    ("bilinear", "bilinear-align-corners") and ``kind`` ("logits" or "mask-classification": the
    network returns class and mask logits per query, :meth:`predict` its class scores ``S``,
    :meth:`predict_output` the outputs themselves). ``settings`` (:class:`~sml.utils.precision.InferenceSettings`,
    set with :meth:`configure`) chooses the forward pass's precision, TF32 and ``torch.compile``;
    ``precision`` is its precision ("fp32" unless configured).
    """

    def __init__(self, network: nn.Module, *, name: str = "model", input_size: tuple[int, int] | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 class_channels: Sequence[int] | None = None, class_names: Sequence[str] | None = None,
                 num_classes: int | None = None, device: str | torch.device = "cpu",
                 cpu_channels_last: bool = False, channel_order: str = "RGB", scale: float = 1,
                 resize: str = "bilinear-antialias", upsample: str = "bilinear", kind: str = "logits") -> None:
        _check_choices(channel_order, scale, resize, upsample, kind)
        self.channel_order, self.scale, self.resize, self.upsample, self.kind = (
            channel_order, int(scale), resize, upsample, kind)
        self.class_channels, self.class_names = _classes(class_channels, class_names, num_classes)
        self.num_classes = len(self.class_channels)
        self.name = name
        self.input_size = _input_size(input_size)
        self.mean, self.std = _mean_std(mean, std, int(scale), name)
        # Used as is, not copied (a trainer may wrap its live network for validation): only
        # switched to eval mode; parameters keep requires_grad, predict runs in inference_mode.
        self.network = _eval(network)
        self.settings = InferenceSettings()
        self._net: nn.Module = self.network   # what the forward pass calls (the compiled wrapper with --compile)
        self.device = torch.device("cpu")
        self._channels_last = False
        self.cpu_channels_last = bool(cpu_channels_last)
        self._identity: dict[str, Any] | None = None
        #: the model card it was loaded with, every field filled in (``format: transformers``), else None
        self.card: dict[str, Any] | None = None
        self.to(device)

    def __repr__(self) -> str:
        return (f"SegmentationModel(name={self.name!r}, input_size={self.input_size}, classes={self.num_classes}, "
                f"device={self.device})")

    @property
    def identity(self) -> dict[str, Any]:
        """Which network this is, to pair it with statistics and resume state: ``{"name", "sha256", "file"}``.

        ``sha256`` is that of the weights or network file the network was read from (recorded by
        :meth:`identify`, which :func:`sml.models.load` and :func:`wrap` call), else of its tensors
        (a module built in memory; computed at the first use, once). A ``format: transformers`` model
        adds ``card``: the card it was loaded with, every field filled in (:attr:`card`).
        """
        if self._identity is None:
            self._identity = {"name": self.name, "sha256": _tensors_sha256(self.network), "file": None}
        return dict(self._identity) if self.card is None else {**self._identity, "card": dict(self.card)}

    def identify(self, path: str | os.PathLike, sha256: str | None = None) -> "SegmentationModel":
        """Record that the network was read from ``path`` (its sha256, computed now unless given); returns self."""
        if sha256 is None:
            sha256 = sha256_of(path)
        self._identity = {"name": self.name, "sha256": sha256.lower(), "file": Path(path).name}
        return self

    @property
    def precision(self) -> str:
        """The forward pass's precision: "fp32", "bf16" or "fp16" (see :meth:`configure`)."""
        return self.settings.precision

    def configure(self, settings: InferenceSettings) -> "SegmentationModel":
        """Run the forward pass with ``settings`` (precision, TF32, ``torch.compile``); returns self.

        The memory layout is set first (channels-last on CUDA, the model's own default on the CPU),
        then the network is compiled when asked, so compilation sees the layout it will run in.
        A precision the device cannot run is refused at the first forward pass (the CLI checks it
        before anything loads).
        """
        if not isinstance(settings, InferenceSettings):
            raise InputError(f"configure takes sml.utils.precision.InferenceSettings, got {type(settings).__name__}")
        self.settings = settings
        self._set_layout(self._default_channels_last())
        self._net = settings.prepare(self.network)
        return self

    def describe(self) -> str:
        """How the network runs, for run records, e.g. ``precision bf16, tf32 off, compile off, channels-last on``."""
        return f"{self.settings.describe()}, channels-last {'on' if self._default_channels_last() else 'off'}"

    def _default_channels_last(self) -> bool:
        return InferenceSettings.channels_last(self.device, self.cpu_channels_last)

    def _set_layout(self, channels_last: bool) -> None:
        if channels_last != self._channels_last:
            self.network.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            self._channels_last = channels_last

    def to(self, device: str | torch.device) -> "SegmentationModel":
        """Move the network to ``device`` ("cpu", "cuda", "cuda:1"); returns self."""
        device = check_device(device)
        self.network.to(device)
        self.device = device
        return self

    # -- preprocessing --------------------------------------------------------------------------
    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            return x
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def _to_float(self, batch: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
        """uint8 ``B x 3 x H x W`` -> float [0, 1] on the device, resized to ``size`` (models.md), normalized."""
        if size is not None and self.resize in _PIL_RESIZE and tuple(batch.shape[2:]) != tuple(size):
            batch = _pil_resize(batch, size, _PIL_RESIZE[self.resize])  # on the uint8 image, first of all
        x = batch.to(self.device, non_blocking=True)
        if self.channel_order == "BGR":
            x = x.flip(1)
        x = x.float().div_(255.0)
        if size is not None and tuple(x.shape[2:]) != tuple(size):
            x = F.interpolate(x, size=size, **_RESIZE[self.resize])
        if self.scale == 255:  # resizing is linear, so resizing in [0, 1] and scaling after is the same
            x = x.mul_(255.0)
        return self._normalize(x)

    def preprocess(self, images: Images) -> torch.Tensor:
        """Images (uint8 RGB, see :meth:`predict`) -> normalized float ``B x 3 x h x w`` at the input size."""
        batches = _as_batches(images)
        if self.input_size is None and len({tuple(b.shape[2:]) for b in batches}) > 1:
            raise InputError("images of different sizes cannot form one batch for a model without a fixed "
                             "input size; preprocess them one at a time")
        return torch.cat([self._to_float(b, self.input_size) for b in batches])

    # -- inference ------------------------------------------------------------------------------
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of a preprocessed (normalized) float batch, at the network's output size.

        Keeps only ``class_channels``. No inference mode here: gradients flow, so training and
        evaluation code can reuse it (with the network in whichever mode they set). A
        mask-classification network gives its class scores ``S`` instead, float32 at the size of
        ``x`` (:meth:`mask_output`): resized like logits afterwards, that is ``S`` of section 8.
        """
        if self.kind == "mask-classification":
            out = self.mask_output(x)
            with torch.autocast(x.device.type, enabled=False):  # S in float32, whatever the autocast
                return out.class_scores()
        out = _first_output(self._net(x))
        if out.dim() != 4 or out.shape[0] != x.shape[0]:
            raise InputError(f"{self.name}: the network returned shape {tuple(out.shape)} for input "
                             f"{tuple(x.shape)}; a segmentation network must return B x K x h x w logits")
        if max(self.class_channels) >= out.shape[1]:
            raise InputError(f"{self.name}: class_channels go up to {max(self.class_channels)} but the network "
                             f"returns {out.shape[1]} channels; fix class_channels / num_classes")
        if self.class_channels != list(range(out.shape[1])):
            out = out[:, self.class_channels]
        return out

    def mask_output(self, x: torch.Tensor, output_size: Sequence[int] | None = None) -> MaskClassificationOutput:
        """A mask-classification network's outputs for a preprocessed batch ``x``: float32 class and mask
        logits (mask logits at the network's resolution), ``input_size`` the size of ``x``, ``output_size``
        (default: that size) and the model's ``upsample``. Its classes are all ``K`` of the network, in order."""
        if self.kind != "mask-classification":
            raise InputError(f"{self.name}: mask_output needs a mask-classification network; this one's output "
                             f"kind is {self.kind} (use logits / predict)")
        cl, ml = mask_outputs(self._net(x), self.name)
        k = int(cl.shape[-1]) - 1
        if cl.shape[0] != x.shape[0]:
            raise InputError(f"{self.name}: for a batch of {x.shape[0]} images the network returned class logits "
                             f"of shape {tuple(cl.shape)}; it must return B x Q x (K+1)")
        if self.class_channels != list(range(k)):
            raise InputError(f"{self.name}: the network's class logits have {k} classes and 'no object', but the "
                             f"model was given {self.num_classes} classes (class_channels {self.class_channels}); "
                             f"a mask-classification network's classes are all of its {k} classes, in order: give "
                             f"num_classes={k} (or {k} class_names) and no class_channels")
        return MaskClassificationOutput(float32_logits(cl), float32_logits(ml), tuple(x.shape[2:]), output_size,
                                        self.upsample)

    @contextlib.contextmanager
    def _mode(self, precision: str, channels_last: bool) -> Iterator[None]:
        self._set_layout(channels_last)
        with torch.inference_mode(), tf32(self.settings.tf32), autocast(precision, self.device):
            yield

    def _forward(self, x: torch.Tensor, channels_last: bool) -> torch.Tensor:
        # float32 logits at network resolution (spec section 1), before anything else sees them
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
            # back to the standard layout at network resolution, before the (larger) upsampled copy
            return float32_logits(self.logits(x)).contiguous()
        return float32_logits(self.logits(x))

    def _sliding(self, x: torch.Tensor, window: tuple[int, int], overlap: float, channels_last: bool,
                 batch_size: int) -> torch.Tensor:
        """Average logits of overlapping windows (windows batched), each at the window's resolution."""
        H, W = x.shape[2:]
        wh, ww = min(window[0], H), min(window[1], W)
        sh, sw = max(1, int(wh * (1 - overlap))), max(1, int(ww * (1 - overlap)))
        boxes = [(y, xx) for y in _windows(H, wh, sh) for xx in _windows(W, ww, sw)]
        out: torch.Tensor | None = None
        count = torch.zeros(1, 1, H, W, device=x.device)
        for y, xx in boxes:
            count[0, 0, y:y + wh, xx:xx + ww] += 1
        for b in range(x.shape[0]):
            for i in range(0, len(boxes), batch_size):
                chunk = boxes[i:i + batch_size]
                crops = torch.cat([x[b:b + 1, :, y:y + wh, xx:xx + ww] for y, xx in chunk])
                logits = self._forward(crops, channels_last)
                if logits.shape[2:] != (wh, ww):
                    logits = F.interpolate(logits, size=(wh, ww), mode="bilinear", align_corners=False)
                if out is None:
                    out = torch.zeros(x.shape[0], logits.shape[1], H, W, device=x.device)
                for (y, xx), lg in zip(chunk, logits):
                    out[b, :, y:y + wh, xx:xx + ww] += lg
        assert out is not None
        return out / count

    def predict(self, images: Images, output_size: tuple[int, int] | None = None, batch_size: int = 4,
                sliding_window: bool = False, amp: bool = False, channels_last: bool | None = None,
                window: tuple[int, int] | None = None, overlap: float = 1 / 3,
                precision: str | None = None) -> torch.Tensor:
        """float32 class logits ``B x num_classes x H x W`` (on the model's device) at ``output_size``
        (a mask-classification network's class scores ``S``, section 8; see :meth:`predict_output`).

        ``images``: a uint8 RGB ``H x W x 3`` array, a ``B x H x W x 3`` array or a list of arrays
        (sizes may differ when ``output_size`` is given), or a uint8 tensor ``B x 3 x H x W``
        (or ``B x H x W x 3`` when dim 1 is not 3). ``output_size`` defaults to the image size.
        Whole-image mode resizes each image to ``input_size``; ``sliding_window=True`` instead
        runs windows of ``window`` (default ``input_size``) over the image at its own resolution
        with ``overlap`` and averages the logits, for inputs larger than the network was
        trained on. ``precision`` ("fp32", "bf16", "fp16"; default the configured one, see
        :meth:`configure`) runs the network under that autocast; ``amp=True`` is ``precision="bf16"``.
        The logits are float32 whatever the precision. ``channels_last`` runs the network in that
        memory format; None (default) means always on CUDA and ``cpu_channels_last`` on the CPU. On the CPU oneDNN's convolutions are much faster that way (ERFNet at
        1280x720: 289 -> 174 ms; DeepLabV3+ R50 OS16 1.4x, R101 OS8 1.2x on 2 cores) and the
        logits stay within ~1e-6 (relative) of the default layout, bit for bit the same across
        thread counts and batch sizes. Inference runs under ``torch.inference_mode``.
        """
        frames, output_size, channels_last, precision = self._prepare(images, output_size, batch_size, amp,
                                                                      channels_last, precision)
        if sliding_window:
            if self.kind == "mask-classification":
                raise InputError(f"{self.name}: sliding-window mode averages the logits of windows; a "
                                 f"mask-classification network's scores are defined for whole images only "
                                 f"(sml-algorithm.md section 8): run it with sliding_window=False")
            window = self._window(window, overlap)
        with self._mode(precision, channels_last):
            if sliding_window:
                raw = [self._sliding(self._to_float(f, None), window, overlap, channels_last, batch_size)
                       for f in frames]
            else:
                raw = self._whole_images(frames, channels_last, batch_size)
        # Resize outside inference mode so the caller gets ordinary tensors (in-place ops allowed).
        with torch.no_grad():
            out = [F.interpolate(r, size=output_size, **_UPSAMPLE[self.upsample])
                   if tuple(r.shape[2:]) != output_size else r.clone() for r in raw]
            return (torch.cat(out) if len(out) > 1 else out[0]).float().contiguous()

    def _prepare(self, images: Images, output_size: Sequence[int] | None, batch_size: int, amp: bool,
                 channels_last: bool | None, precision: str | None) -> tuple[list[torch.Tensor], tuple[int, int],
                                                                           bool, str]:
        """Single-frame uint8 batches, the output size, layout and precision of one :meth:`predict` call."""
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        if channels_last is None:
            channels_last = self._default_channels_last()
        if precision is None:
            precision = "bf16" if amp else self.settings.precision
        batches = _as_batches(images)
        output_size = _output_size(batches, output_size)
        # Split list input into single frames so that batches of differently sized frames work.
        return [b[i:i + 1] for b in batches for i in range(b.shape[0])], output_size, channels_last, precision

    def predict_output(self, images: Images, output_size: tuple[int, int] | None = None, batch_size: int = 4,
                       amp: bool = False, channels_last: bool | None = None,
                       precision: str | None = None) -> Union[torch.Tensor, MaskClassificationOutput]:
        """What every method of a run scores, from one forward pass: :meth:`predict`'s logits for a logits
        network; for a mask-classification network its outputs whole, a :class:`MaskClassificationOutput`
        (mask logits at the network's resolution, ``input_size`` the size it ran at, ``output_size`` the
        one asked for) from which ``S`` and EAM's map are formed on demand, a few queries at a time.
        Arguments as :meth:`predict`; images of a mask-classification network must share one input size.
        """
        if self.kind != "mask-classification":
            return self.predict(images, output_size, batch_size, amp=amp, channels_last=channels_last,
                                precision=precision)
        frames, output_size, channels_last, precision = self._prepare(images, output_size, batch_size, amp,
                                                                      channels_last, precision)
        if self.input_size is None and len({tuple(f.shape[2:]) for f in frames}) > 1:
            raise InputError(f"{self.name} runs at each image's own size and these images differ in size: their "
                             f"mask-classification outputs cannot form one batch; predict_output them one at a time")
        parts = []
        with self._mode(precision, channels_last):
            for i in range(0, len(frames), batch_size):
                x = torch.cat([self._to_float(f, self.input_size) for f in frames[i:i + batch_size]])
                parts.append(self.mask_output(x.contiguous(memory_format=torch.channels_last) if channels_last
                                              else x))
        with torch.no_grad():  # ordinary tensors for the caller, as predict's
            cat = [torch.cat([getattr(o, k) for o in parts]) if len(parts) > 1 else getattr(parts[0], k).clone()
                   for k in ("class_logits", "mask_logits")]
        return MaskClassificationOutput(cat[0], cat[1], parts[0].input_size, output_size, self.upsample)

    def _window(self, window: tuple[int, int] | None, overlap: float) -> tuple[int, int]:
        """The sliding window's size (default ``input_size``), with ``overlap`` checked."""
        window = window or self.input_size
        if window is None:
            raise InputError(f"{self.name} has no fixed input size: pass window=(h, w) for sliding-window mode")
        if not 0 <= overlap < 1:
            raise InputError(f"overlap must be in [0, 1), got {overlap}")
        return window

    def _whole_images(self, frames: list[torch.Tensor], channels_last: bool, batch_size: int) -> list[torch.Tensor]:
        """Network-resolution logits (inference tensors) of whole frames, ``batch_size`` at a time."""
        raw: list[torch.Tensor] = []
        for i in range(0, len(frames), batch_size):
            chunk = frames[i:i + batch_size]
            if self.input_size is None and len({tuple(f.shape[2:]) for f in chunk}) > 1:
                raw.extend(self._forward(self._to_float(f, None), channels_last) for f in chunk)
            else:
                x = torch.cat([self._to_float(f, self.input_size) for f in chunk])
                raw.append(self._forward(x, channels_last))
        return raw


def _output_size(batches: list[torch.Tensor], output_size: Sequence[int] | None) -> tuple[int, int]:
    """``output_size`` as ints, or the one size all the images share."""
    if output_size is None:
        sizes = {tuple(b.shape[2:]) for b in batches}
        if len(sizes) > 1:
            raise InputError("images of different sizes: pass output_size (e.g. the label size) or "
                             "predict them one at a time")
        output_size = next(iter(sizes))
    return int(output_size[0]), int(output_size[1])


def wrap(module_or_path: nn.Module | str | os.PathLike, input_size: tuple[int, int] | None = None,
         mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
         class_channels: Sequence[int] | None = None, class_names: Sequence[str] | None = None,
         name: str | None = None, num_classes: int | None = None, device: str | torch.device = "cpu",
         **kw: Any) -> SegmentationModel:
    """Put any network under the contract: an ``nn.Module``, a TorchScript file, a ``torch.export``
    ``.pt2`` archive, or an ``.onnx`` file (needs onnxruntime).

    The network must map a normalized float ``B x 3 x h x w`` batch to ``B x K x h' x w'`` logits
    (a tuple/dict output uses its first/"out" entry). Without ``class_channels``/``class_names``/
    ``num_classes`` the output channel count is found by one dry run at ``input_size`` (or 64x64).
    A file fixed to one input size (ONNX, static ``.pt2``) runs at that size unless ``input_size`` is given;
    a TorchScript or ONNX file traced with its sizes fixed needs ``input_size`` (see :mod:`sml.models.probe`).
    """
    if isinstance(module_or_path, nn.Module):
        network, default_name = module_or_path, type(module_or_path).__name__
    else:  # a network file, opened and its size probed (sml.models.probe)
        network, input_size = open_file(module_or_path, input_size)
        default_name = Path(module_or_path).stem
    if class_channels is None and class_names is None and num_classes is None:
        num_classes = dry_run(network, input_size or (64, 64), default_name, kw.get("kind", "logits"))[0]
    model = SegmentationModel(network, name=name or default_name, input_size=input_size, mean=mean, std=std,
                              class_channels=class_channels, class_names=class_names, num_classes=num_classes,
                              device=device, **kw)
    return model if isinstance(module_or_path, nn.Module) else model.identify(module_or_path)
