"""Scorer objects: one per method, carrying its settings, all called the same way.

``scorer(logits)`` maps ``B x C x H x W`` logits to a float32 ``B x H x W``
anomaly map (higher = more anomalous). Scorers whose score depends only on the
channel max and argmax (``max_logit``, ``sml``) also offer
``score_from(max_logit, pred)`` so a pipeline can compute those once and share
them between methods. :class:`LogitContext` goes further: it holds one frame's
logits and computes, once and only on demand, what several scorers share (the
channel max/argmax; the softmax terms behind msp, entropy and energy), and
``scorer.score_context(ctx)`` draws from it. A mask-classification network's frame
is scored through :class:`MaskClassificationContext`: its class scores ``S`` stand
in for the logits (computed once, on demand), and EAM reads the per-query outputs.
Each scorer declares the network outputs it applies to (``output_kinds``, from
:data:`sml.scores.registry.APPLIES_TO`); :func:`build_scorers` refuses the others.
"""
from __future__ import annotations

from typing import Any, ClassVar, Protocol, Sequence, runtime_checkable

import torch

from sml.errors import InputError
from sml.scores import functional as F
from sml.scores.mask_classification import MaskClassificationOutput, rba
from sml.scores.registry import APPLIES_TO, METHODS, PER_QUERY, canonical_method, check_methods_apply
from sml.scores.postprocess import (
    Border,
    boundary_suppression,
    check_smoothing_settings,
    check_suppression_settings,
    dilated_smoothing,
)



@runtime_checkable
class Statistics(Protocol):
    """What SML reads of class statistics: a :class:`sml.ClassStatistics` (:mod:`sml.stats` sits above the
    scorers, whose score functions it uses; the scorers read statistics through this face only)."""

    num_classes: int

    def scoring_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-class mean and std for standardizing (unusable classes take the pooled values)."""
        ...

__all__ = ["METHODS", "canonical_method", "check_methods_apply", "build_scorers", "LogitContext",
           "MaskClassificationContext", "context_for", "Scorer", "MSP", "MaxLogit", "Entropy", "Energy", "SML", "GEN", "RbA", "EAM",
           "SCORERS", "build_scorer"]


class LogitContext:
    """One frame's logits and the per-pixel quantities several scorers share, each computed at most once.

    ``max_and_argmax()`` serves max_logit and sml; ``softmax_terms()`` (one
    exponential per logit, :func:`sml.scores.functional.softmax_terms`) serves
    msp, entropy and energy at ``T = 1``. Results equal each scorer's own call.
    """

    def __init__(self, logits: torch.Tensor) -> None:
        self._logits: torch.Tensor | None = F.as_logits(logits)
        self._max: tuple[torch.Tensor, torch.Tensor] | None = None
        self._terms: tuple[torch.Tensor, torch.Tensor] | None = None
        self._max_checked = False

    @property
    def logits(self) -> torch.Tensor:
        """The frame's per-pixel class logits ``B x C x H x W``."""
        return self._logits

    def max_and_argmax(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L, pred)`` as :func:`sml.scores.functional.max_and_argmax` (not validated)."""
        if self._max is None:
            self._max = F.max_and_argmax(self.logits)
        return self._max

    def checked_max_and_argmax(self) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`max_and_argmax` with the max map checked finite (once per frame: one host sync)."""
        values, pred = self.max_and_argmax()
        if not self._max_checked:
            _check_max_map(values)
            self._max_checked = True
        return values, pred

    def softmax_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(s, t)`` of :func:`sml.scores.functional.softmax_terms`; non-finite logits raise :class:`InputError`."""
        if self._terms is None:
            values, _ = self.max_and_argmax()
            s, t = F.softmax_terms(self.logits, values)
            F.check_terms(self.logits, s, t)
            self._terms = (s, t)
        return self._terms


class MaskClassificationContext(LogitContext):
    """One frame of a mask-classification network (:class:`MaskClassificationOutput`).

    ``logits`` are its per-pixel class scores ``S`` (sml-algorithm.md section 8), formed on first use and
    shared, with everything :class:`LogitContext` derives from them, by sml, max_logit, msp, entropy,
    energy and rba; :meth:`eam` is EAM's map, also formed once.
    """

    def __init__(self, output: MaskClassificationOutput) -> None:
        if not isinstance(output, MaskClassificationOutput):
            raise InputError(f"MaskClassificationContext needs a MaskClassificationOutput, got {type(output).__name__}")
        self.output = output
        self._logits = None
        self._eam: torch.Tensor | None = None
        self._max = None
        self._terms = None
        self._max_checked = False

    @property
    def logits(self) -> torch.Tensor:
        """The class scores ``S`` ``B x K x H x W`` at the output size."""
        if self._logits is None:
            self._logits = self.output.class_scores()
        return self._logits

    def eam(self) -> torch.Tensor:
        """EAM's anomaly map ``B x H x W`` (:func:`sml.scores.eam`)."""
        if self._eam is None:
            self._eam = self.output.eam()
        return self._eam


