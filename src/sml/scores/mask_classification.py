"""Mask-classification networks (Mask2Former, MaskFormer): per-pixel class scores, RbA and EAM (spec 8).

Such a network gives, per image, class logits ``Q x (K+1)`` (last column: "no
object") and mask logits ``Q x h x w``. With ``p_q = softmax(class_logits_q)[:K]``
and ``U_q`` the mask logits upsampled bilinearly (align_corners False) to the
network's input size, the per-pixel class scores are
``S_c = R(sum_q p_qc * sigmoid(U_q))`` (``R``: the resize to the label size that
logits get, ``output.upsample`` of the model card), and EAM uses the per-query
masks ``sigmoid(R(U_q))``, as the authors' detectron2 code does (docs/scores.md).

Upsampled mask logits are the large temporaries (``Q x H x W`` per image), so
they are formed a few queries at a time and summed into the result; the number
of queries per chunk follows from a budget of elements, and the result does not
depend on it beyond float rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from sml.errors import InputError
from sml.scores.functional import _bandwise, as_logits, check_finite

__all__ = ["UPSAMPLE_MODES", "MaskClassificationOutput", "mask_class_scores", "rba", "eam", "class_probabilities"]

#: the ways scores return to the label size (model card ``output.upsample``) -> ``align_corners``
UPSAMPLE_MODES = {"bilinear": False, "bilinear-align-corners": True}

#: elements of upsampled mask logits held at once (64 MB in float32): 8 queries of a 1024 x 2048 frame
QUERY_BUDGET = 1 << 24


def _size(value: Sequence[int], name: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in value)
        ok = h >= 1 and w >= 1 and all(float(v) == int(v) for v in value)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"{name} must be (height, width) with two positive integers, got {value!r}")
    return h, w


def _upsample_mode(upsample: str) -> bool:
    if upsample not in UPSAMPLE_MODES:
        raise InputError(f"upsample must be one of {', '.join(UPSAMPLE_MODES)} (the model card's output.upsample), "
                         f"got {upsample!r}")
    return UPSAMPLE_MODES[upsample]


def _check_outputs(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shapes, dtypes, devices and finiteness of one batch of mask-classification outputs."""
    for name, x, dims, shape in (("class_logits", class_logits, 3, "B x Q x (K+1)"),
                                 ("mask_logits", mask_logits, 4, "B x Q x h x w")):
        if not isinstance(x, torch.Tensor):
            raise InputError(f"{name} must be a torch.Tensor of shape {shape}, got {type(x).__name__}")
        if x.dim() != dims or not x.is_floating_point() or min(x.shape) == 0:
            raise InputError(f"{name} must be a non-empty floating-point tensor of shape {shape}, "
                             f"got shape {tuple(x.shape)} and dtype {x.dtype}")
    if class_logits.shape[-1] < 2:
        raise InputError(f"class_logits has {class_logits.shape[-1]} column(s); it needs the K classes and the "
                         f"no-object column last (K+1 >= 2)")
    if class_logits.shape[:2] != mask_logits.shape[:2]:
        raise InputError(f"class_logits ({tuple(class_logits.shape)}) and mask_logits ({tuple(mask_logits.shape)}) "
                         f"must agree in batch size and number of queries (the first two dimensions)")
    if class_logits.device != mask_logits.device:
        raise InputError(f"class_logits are on {class_logits.device} but mask_logits on {mask_logits.device}")
    check_finite(class_logits, "class_logits")
    check_finite(mask_logits, "mask_logits")
    return class_logits, mask_logits


