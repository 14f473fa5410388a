"""Per-class statistics of the max logit (spec 2): streaming, exact, mergeable.

For each class ``c`` (the argmax prediction) the object keeps the pixel count
``n``, the mean of the max logit and ``M2`` (sum of squared deviations from the
mean), all float64. A batch contributes its exact two-pass per-class moments,
combined with the running ones by Chan et al.'s parallel update, so the result
does not depend on batch size, batch order or process split beyond float64
rounding, and memory does not grow with the data.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from sml.data.cityscapes import cityscapes_tables
from sml.errors import InputError
from sml.scores import functional as F
from sml.stats import validate
from sml.utils.state import Stateful
from sml.utils.device import on_device, to_host

__all__ = ["ClassStatistics", "CITYSCAPES_CLASSES"]

CITYSCAPES_CLASSES = cityscapes_tables()[2]  # the one class table, from cityscapesscripts

FORMAT = "sml-class-statistics/1"


def _float_or_none(v: float) -> float | None:
    return None if not math.isfinite(v) else float(v)


def _sum_on_host(x: torch.Tensor) -> bool:
    """CPU tensors are summed by NumPy (sequential, so partial statistics are bit-identical wherever they
    are computed); tensors on other devices are summed where they are (:func:`_device_moments`; the one
    switch of :mod:`sml.utils.device`)."""
    return not on_device(x)


Moments = tuple[np.ndarray, np.ndarray, np.ndarray]


def _host_moments(pred: torch.Tensor, values: torch.Tensor, valid: torch.Tensor | None, c: int) -> Moments | None:
    """Per-class float64 ``(n, mean, M2)`` of a batch (exact two-pass) by sequential NumPy bincount."""
    p = pred.detach().reshape(-1).cpu().numpy().astype(np.intp, copy=False)
    v = values.detach().reshape(-1).cpu().numpy().astype(np.float64)
    if valid is not None:
        keep = valid.detach().reshape(-1).cpu().numpy()
        p, v = p[keep], v[keep]
    if p.size == 0:
        return None
    n = np.bincount(p, minlength=c).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, np.bincount(p, weights=v, minlength=c) / n, 0.0)
    dev = v - mean[p]
    return n, mean, np.bincount(p, weights=dev * dev, minlength=c)


def _device_moments(pred: torch.Tensor, values: torch.Tensor, valid: torch.Tensor | None, c: int) -> Moments:
    """:func:`_host_moments` computed on the tensors' device (float64 ``index_add_``, same two passes);
    only the three ``C``-length vectors come to the host, and nothing before that needs a host sync."""
    dev = values.device
    p = pred.detach().reshape(-1).to(torch.int64)
    v = values.detach().reshape(-1).to(torch.float64)
    bins = c
    if valid is not None:   # masked pixels go to one extra bin, dropped at the end (no boolean indexing)
        p = torch.where(valid.detach().reshape(-1).to(dev), p, c)
        bins = c + 1
    n = torch.zeros(bins, dtype=torch.float64, device=dev).index_add_(0, p, torch.ones_like(v))
    total = torch.zeros(bins, dtype=torch.float64, device=dev).index_add_(0, p, v)
    mean = torch.where(n > 0, total / n.clamp(min=1), 0.0)
    d = v - mean[p]
    m2 = torch.zeros(bins, dtype=torch.float64, device=dev).index_add_(0, p, d * d)
    out = to_host(torch.stack([n, mean, m2])[:, :c])
    return out[0], out[1], out[2]


class ClassStatistics(Stateful):
    """Streaming per-class count / mean / unbiased variance of the max logit over predicted classes.

    ``count``, ``mean``, ``m2``, ``var`` (unbiased, ``m2 / (n - 1)``) and
    ``std`` are float64 NumPy arrays of length ``num_classes``; classes with
    fewer than 2 pixels have NaN variance, classes with no pixel NaN mean.
    Statistics read from the reference ``.npy`` files have no counts (NaN).
    ``model`` identifies the network they came from (``SegmentationModel.identity``:
    name, sha256 of its weights or network file; `sml stats` records it), which
    `sml eval` / `sml predict` compare with the network in use
    (:mod:`sml.pipelines.pairing`); ``class_names`` are the network's, in order.
    ``state_dict()`` / ``load_state_dict()`` / ``merge`` / ``sync`` follow
    :class:`sml.utils.state.Stateful`.
    """

    _sync_once = False  # merging every rank's state again is what a second sync() always did

    def __init__(self, num_classes: int = 19, class_names: Sequence[str] | None = None,
                 model: Any = None, data: Any = None) -> None:
        args = validate.ARGUMENTS.read({"num_classes": num_classes, "class_names": class_names})
        self._setup(args["num_classes"], args["class_names"], model, data)

    def _setup(self, num_classes: int, class_names: Sequence[str] | None, model: Any, data: Any) -> None:
        """Empty statistics of checked settings (``class_names`` None: the defaults)."""
        self.num_classes = int(num_classes)
        self.class_names = list(class_names) if class_names is not None else validate.default_names(self.num_classes)
        self.model = model
        self.data = data
        #: how the network ran (precision, compile, tf32, layout), recorded by `sml stats`
        self.inference: str | None = None
        self.created: str | None = None
        self._n = np.zeros(self.num_classes, dtype=np.float64)
        self._mean = np.zeros(self.num_classes, dtype=np.float64)
        self._m2 = np.zeros(self.num_classes, dtype=np.float64)
        # Reference .npy files carry mean and var but no counts.
        self._ref_var: np.ndarray | None = None

    # ------------------------------------------------------------------ views
    @property
    def has_counts(self) -> bool:
        """False for statistics read from reference files (no counts, so no merging)."""
        return self._ref_var is None

    @property
    def count(self) -> np.ndarray:
        """Pixels per class (float64; NaN when unknown)."""
        return self._n.copy() if self.has_counts else np.full(self.num_classes, np.nan)

    @property
    def mean(self) -> np.ndarray:
        """Mean max logit per class (NaN for classes with no pixel)."""
        if not self.has_counts:
            return self._mean.copy()
        return np.where(self._n > 0, self._mean, np.nan)

    @property
    def m2(self) -> np.ndarray:
        """Sum of squared deviations from the mean per class (NaN when unknown)."""
        return self._m2.copy() if self.has_counts else np.full(self.num_classes, np.nan)

    @property
    def var(self) -> np.ndarray:
        """Unbiased variance ``M2 / (n - 1)`` per class (NaN for ``n < 2``)."""
        if not self.has_counts:
            return self._ref_var.copy()  # type: ignore[union-attr]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self._n >= 2, self._m2 / (self._n - 1), np.nan)

    @property
    def std(self) -> np.ndarray:
        """``sqrt(var)`` per class."""
        with np.errstate(invalid="ignore"):
            return np.sqrt(self.var)

    @property
    def usable(self) -> np.ndarray:
        """Bool per class: enough pixels (``n >= 2``) and a finite positive variance."""
        var = self.var
        ok = np.isfinite(var) & (var > 0) & np.isfinite(self.mean)
        return ok & (self._n >= 2) if self.has_counts else ok

    def unusable_classes(self) -> list[str]:
        """Names of the classes that fall back to the pooled statistics when scoring."""
        return [name for name, ok in zip(self.class_names, self.usable) if not ok]

    @property
    def total(self) -> float:
        """Total number of pixels seen."""
        return float(self._n.sum()) if self.has_counts else math.nan

    def pooled(self) -> tuple[float, float]:
        """Mean and unbiased std of the max logit over all pixels of all classes.

        Without counts (reference files), the equal-weight mixture of the usable
        classes: mean of the means, and the mixture's variance.
        """
        if self.has_counts:
            n = self._n.sum()
            if n < 2:
                return math.nan, math.nan
            mean = float((self._n * self._mean).sum() / n)
            m2 = float((self._m2 + self._n * (self._mean - mean) ** 2).sum())
            return mean, math.sqrt(m2 / (n - 1))
        ok = self.usable
        if not ok.any():
            return math.nan, math.nan
        mu, var = self._mean[ok], self._ref_var[ok]  # type: ignore[index]
        mean = float(mu.mean())
        return mean, math.sqrt(float((var + (mu - mean) ** 2).mean()))

    def scoring_tensors(self, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-class ``(mean, std)`` tensors for scoring; unusable classes get the pooled mean/std.

        Raises :class:`InputError` when no class is usable (nothing to fall back on).
        """
        ok = self.usable
        mean, std = self.mean, self.std
        if not ok.all():
            pm, ps = self.pooled()
            if not (math.isfinite(pm) and math.isfinite(ps) and ps > 0):
                raise InputError(
                    "the class statistics have no usable class (every class has fewer than 2 pixels or zero "
                    "variance); compute them on more in-distribution images with `sml stats`")
            mean = np.where(ok, mean, pm)
            std = np.where(ok, std, ps)
        return (torch.as_tensor(mean, dtype=dtype, device=device),
                torch.as_tensor(std, dtype=dtype, device=device))

    # ------------------------------------------------------------------ accumulation
    def update(self, logits: torch.Tensor, valid: torch.Tensor | None = None) -> "ClassStatistics":
        """Add the pixels of ``B x C x H x W`` logits (any float dtype, any device).

        ``valid`` (bool ``B x H x W``, e.g. ``labels != 255``) restricts the
        statistics to those pixels; by default every pixel counts.
        """
        logits = F.as_logits(logits)
        if logits.shape[1] != self.num_classes:
            raise InputError(f"the logits have {logits.shape[1]} classes but these statistics have "
                             f"{self.num_classes}")
        F.check_finite(logits)
        values, pred = F.max_and_argmax(logits)
        return self._add(pred, values, valid)

    def update_from_predictions(self, pred: torch.Tensor | np.ndarray, max_logit: torch.Tensor | np.ndarray,
                                valid: torch.Tensor | np.ndarray | None = None) -> "ClassStatistics":
        """Add pixels given their predicted class (integer) and max logit (float), same shape."""
        pred_t = torch.as_tensor(pred)
        max_t = torch.as_tensor(max_logit)
        if pred_t.shape != max_t.shape:
            raise InputError(f"pred has shape {tuple(pred_t.shape)} but max_logit has {tuple(max_t.shape)}")
        if pred_t.is_floating_point() or pred_t.dtype == torch.bool:
            raise InputError(f"pred must hold integer class indices, got dtype {pred_t.dtype}")
        if not max_t.is_floating_point():
            raise InputError(f"max_logit must be floating point, got dtype {max_t.dtype}")
        if not bool(torch.isfinite(max_t).all()):
            raise InputError("max_logit contains NaN or infinite values; check the model output")
        if pred_t.numel() and (int(pred_t.min()) < 0 or int(pred_t.max()) >= self.num_classes):
            raise InputError(f"pred holds class indices outside 0..{self.num_classes - 1}")
        return self._add(pred_t, max_t, None if valid is None else torch.as_tensor(valid))

    def _add(self, pred: torch.Tensor, values: torch.Tensor, valid: torch.Tensor | None) -> "ClassStatistics":
        self._require_counts("update")
        if valid is not None and (tuple(valid.shape) != tuple(pred.shape) or valid.dtype != torch.bool):
            raise InputError(f"valid must be a bool mask of shape {tuple(pred.shape)}, "
                             f"got {valid.dtype} {tuple(valid.shape)}")
        if _sum_on_host(pred):
            moments = _host_moments(pred, values, valid, self.num_classes)
        else:
            moments = _device_moments(pred, values, valid, self.num_classes)
        if moments is not None:
            self._combine(*moments)
        return self

    def _combine(self, n_b: np.ndarray, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        """Chan et al.'s parallel update of (n, mean, M2) with another partial (exact when one side is empty)."""
        n_a, mean_a, m2_a = self._n, self._mean, self._m2
        n = n_a + n_b
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = mean_b - mean_a
            mean = mean_a + delta * (n_b / n)
            m2 = m2_a + m2_b + delta * delta * (n_a * n_b / n)
        self._mean = np.where(n_b == 0, mean_a, np.where(n_a == 0, mean_b, mean))
        self._m2 = np.where(n_b == 0, m2_a, np.where(n_a == 0, m2_b, m2))
        self._n = n

    def merge(self, other: "ClassStatistics") -> "ClassStatistics":
        """Add another partial's pixels to this one (in place; returns ``self``)."""
        if not isinstance(other, ClassStatistics):
            raise InputError(f"can only merge ClassStatistics, got {type(other).__name__}")
        if other.num_classes != self.num_classes:
            raise InputError(f"cannot merge statistics of {other.num_classes} classes into {self.num_classes}")
        self._require_counts("merge")
        other._require_counts("merge")
        self._combine(other._n.copy(), other._mean.copy(), other._m2.copy())
        return self

    def copy(self) -> "ClassStatistics":
        """An independent copy."""
        return ClassStatistics.from_state_dict(self.state_dict())

    def state_dict(self) -> dict[str, Any]:
        """Settings and the float64 arrays ``n``, ``mean``, ``m2`` (``ref_var`` for reference statistics)."""
        return {"num_classes": self.num_classes, "class_names": list(self.class_names), "model": self.model,
                "data": self.data, "created": self.created, "n": self._n.copy(), "mean": self._mean.copy(),
                "m2": self._m2.copy(), "ref_var": None if self._ref_var is None else self._ref_var.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> "ClassStatistics":
        """Replace the state with ``state`` (from :meth:`state_dict`); an inconsistent state is refused.

        Counts are non-negative integers; means and sums of squares are finite, ``m2 >= 0``, and
        ``m2 == 0`` for a class with fewer than 2 pixels; reference statistics (``ref_var``) have no counts.
        """
        v = validate.STATE.read(state)
        self._setup(v["num_classes"], v["class_names"], v["model"], v["data"])
        self.created = v["created"]
        self._n, self._mean, self._m2 = (v[k].astype(np.float64) for k in ("n", "mean", "m2"))
        self._ref_var = None if v["ref_var"] is None else v["ref_var"].astype(np.float64)
        return self

    def digest(self) -> str:
        """sha256 of the classes and numbers (not the provenance): what a resumed run checks is unchanged."""
        import hashlib

        numbers = {"class_names": self.class_names, "n": self._n.tolist(), "mean": self._mean.tolist(),
                   "m2": self._m2.tolist(), "ref_var": None if self._ref_var is None else self._ref_var.tolist()}
        return hashlib.sha256(json.dumps(numbers, allow_nan=True).encode()).hexdigest()

    def _require_counts(self, what: str) -> None:
        if not self.has_counts:
            raise InputError(f"cannot {what} statistics read from reference .npy files: they carry no pixel "
                             f"counts; recompute them with `sml stats`")

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (the stats.json schema; ``m2`` makes merging and resuming exact)."""
        return {
            "format": FORMAT,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "count": [None if not math.isfinite(c) else int(c) for c in self.count],
            "mean": [_float_or_none(x) for x in self.mean],
            "var": [_float_or_none(x) for x in self.var],
            "m2": [_float_or_none(x) for x in self.m2] if self.has_counts else None,
            "usable": [bool(x) for x in self.usable],
            "model": self.model,
            "data": self.data,
            "created": self.created,
        } | ({"inference": self.inference} if self.inference is not None else {})

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "statistics") -> "ClassStatistics":
        """Inverse of :meth:`to_dict` (accepts files without ``m2``: it is rebuilt from ``var``); the dict is
        checked as a ``stats.json`` (:data:`sml.stats.validate.STATS_JSON`), refusals naming ``source``."""
        v = validate.STATS_JSON.read(d, source)
        out = cls.__new__(cls)
        out._setup(v["num_classes"], v["class_names"], v["model"], v["data"])
        out.created, out.inference = v["created"], v["inference"]
        count, mean, var = (np.array([np.nan if x is None else x for x in v[k]], dtype=np.float64)
                            for k in ("count", "mean", "var"))
        if np.isnan(count).all():  # reference-style statistics without counts
            out._mean, out._ref_var = mean, var
            return out
        if v["m2"] is not None:
            m2 = np.array([np.nan if x is None else x for x in v["m2"]], dtype=np.float64)
        else:
            with np.errstate(invalid="ignore"):
                m2 = var * (count - 1)
        out._n = count
        out._mean = np.where(count > 0, np.nan_to_num(mean), 0.0)
        out._m2 = np.where(count > 1, np.nan_to_num(m2), 0.0)
        return out

    def save(self, path: str | Path) -> None:
        """Write the statistics as human-readable JSON (atomically), after the checks :meth:`load` applies:
        a file that would be refused when read back is never written."""
        from sml.utils.atomic import write_json

        if self.created is None:
            self.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        d = self.to_dict()
        try:
            validate.check_stats_dict(json.loads(json.dumps(d)), path)
        except InputError as exc:
            fix = ("Such numbers come from a damaged or edited resume chunk or from code that changed the "
                   "statistics' arrays; compute them again with `sml stats` (without --resume).")
            raise InputError(f"refusing to write inconsistent statistics: {str(exc).replace(validate.READ_FIX, fix)}") from None
        write_json(path, d)

    @classmethod
    def load(cls, path: str | Path) -> "ClassStatistics":
        """Read a stats.json written by :meth:`save` / ``sml stats`` (damaged or inconsistent files are refused)."""
        return cls.from_dict(validate.parse_stats_json(path), source=str(path))

    @classmethod
    def from_reference_npy(cls, mean_path: str | Path, var_path: str | Path,
                           class_names: Sequence[str] | None = None) -> "ClassStatistics":
        """Read the reference implementation's ``*_mean.npy`` / ``*_var.npy`` without running pickle code.

        These files carry no pixel counts: every class with a finite positive
        variance is usable; merging is not possible. They name no network; the
        pipelines recognise the published ones by their values as the zoo entry
        ``deeplabv3plus_r101_os8``'s (:mod:`sml.pipelines.pairing`).
        """
        from sml.stats.reference_npy import read_reference_npy

        means, vars_ = read_reference_npy(mean_path), read_reference_npy(var_path)
        c = validate.check_reference_stats(means, vars_, mean_path, var_path, class_names)
        out = cls.__new__(cls)  # the classes were checked with the files
        out._setup(c, None if class_names is None else [str(n) for n in class_names], None,
                   {"reference": [str(mean_path), str(var_path)]})
        out._mean = np.array([means[i] for i in range(c)], dtype=np.float64)
        out._ref_var = np.array([vars_[i] for i in range(c)], dtype=np.float64)
        return out

    def __repr__(self) -> str:
        return (f"ClassStatistics(num_classes={self.num_classes}, pixels={self.total:.0f}, "
                f"unusable={self.unusable_classes()})")