def context_for(output: "torch.Tensor | MaskClassificationOutput") -> LogitContext:
    """The context one frame's methods share: a :class:`MaskClassificationContext` for a mask-classification
    network's outputs, a :class:`LogitContext` for logits (what ``SegmentationModel.predict_output`` gives)."""
    if isinstance(output, MaskClassificationOutput):
        return MaskClassificationContext(output)
    return LogitContext(output)


class Scorer:
    """Base class: ``name``, ``needs_stats``, ``uses_max_only``, ``output_kinds``, ``settings()``, ``__call__``."""

    name: ClassVar[str] = ""
    needs_stats: ClassVar[bool] = False
    #: True when ``score_from(max_logit, pred)`` is available.
    uses_max_only: ClassVar[bool] = False

    #: the network output kinds the method applies to (``logits``, ``mask-classification``), from the registry
    output_kinds: ClassVar[tuple[str, ...]] = ()
    #: True when the method reads a mask-classification network's per-query outputs, not only ``S``
    needs_queries: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name in APPLIES_TO:  # one table, in the registry, says it for every method
            cls.output_kinds = APPLIES_TO[cls.name]
            cls.needs_queries = cls.name in PER_QUERY

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """The method's settings as a JSON-able dict (enough to rebuild it with :func:`build_scorer`)."""
        return {}

    def score_context(self, ctx: LogitContext) -> torch.Tensor:
        """Score one frame from a :class:`LogitContext`, reusing what other scorers already computed there."""
        return self(ctx.logits)

    def score_from(self, max_logit: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """Score from a precomputed channel max ``B x H x W`` and argmax (max-based methods only)."""
        raise InputError(f"method {self.name!r} needs the full logits, not just their max and argmax")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"


class MSP(Scorer):
    """Negated maximum softmax probability."""

    name = "msp"

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return F.msp(logits)

    def score_context(self, ctx: LogitContext) -> torch.Tensor:
        return F.msp_from_terms(ctx.softmax_terms()[0])


class MaxLogit(Scorer):
    """Negated maximum logit."""

    name = "max_logit"
    uses_max_only = True

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return F.max_logit(logits)

    def score_from(self, max_logit: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        values = _check_max_map(max_logit)
        return values.to(torch.float32).neg()

    def score_context(self, ctx: LogitContext) -> torch.Tensor:
        return ctx.checked_max_and_argmax()[0].to(torch.float32).neg()


class Entropy(Scorer):
    """Softmax entropy (natural log)."""

    name = "entropy"

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return F.entropy(logits)

    def score_context(self, ctx: LogitContext) -> torch.Tensor:
        return F.entropy_from_terms(*ctx.softmax_terms())


class Energy(Scorer):
    """Free energy ``-T logsumexp(logits / T)``."""

    name = "energy"

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = F._check_temperature(temperature)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return F.energy(logits, self.temperature)

    def score_context(self, ctx: LogitContext) -> torch.Tensor:
        if self.temperature != 1.0:  # other temperatures need their own logsumexp
            return self(ctx.logits)
        return F.energy_from_terms(ctx.softmax_terms()[0], ctx.max_and_argmax()[0])

    def settings(self) -> dict[str, Any]:
        return {"temperature": self.temperature}


class SML(Scorer):
    """Standardized Max Logits: ``-(L - mu[pred]) / sigma[pred]``, boundary suppression, dilated smoothing.

    Classes whose statistics are unusable (fewer than 2 pixels or zero
    variance) are standardized with the pooled mean/std of all pixels
    (:meth:`ClassStatistics.scoring_tensors`). With ``suppression=False`` and
    ``smoothing=False`` the result is the plain standardized max logit.
    """

    name = "sml"
    needs_stats = True
    uses_max_only = True

    def __init__(self, stats: Statistics, boundary_width: int = 4, boundary_iterations: int = 4,
                 smoothing_kernel: int = 7, smoothing_dilation: int = 6, smoothing_sigma: float = 1.0,
                 border: Border = "reference", suppression: bool = True, smoothing: bool = True) -> None:
        if not isinstance(stats, Statistics):
            raise InputError(
                f"SML needs a sml.ClassStatistics (e.g. ClassStatistics.load('stats.json')), got {type(stats).__name__}")
        self.boundary_width, self.boundary_iterations, self.border = check_suppression_settings(
            boundary_width, boundary_iterations, border)
        self.smoothing_kernel, self.smoothing_dilation, self.smoothing_sigma = check_smoothing_settings(
            smoothing_kernel, smoothing_dilation, smoothing_sigma)
        for flag, value in (("suppression", suppression), ("smoothing", smoothing)):
            if not isinstance(value, bool):
                raise InputError(f"{flag} must be True or False, got {value!r}")
        self.suppression = suppression
        self.smoothing = smoothing
        self.stats = stats
        # Fails early (with the reason) if no class has usable statistics.
        self._mean, self._std = stats.scoring_tensors()
        self._cache: dict[tuple[torch.device, torch.dtype, bool], tuple[torch.Tensor, torch.Tensor]] = {}

    def settings(self) -> dict[str, Any]:
        return {
            "boundary_width": self.boundary_width,
            "boundary_iterations": self.boundary_iterations,
            "smoothing_kernel": self.smoothing_kernel,
            "smoothing_dilation": self.smoothing_dilation,
            "smoothing_sigma": self.smoothing_sigma,
            "border": self.border,
            "suppression": self.suppression,
            "smoothing": self.smoothing,
        }

    def _tables(self, device: torch.device, dtype: torch.dtype,
                padded: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-class mean/std in ``dtype`` on ``device``; ``padded``: NaN rows after the classes, up to
        index 255 (or ``num_classes``), for :meth:`_class_index`."""
        key = (device, dtype, padded)
        if key not in self._cache:
            # Rounded to the map's dtype first, as the reference code does with Python floats.
            mean, std = self._mean.to(device=device, dtype=dtype), self._std.to(device=device, dtype=dtype)
            if padded:
                rows = max(256, self.stats.num_classes + 1) - self.stats.num_classes
                nan = torch.full((rows,), float("nan"), dtype=dtype, device=device)
                mean, std = torch.cat([mean, nan]), torch.cat([std, nan])
            self._cache[key] = (mean, std)
        return self._cache[key]

    def _check_classes(self, num_classes: int) -> None:
        if num_classes != self.stats.num_classes:
            raise InputError(
                f"the logits have {num_classes} classes but the statistics have {self.stats.num_classes}; "
                f"compute statistics with the same model (sml stats) or drop extra channels")

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        logits = F.as_logits(logits)
        self._check_classes(logits.shape[1])
        F.check_finite(logits)
        values, pred = F.max_and_argmax(logits)
        return self._finish(values, pred)

    def score_context(self, ctx: LogitContext) -> torch.Tensor:
        self._check_classes(ctx.logits.shape[1])
        values, pred = ctx.checked_max_and_argmax()
        # pred comes from our own argmax, so only the max map needs checking (as score_from does)
        return self._finish(values.clone(), pred)

    def score_from(self, max_logit: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """Any integer class dtype, on any device; one host sync (the finiteness test of the result)."""
        values = _max_map(max_logit)
        if not isinstance(pred, torch.Tensor) or pred.shape != values.shape:
            raise InputError(f"pred must be a tensor of shape {tuple(values.shape)} (the max-logit map's shape)")
        if pred.is_floating_point() or pred.is_complex() or pred.dtype == torch.bool:
            raise InputError(f"pred must hold integer class indices, got dtype {pred.dtype}")
        if pred.device != values.device:
            raise InputError(f"pred is on {pred.device} but max_logit is on {values.device}")
        index = self._class_index(pred)
        values = values.to(F.work_dtype(values.dtype), copy=True)
        # Classes outside the table index NaN rows, so one finiteness test of the standardized map
        # checks the max logits and the classes together (no host sync of its own for the classes).
        mean, std = self._tables(values.device, values.dtype, padded=True)
        out = F.standardize(values, index, mean, std, out=values)
        if not (bool(torch.isfinite(out.sum(dtype=torch.float64))) or bool(torch.isfinite(out).all())):
            _check_max_map(max_logit)   # names non-finite max logits; else the classes were wrong
            raise InputError(f"pred holds class indices outside 0..{self.stats.num_classes - 1}")
        return self._finish(out, index, standardized=True)

    def _class_index(self, pred: torch.Tensor) -> torch.Tensor:
        """``pred`` as a compact index into the padded tables: uint8 with up to 255 classes (the fast
        dtype of every later step), else int64; out-of-range classes land on NaN rows. No host sync."""
        c = self.stats.num_classes
        if c <= 255:
            if pred.dtype == torch.uint8:
                return pred
            # -1 wraps to 255 and everything >= c stays >= c: NaN rows either way
            return pred.clamp(-1, min(255, torch.iinfo(pred.dtype).max)).to(torch.uint8)
        return pred.to(torch.int64).clamp(-1, c).remainder_(c + 1)   # -1 -> c, the NaN row

    def _finish(self, values: torch.Tensor, pred: torch.Tensor, standardized: bool = False) -> torch.Tensor:
        """Standardize ``values`` in place (unless done), post-process, negate; float32 result."""
        if standardized:
            out = values
        else:
            mean, std = self._tables(values.device, values.dtype)
            out = F.standardize(values, pred, mean, std, out=values)
        if self.suppression:
            boundary_suppression(out, pred, self.boundary_width, self.boundary_iterations, self.border,
                                 inplace=True)
        if self.smoothing:
            dilated_smoothing(out, self.smoothing_kernel, self.smoothing_dilation, self.smoothing_sigma,
                              inplace=True)
        return out.neg_() if out.dtype == torch.float32 else out.neg_().to(torch.float32)


class GEN(Scorer):
    """Generalized entropy (Liu et al., CVPR 2023) over the ``M`` largest softmax probabilities, exponent
    ``gamma`` (the paper's gamma, the issue's g); ``M=None``: ``min(100, C)``."""

    name = "gen"

    def __init__(self, gamma: float = 0.1, M: int | None = None) -> None:
        self.gamma, self.M = F.check_gen_settings(gamma, M)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return F.gen(logits, self.gamma, self.M)

    def settings(self) -> dict[str, Any]:
        return {"gamma": self.gamma, "M": self.M}


class RbA(Scorer):
    """Rejected by all (Nayal et al., ICCV 2023): ``-sum_c tanh(S_c)`` of a mask-classification network's
    class scores ``S`` (a tensor ``B x K x H x W``, or a :class:`MaskClassificationOutput`)."""

    name = "rba"

    def __call__(self, class_scores: torch.Tensor | MaskClassificationOutput) -> torch.Tensor:
        if isinstance(class_scores, MaskClassificationOutput):
            class_scores = class_scores.class_scores()
        return rba(class_scores)


class EAM(Scorer):
    """EAM (Grcić et al., CVPR-W 2023) from a mask-classification network's per-query outputs
    (:class:`MaskClassificationOutput`)."""

    name = "eam"

    def __call__(self, output: MaskClassificationOutput) -> torch.Tensor:
        if not isinstance(output, MaskClassificationOutput):
            raise InputError(_EAM_INPUT.format(type(output).__name__))
        return output.eam()

    def score_context(self, ctx: LogitContext) -> torch.Tensor:
        if not isinstance(ctx, MaskClassificationContext):
            raise InputError(_EAM_INPUT.format("per-pixel scores only"))
        return ctx.eam()


_EAM_INPUT = ("eam needs a mask-classification network's per-query class and mask logits "
              "(a sml.scores.MaskClassificationOutput), got {}")


def _max_map(max_logit: torch.Tensor) -> torch.Tensor:
    """The max-logit map's type and shape checked (no host sync)."""
    if not isinstance(max_logit, torch.Tensor) or max_logit.dim() != 3 or not max_logit.is_floating_point():
        shape = tuple(max_logit.shape) if isinstance(max_logit, torch.Tensor) else type(max_logit).__name__
        raise InputError(f"max_logit must be a floating-point tensor of shape B x H x W, got {shape}")
    return max_logit


def _check_max_map(max_logit: torch.Tensor) -> torch.Tensor:
    _max_map(max_logit)
    # one reduction; only a non-finite sum (NaN/inf, or an overflow of huge logits) pays for the exact test
    ok = bool(torch.isfinite(max_logit.sum(dtype=torch.float64))) or bool(torch.isfinite(max_logit).all())
    if not ok:
        raise InputError("max_logit contains NaN or infinite values; check the model output")
    return max_logit


SCORERS: dict[str, type[Scorer]] = {cls.name: cls for cls in (MSP, MaxLogit, Entropy, Energy, SML, GEN, RbA, EAM)}

assert set(METHODS) == set(SCORERS) == set(APPLIES_TO), "sml.scores.registry must name every scorer"


#: methods that read their input as logits (softmax / log-sum-exp), not as any per-class score
LOGIT_ONLY = ("msp", "entropy", "energy")


def build_scorers(methods: "Sequence[str]", stats: Statistics | None,
                  sml_settings: dict[str, Any] | None = None, model_kind: str = "logits",
                  settings: dict[str, dict[str, Any]] | None = None,
                  num_classes: int | None = None) -> dict[str, Scorer]:
    """One scorer per method, keyed by its registered name; ``sml`` gets ``stats`` and ``sml_settings``,
    every other method its entry of ``settings`` (e.g. ``{"gen": {"gamma": 0.2, "M": 10}}``).

    ``model_kind`` is the model's output kind (``SegmentationModel.kind``): methods that do not apply to it
    are refused (:func:`check_methods_apply`); with ``"mask-classification"`` (per-pixel class scores, not
    logits) msp, entropy and energy warn. ``num_classes`` (the network's), when given, is checked against
    the settings that depend on it (gen's ``M``), so that nothing fails at the first frame.
    """
    check_methods_apply(methods, model_kind)
    settings = _method_settings(methods, settings)
    misread = [canonical_method(m) for m in methods if canonical_method(m) in LOGIT_ONLY]
    if model_kind == "mask-classification" and misread:
        import warnings

        warnings.warn(f"{', '.join(dict.fromkeys(misread))}: the model's output is mask-classification class "
                      f"scores, not logits; these methods take a softmax of their input as if it were logits, so "
                      f"their maps are not the published methods and their numbers are not comparable to logit "
                      f"models' (sml and max_logit are meaningful; see the README, 'Bring your own network')",
                      UserWarning, stacklevel=2)
    out: dict[str, Scorer] = {}
    for m in methods:
        key = canonical_method(m)
        if SCORERS[key].needs_stats and stats is None:
            raise InputError(f"method {key} needs class statistics: pass --stats stats.json (made by `sml stats`), "
                             f"or leave {key} out of --method")
        given = {**(sml_settings or {}), **settings.get(key, {})} if key == "sml" else settings.get(key, {})
        out[key] = build_scorer(key, stats=stats, **given)
    gen = out.get("gen")
    if isinstance(gen, GEN) and gen.M is not None and isinstance(num_classes, int) and gen.M > num_classes:
        raise InputError(f"gen M={gen.M} exceeds the network's {num_classes} classes; give an M of at most "
                         f"{num_classes} (--gen-m), or leave it unset for min(100, number of classes)")
    return out


def _method_settings(methods: "Sequence[str]", settings: dict[str, dict[str, Any]] | None) -> dict[str, dict]:
    """``settings`` keyed by registered names; settings of a method that is not run are refused."""
    keys = {canonical_method(m) for m in methods}
    out: dict[str, dict[str, Any]] = {}
    for name, value in (settings or {}).items():
        key = canonical_method(name)
        if key not in keys:
            raise InputError(f"settings are given for method {key}, which is not among the methods run "
                             f"({', '.join(sorted(keys))}); add {key} to the methods or leave its settings out")
        out[key] = dict(value)
    return out


def build_scorer(name: str, stats: Statistics | None = None, **settings: Any) -> Scorer:
    """Build the scorer registered as ``name`` (see ``SCORERS``) with its settings.

    ``stats`` is required by methods with ``needs_stats`` and ignored by the
    others; unknown settings raise :class:`InputError` listing the valid ones.
    """
    key = canonical_method(name)
    cls = SCORERS[key]
    import inspect

    params = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "stats")]
    unknown = sorted(set(settings) - set(params))
    if unknown:
        valid = ", ".join(params) if params else "none"
        raise InputError(f"method {key!r} has no setting(s) {', '.join(unknown)}; valid settings: {valid}")
    if cls.needs_stats:
        if stats is None:
            raise InputError(f"method {key!r} needs class statistics: pass stats= (e.g. from `sml stats`)")
        return cls(stats, **settings)
    return cls(**settings)