def _work_dtype(*xs: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(x.dtype == torch.float64 for x in xs) else torch.float32


def class_probabilities(class_logits: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``p = softmax(class_logits, -1)[..., :K]``: ``B x Q x K`` in ``dtype``, no-object column dropped after
    the softmax. No validation."""
    return torch.softmax(class_logits.to(dtype), dim=-1)[..., :-1]


def query_chunks(queries: int, elements_per_query: int, chunk: int | None = None) -> Iterator[tuple[int, int]]:
    """Consecutive ``(q0, q1)`` ranges of ``chunk`` queries (default: as many as fit in :data:`QUERY_BUDGET`)."""
    if chunk is None:
        chunk = max(1, QUERY_BUDGET // max(1, elements_per_query))
    elif isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise InputError(f"chunk (queries per step) must be a positive integer or None, got {chunk!r}")
    for q0 in range(0, queries, chunk):
        yield q0, min(queries, q0 + chunk)


def _resize(x: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:  # bilinear to the same size is the identity, either way
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


def mask_class_scores(class_logits: torch.Tensor, mask_logits: torch.Tensor, input_size: Sequence[int],
                      output_size: Sequence[int] | None = None, upsample: str = "bilinear",
                      chunk: int | None = None) -> torch.Tensor:
    """Per-pixel class scores ``S = R(sum_q p_q * sigmoid(U_q))``: ``B x K x H x W`` (float32, or float64 for
    float64 inputs) at ``output_size`` (default: ``input_size``).

    ``class_logits``: ``B x Q x (K+1)``, no-object last; ``mask_logits``: ``B x Q x h x w``; ``input_size``:
    the ``(H, W)`` the network saw; ``upsample``: how ``R`` resizes (:data:`UPSAMPLE_MODES`); ``chunk``:
    queries upsampled at once (default from :data:`QUERY_BUDGET`; the result does not depend on it).
    """
    return MaskClassificationOutput(class_logits, mask_logits, input_size, output_size, upsample).class_scores(chunk)


def _class_scores(out: "MaskClassificationOutput", chunk: int | None) -> torch.Tensor:
    wd = _work_dtype(out.class_logits, out.mask_logits)
    p = class_probabilities(out.class_logits, wd)
    b, q, k = p.shape
    size = out.input_size
    acc = torch.zeros((b, k, size[0] * size[1]), dtype=wd, device=out.mask_logits.device)
    for q0, q1 in query_chunks(q, b * size[0] * size[1], chunk):
        u = F.interpolate(out.mask_logits[:, q0:q1].to(wd), size=size, mode="bilinear", align_corners=False)
        # sum_q p_qc * sigmoid(U_q) over this chunk, added in place: (B x K x q) @ (B x q x HW)
        acc.baddbmm_(p[:, q0:q1].transpose(1, 2), u.sigmoid_().flatten(2))
    return _resize(acc.view(b, k, *size), out.output_size, UPSAMPLE_MODES[out.upsample])


def rba(class_scores: torch.Tensor) -> torch.Tensor:
    """RbA, "rejected by all" (Nayal et al., ICCV 2023): ``-sum_c tanh(S_c)``, float32 ``B x H x W``.

    ``class_scores`` are the per-pixel class scores ``S`` ``B x K x H x W`` of a mask-classification
    network (:func:`mask_class_scores`); higher = more anomalous.
    """
    s = as_logits(class_scores, "class scores")
    check_finite(s, "class scores")
    return _bandwise(s, lambda x: torch.tanh(x).sum(dim=1).neg_())


def eam(class_logits: torch.Tensor, mask_logits: torch.Tensor, input_size: Sequence[int],
        output_size: Sequence[int] | None = None, upsample: str = "bilinear", chunk: int | None = None) -> torch.Tensor:
    """EAM (Grcić et al., CVPR-W 2023): ``1 - sum_q sigmoid(R(U_q)) * max_c p_qc``, float32 ``B x H x W``.

    Arguments as :func:`mask_class_scores`; the mask logits are resized to ``output_size`` before the
    sigmoid, as the authors do. Higher = more anomalous.
    """
    return MaskClassificationOutput(class_logits, mask_logits, input_size, output_size, upsample).eam(chunk)


def _eam(out: "MaskClassificationOutput", chunk: int | None) -> torch.Tensor:
    wd = _work_dtype(out.class_logits, out.mask_logits)
    conf = class_probabilities(out.class_logits, wd).amax(dim=-1)    # B x Q: each query's top class probability
    b, q = conf.shape
    (hi, wi), (ho, wo) = out.input_size, out.output_size
    covered = torch.zeros((b, 1, ho * wo), dtype=wd, device=out.mask_logits.device)
    for q0, q1 in query_chunks(q, b * (hi * wi + ho * wo), chunk):
        u = F.interpolate(out.mask_logits[:, q0:q1].to(wd), size=(hi, wi), mode="bilinear", align_corners=False)
        m = _resize(u, (ho, wo), UPSAMPLE_MODES[out.upsample]).sigmoid()
        covered.baddbmm_(conf[:, None, q0:q1], m.flatten(2))
    return torch.rsub(covered.view(b, ho, wo), 1).to(torch.float32)


@dataclass(frozen=True)
class MaskClassificationOutput:
    """One batch of a mask-classification network's raw outputs, with what is needed to score them.

    ``class_logits`` ``B x Q x (K+1)`` (no-object last), ``mask_logits`` ``B x Q x h x w``, ``input_size``
    (the ``(H, W)`` the network saw), ``output_size`` (the label size; None = the input size) and
    ``upsample`` (:data:`UPSAMPLE_MODES`). Validated on construction.
    """

    class_logits: torch.Tensor
    mask_logits: torch.Tensor
    input_size: tuple[int, int]
    output_size: tuple[int, int] | None = None
    upsample: str = "bilinear"

    def __post_init__(self) -> None:
        _check_outputs(self.class_logits, self.mask_logits)
        object.__setattr__(self, "input_size", _size(self.input_size, "input_size"))
        out = self.input_size if self.output_size is None else _size(self.output_size, "output_size")
        object.__setattr__(self, "output_size", out)
        _upsample_mode(self.upsample)

    @property
    def num_classes(self) -> int:
        """``K``, the classes without the no-object column."""
        return int(self.class_logits.shape[-1]) - 1

    def class_scores(self, chunk: int | None = None) -> torch.Tensor:
        """``S`` ``B x K x H x W`` at the output size (:func:`mask_class_scores`)."""
        return _class_scores(self, chunk)

    def eam(self, chunk: int | None = None) -> torch.Tensor:
        """The EAM anomaly map ``B x H x W`` at the output size (:func:`eam`)."""
        return _eam(self, chunk)
