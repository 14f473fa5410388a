"""Per-pixel anomaly scores of spec section 1: logits ``B x C x H x W`` -> float32 ``B x H x W``.

Every score is "higher = more anomalous". Softmax-type scores are computed in
float32 (float64 for float64 logits), never in half precision. Work is done in
bands of rows so that no temporary as large as the logits is ever allocated.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from sml.errors import InputError

__all__ = [
    "as_logits",
    "check_finite",
    "max_and_argmax",
    "max_logit",
    "msp",
    "entropy",
    "energy",
    "gen",
    "check_gen_settings",
    "softmax_terms",
    "standardize",
    "row_bands",
]

# Elements per band (per batch): big enough that Python overhead is negligible,
# small enough that temporaries stay cache-sized.
_BAND_ELEMENTS = 1 << 18


def rows_per_band(row_elements: int, target: int | None = None) -> int:
    """Rows in a band of about ``target`` elements (default: the module's band size) when a row has ``row_elements``."""
    return max(1, (_BAND_ELEMENTS if target is None else target) // max(1, row_elements))


def row_bands(height: int, row_elements: int, target: int | None = None) -> Iterator[tuple[int, int]]:
    """Split ``range(height)`` into consecutive ``(start, stop)`` bands of about ``target`` elements."""
    rows = rows_per_band(row_elements, target)
    for r0 in range(0, height, rows):
        yield r0, min(height, r0 + rows)


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other float dtype (float16, bfloat16, float32) computes in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def as_logits(logits: torch.Tensor | np.ndarray, name: str = "logits") -> torch.Tensor:
    """Validate a ``B x C x H x W`` floating tensor (NumPy arrays are wrapped, not copied)."""
    if isinstance(logits, np.ndarray):
        logits = torch.from_numpy(logits)
    if not isinstance(logits, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor or NumPy array, got {type(logits).__name__}")
    if logits.dim() != 4:
        hint = " (add a batch dimension with logits[None])" if logits.dim() == 3 else ""
        raise InputError(f"{name} must have shape B x C x H x W, got shape {tuple(logits.shape)}{hint}")
    if not logits.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor, got dtype {logits.dtype}")
    if min(logits.shape) == 0:
        raise InputError(f"{name} is empty (shape {tuple(logits.shape)}); every dimension must be at least 1")
    return logits


def check_finite(x: torch.Tensor, name: str = "logits") -> None:
    """Raise :class:`InputError` if ``x`` holds NaN or +-inf (one cheap reduction on the happy path)."""
    # A plain sum propagates every NaN/inf; only when it is not finite do we pay for
    # the exact element-wise test (which also rules out a mere overflow of the sum).
    total = x.sum(dtype=torch.float32) if x.dtype in (torch.float16, torch.bfloat16) else x.sum()
    if bool(torch.isfinite(total)):
        return
    bad = ~torch.isfinite(x)
    if not bool(bad.any()):
        return
    where = tuple(int(i) for i in bad.nonzero()[0])
    raise InputError(
        f"{name} contain {int(bad.sum())} NaN or infinite value(s) (first at index {where}: "
        f"{float(x[where])}); check the model output and the input preprocessing"
    )


def max_and_argmax(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L, pred)``: the channel max (work dtype, ``B x H x W``) and its index (lowest on ties).

    ``pred`` is uint8 when ``C <= 256`` (int64 otherwise); the result equals
    ``torch.max(logits, dim=1)``. No validation: see :func:`as_logits`.
    """
    b, c, h, w = logits.shape
    wd = work_dtype(logits.dtype)
    if logits.device.type != "cpu":
        values, index = torch.max(logits, dim=1)
        return values.to(wd), (index.to(torch.uint8) if c <= 256 else index)
    if c > 256:
        values, index = torch.max(logits, dim=1)
        return values.to(wd), index
    # On CPU torch.max(dim=1) walks the strided channel axis and tracks an index per
    # element; C whole-map steps of same-dtype, allocation-free ops are faster and
    # keep torch.max's tie rule (strict '>' keeps the lowest index). The index update
    # uses that k grows: max(index, k * [x_k > best]) is k exactly where x_k wins.
    return _max_and_argmax_cpu(logits, wd)


def _max_and_argmax_cpu(logits: torch.Tensor, wd: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    b, c, h, w = logits.shape
    values = torch.empty((b, h, w), dtype=wd)
    index = torch.zeros((b, h, w), dtype=torch.uint8)
    # bands of ~2^19 pixels keep the running max/index in cache across the C channels
    rows = min(h, rows_per_band(b * w, 2 * _BAND_ELEMENTS))
    wins = torch.empty((b, rows, w), dtype=torch.bool)
    cand = torch.empty((b, rows, w), dtype=torch.uint8)
    cast = torch.empty((b, rows, w), dtype=wd) if logits.dtype != wd else None
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        n = r1 - r0
        xs = logits[:, :, r0:r1]
        best, idx, win, cnd = values[:, r0:r1], index[:, r0:r1], wins[:, :n], cand[:, :n]
        win_u8 = win.view(torch.uint8)
        best.copy_(xs[:, 0])
        for k in range(1, c):
            xk = xs[:, k] if cast is None else cast[:, :n].copy_(xs[:, k])
            torch.gt(xk, best, out=win)
            torch.mul(win_u8, k, out=cnd)
            torch.maximum(idx, cnd, out=idx)
            torch.maximum(best, xk, out=best)
    return values, index


def _bandwise(logits: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Apply ``fn`` (``b x C x h x W`` work-dtype band -> ``b x h x W``) band by band; float32 result."""
    b, c, h, w = logits.shape
    wd = work_dtype(logits.dtype)
    out = torch.empty((b, h, w), dtype=torch.float32, device=logits.device)
    for r0, r1 in row_bands(h, b * c * w):
        out[:, r0:r1] = fn(logits[:, :, r0:r1].to(wd))
    return out


def max_logit(logits: torch.Tensor) -> torch.Tensor:
    """``-max_c logits``: the max-logit anomaly score (float32 ``B x H x W``)."""
    logits = as_logits(logits)
    check_finite(logits)
    return torch.amax(logits, dim=1).to(torch.float32).neg_()


def softmax_terms(logits: torch.Tensor, max_logit: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel ``s = sum_c exp(x_c - L)`` and ``t = sum_c exp(x_c - L) (x_c - L)`` (work dtype, ``B x H x W``).

    One exponential per logit gives all three softmax-type scores:
    ``msp = -1 / s``, ``energy (T=1) = -(log s + L)`` and ``entropy = log s - t / s``
    (see :func:`msp_from_terms` etc.). ``max_logit`` is ``L`` (the channel max,
    e.g. from :func:`max_and_argmax`); computed here when omitted. Non-finite
    logits always make ``s`` or ``t`` non-finite (NaN or +inf propagate through
    ``L``; a -inf logit gives ``0 * -inf``), so callers check the two small maps
    instead of the logits. No validation: see :func:`as_logits`.
    """
    b, c, h, w = logits.shape
    wd = work_dtype(logits.dtype)
    if max_logit is None:
        max_logit, _ = max_and_argmax(logits)
    m = max_logit.to(wd)
    s = torch.empty((b, h, w), dtype=wd, device=logits.device)
    t = torch.empty((b, h, w), dtype=wd, device=logits.device)
    rows = softmax_band_rows(logits.shape)
    d = torch.empty((b, c, rows, w), dtype=wd, device=logits.device)
    e = torch.empty((b, c, rows, w), dtype=wd, device=logits.device)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        n = r1 - r0
        db, eb = d[:, :, :n], e[:, :, :n]
        torch.sub(logits[:, :, r0:r1], m[:, None, r0:r1], out=db)  # x - L: the terms softmax uses
        torch.exp(db, out=eb)
        torch.sum(eb, dim=1, out=s[:, r0:r1])
        eb.mul_(db)
        torch.sum(eb, dim=1, out=t[:, r0:r1])
    return s, t


def softmax_band_rows(shape: Sequence[int]) -> int:
    """Rows per band of :func:`softmax_terms` for logits of ``shape`` (``B x C x H x W``).

    Bands of ~2^19 logits: the two band temporaries (2 MB each) stay in L2/L3 across
    the op chain, and the ops are long enough that per-op overhead (and, with
    intra-op threads, the fork/join) stays small (19 x 720 x 1280: 20.5 ms vs 21.8 ms
    with 2^17 on one thread, 11 ms vs 16 ms on two).
    The sums over classes are bit-identical only for identical band shapes, so
    callers that split the rows (e.g. between threads) split at multiples of this.
    """
    b, c, h, w = shape
    return min(h, rows_per_band(b * c * w, _BAND_ELEMENTS * 2))


def msp_from_terms(s: torch.Tensor) -> torch.Tensor:
    """``-max softmax = -1 / s`` (float32) from :func:`softmax_terms`."""
    return s.reciprocal().neg_().to(torch.float32)


def energy_from_terms(s: torch.Tensor, max_logit: torch.Tensor) -> torch.Tensor:
    """``-logsumexp(logits) = -(log s + L)`` (float32), the energy at ``T = 1``, from :func:`softmax_terms`."""
    # log s + L in that order: the same operations torch.logsumexp performs
    return torch.log(s).add_(max_logit.to(s.dtype)).neg_().to(torch.float32)


def entropy_from_terms(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``-sum p log p = log s - t / s`` (float32) from :func:`softmax_terms`.

    Both parts are non-negative (``t <= 0``), so there is no cancellation.
    """
    return torch.log(s).sub_(t / s).to(torch.float32)


def _checked_terms(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    values, _ = max_and_argmax(logits)
    s, t = softmax_terms(logits, values)
    check_terms(logits, s, t)
    return s, t, values


def check_terms(logits: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> None:
    """Raise :class:`InputError` naming the bad logit when :func:`softmax_terms` saw a non-finite one."""
    # 1 <= s <= C and -C/e <= t <= 0 when finite, so their sums cannot overflow: a sum is
    # finite exactly when every term is (one cheap reduction each, no boolean map)
    ok = bool(torch.isfinite(s.sum() + t.sum()))   # one host sync for both
    if not ok:
        check_finite(logits)  # finds and names it
        raise InputError("the softmax of the logits is not finite; check the model output")  # pragma: no cover


def msp(logits: torch.Tensor) -> torch.Tensor:
    """``-max_c softmax(logits)_c``: maximum softmax probability, negated (float32 ``B x H x W``)."""
    logits = as_logits(logits)
    s, _, _ = _checked_terms(logits)
    # max softmax = exp(0) / sum_c exp(x_c - max), the same terms softmax uses
    return msp_from_terms(s)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """``-sum_c p_c log p_c`` with ``p = softmax(logits)``, natural log (float32 ``B x H x W``)."""
    logits = as_logits(logits)
    s, t, _ = _checked_terms(logits)
    return entropy_from_terms(s, t)


def energy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``-T * logsumexp(logits / T)`` over classes (float32 ``B x H x W``); ``T > 0``."""
    temperature = _check_temperature(temperature)
    logits = as_logits(logits)
    if temperature == 1.0:
        s, _, values = _checked_terms(logits)
        return energy_from_terms(s, values)
    check_finite(logits)

    def band(x: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(x / temperature, dim=1).mul_(-temperature)

    return _bandwise(logits, band)


def _check_temperature(temperature: float) -> float:
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise InputError(f"energy temperature must be a positive number, got {temperature!r}") from None
    if not (np.isfinite(t) and t > 0):
        raise InputError(f"energy temperature must be a positive finite number, got {temperature!r}")
    return t


def check_gen_settings(gamma: float, M: int | None) -> tuple[float, int | None]:
    """GEN's ``gamma`` (finite, > 0) and ``M`` (an integer >= 1, or None for ``min(100, C)``), checked."""
    try:
        g = float(gamma)
    except (TypeError, ValueError):
        raise InputError(f"gen gamma must be a positive number, got {gamma!r}") from None
    if not (np.isfinite(g) and g > 0):
        raise InputError(f"gen gamma must be a positive finite number, got {gamma!r}")
    if M is None:
        return g, None
    if isinstance(M, bool) or not isinstance(M, (int, np.integer)) or M < 1:
        raise InputError(f"gen M (how many of the largest class probabilities are summed) must be an integer "
                         f">= 1, or None for min(100, number of classes); got {M!r}")
    return g, int(M)


def gen(logits: torch.Tensor, gamma: float = 0.1, M: int | None = None) -> torch.Tensor:
    """Generalized entropy (GEN, Liu et al., CVPR 2023), float32 ``B x H x W``, higher = more anomalous.

    ``sum over the M largest p_c of p_c^gamma * (1 - p_c)^gamma`` with ``p = softmax(logits)``;
    ``M`` defaults to ``min(100, C)`` (the authors' 100) and must be at most ``C``.
    """
    gamma, m = check_gen_settings(gamma, M)
    logits = as_logits(logits)
    c = logits.shape[1]
    m = min(100, c) if m is None else m
    if m > c:
        raise InputError(f"gen M={m} exceeds the {c} classes of the logits; give M <= {c} (or leave it unset)")
    check_finite(logits)

    def band(x: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(x, dim=1)
        if m < c:  # the order of the terms is irrelevant, so an unsorted top-M suffices
            p = torch.topk(p, m, dim=1, sorted=False).values
        return torch.rsub(p, 1).pow_(gamma).mul_(p.pow(gamma)).sum(dim=1)

    return _bandwise(logits, band)


def standardize(max_logit_map: torch.Tensor, pred: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """``(L - mean[pred]) / std[pred]`` (before negation), computed in ``L``'s dtype, band by band.

    Uses subtraction then division in the map's dtype so float32 results are
    bit-identical to the reference implementation. ``out`` may be ``max_logit_map``.
    """
    if out is None:
        out = torch.empty_like(max_logit_map)
    dev, dt = max_logit_map.device, max_logit_map.dtype
    mean = mean.to(device=dev, dtype=dt)
    std = std.to(device=dev, dtype=dt)
    b, h, w = max_logit_map.shape
    rows = min(h, rows_per_band(b * w))
    # int64 indices and contiguous lookups: the fastest gather path on CPU
    idx = torch.empty(b * rows * w, dtype=torch.int64, device=dev)
    mu = torch.empty(b * rows * w, dtype=dt, device=dev)
    sd = torch.empty(b * rows * w, dtype=dt, device=dev)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        n = b * (r1 - r0) * w
        shape = (b, r1 - r0, w)
        idx[:n].view(shape).copy_(pred[:, r0:r1])
        torch.index_select(mean, 0, idx[:n], out=mu[:n])
        torch.index_select(std, 0, idx[:n], out=sd[:n])
        ob = out[:, r0:r1]
        torch.sub(max_logit_map[:, r0:r1], mu[:n].view(shape), out=ob)
        ob.div_(sd[:n].view(shape))
    return out
