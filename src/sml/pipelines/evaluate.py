"""``sml eval``: anomaly scores of several methods on a benchmark, from one forward pass per frame.

:func:`evaluate` runs four named steps:

1. :func:`restore` - the partial state of an interrupted run (``--resume``);
2. :func:`score_frames` - frames decoded (:mod:`sml.pipelines.loader`: in order,
   ``batch_size`` frames of one size at a time, by worker processes ahead of the
   loop) -> ``model.predict_output`` of the batch at label resolution (the only
   forward pass, :func:`_score_batch`: logits, or a mask-classification network's
   outputs whole) -> per frame: every scorer on the same outputs (:func:`score_frame`)
   -> each method's frame into its pooled pixel metric
   (the ``--protocol``'s: :class:`~sml.metrics.AnomalyMetrics` and the frame's
   own AP, or the SegmentMeIfYouCan tool's binned state) and the per-class
   :class:`~sml.diagnostics.ClassDiagnostics` (from the same max logit and
   argmax) -> map files; every few minutes the state since the last save goes
   to a resume chunk;
3. :func:`finalize` - the processes' states merged in rank order, pooled
   metrics (restated in the protocol's terms) and curves;
4. :mod:`sml.pipelines.threshold_metrics` - only when maps were kept: the
   numbers that need thresholds known only at the end (false-positive area per
   frame, component metrics).

On an accelerator the maps stay there (the device path, :mod:`sml.utils.device`):
the pixel metrics and the diagnostics sort, count and histogram where the maps
live, and only their per-frame compact tables cross to the host; a full map
crosses only to be written (``--save-maps``, ``--report``, ``--components``).

The run directory (its files and what ``sml report`` reads) is written by
:mod:`sml.report.rundir`. Many processes: rank ``r`` scores ``frames[r::world]``;
rank 0 writes every run-level file.
"""
from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from sml.errors import InputError
from sml.pipelines import common, loader, writers
from sml.pipelines.consistency import FramePixels, check_eval_chunk, check_eval_results
from sml.pipelines.pairing import network_identity
from sml.pipelines.resume import ResumeStore, SavePolicy, dataset_identity, frame_files
from sml.report import rundir
from sml.scores.scorers import build_scorers
from sml.utils import atomic, distributed
from sml.utils.device import on_device, to_host
from sml.utils.progress import progress
from sml.utils.run_layout import PARTIAL

CURVE_POINTS = 2000
#: SegmentMeIfYouCan component-metric tracks by data-set kind (spec section 6)
TRACKS = {"smiyc-obstacle": "obstacle"}


@dataclass
class EvalConfig:
    """What to compute and write; see ``sml eval --help`` for each field."""

    methods: list[str]
    sml_settings: dict[str, Any] = field(default_factory=dict)
    method_settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # other methods' (gen's gamma, M)
    components: bool = False
    save_maps: list[str] = field(default_factory=list)
    report: bool = False
    limit: int | None = None
    resume: bool = False
    save_every: int | None = None  # frames between resume chunks; None: by time (save_interval)
    save_interval: float = 300.0   # seconds of work between resume chunks when save_every is None
    track: str | None = None
    frame_ap: bool | None = None   # each frame's AP in frames.json; None: only with ``report``
    overwrite: bool = False        # replace a finished run in ``out`` (its maps and report removed first)
    protocol: str = "exact"        # whose numbers (sml.protocols.PROTOCOLS; docs/protocols.md)
    diagnostics: bool = True       # per-class diagnostics (diagnostics.json) of labelled frames
    stats_from_other_network: bool = False  # use statistics of another / an unnamed network (recorded)
    batch_size: int = 1            # frames of one size through the network together (sml.pipelines.loader)
    workers: int | None = None     # decoding processes; None: loader.default_workers of the model's device


@dataclass
class EvalRun:
    """Result of :func:`evaluate`: the metrics.json content, per-frame records and stage timings.

    ``seconds`` per stage: ``decode``, ``forward``, ``scoring``, ``metrics`` (per frame: keys
    and the frame's AP), ``writing`` (maps, resume chunks), ``final`` (gather and pooled
    metrics), ``post`` (second pass over kept maps), ``results`` (the run's files).
    """

    metrics: dict[str, Any]
    frames: list[dict[str, Any]]
    seconds: dict[str, float]
    out: Path


@dataclass
class ScoredFrame:
    """One frame through :func:`score_frame`: each method's map, the predicted classes and their max logit
    (of a mask-classification network's class scores S)."""

    maps: dict[str, Any]          # method -> float32 H x W anomaly map: NumPy, or a tensor on its device (device path)
    pred: torch.Tensor            # B x H x W argmax of the logits (or S)
    max_logit: torch.Tensor       # B x H x W max of the logits (or S; what max_logit and sml start from)


def scorer_settings(scorer: Any) -> dict[str, Any]:
    """A scorer's settings as a dict (empty for methods without any)."""
    s = getattr(scorer, "settings", None)
    return dict(s()) if callable(s) else {}


def score_frame(scorers: dict[str, Any], output: Any) -> ScoredFrame:
    """Every method's ``H x W`` map from one frame's logits, or a mask-classification network's outputs
    (a :class:`~sml.scores.MaskClassificationOutput`).

    The methods share one context (:func:`sml.scores.context_for`): the channel max and
    argmax are computed once (max_logit, sml), and so is the one exponential per
    logit behind msp, entropy and energy; a mask-classification network's class
    scores S stand in for the logits (formed once), and EAM reads its per-query outputs.
    """
    from sml.scores import context_for

    with torch.inference_mode():
        ctx = context_for(output)
        maps = {m: _kept(sc.score_context(ctx)[0].float()) for m, sc in scorers.items()}
        values, pred = ctx.max_and_argmax()
        return ScoredFrame(maps, pred, values)


def _kept(t: torch.Tensor) -> Any:
    """A frame's map or prediction where its states count it: the tensor on the device path, else NumPy."""
    return t if on_device(t) else to_host(t)


@dataclass
class _Plan:
    """Everything a run needs, validated before the first forward pass."""

    out: Path
    kind: str
    methods: list[str]
    scorers: dict[str, Any]
    indices: list[int]
    formats: list[str]
    track: str
    components: bool
    frame_ap: bool
    meta: dict[str, Any]
    protocol: str
    new_diagnostics: Any  # () -> a fresh ClassDiagnostics, or None (no diagnostics)
    map_folder: str       # HDF5 maps: anomaly_p/<method>/<map_folder>/, the SegmentMeIfYouCan tool's name
    pairing: dict[str, Any] | None = None  # statistics vs network (sml.pipelines.pairing), recorded in metrics.json
    loading: loader.Loading = field(default_factory=loader.Loading)  # batch size and decoding workers

    def new_period(self) -> "_Period":
        """Fresh states for the frames of one save period."""
        from sml import protocols

        return _Period({m: protocols.pixel_metric(self.protocol, 255) for m in self.methods},
                       self.new_diagnostics() if self.new_diagnostics else None)

    @property
    def tmp32(self) -> Path:
        """float32 maps kept for the component metrics (removed with the partial state)."""
        return self.out / PARTIAL / "maps32"


@dataclass
class _Period:
    """The states the frames of one save period added to: each method's pixel metric, the diagnostics."""

    metrics: dict[str, Any]
    diagnostics: Any = None

    def state_dict(self) -> dict[str, Any]:
        """Plain arrays and numbers, for a resume chunk."""
        return {"metrics": {m: v.state_dict() for m, v in self.metrics.items()},
                "diagnostics": None if self.diagnostics is None else self.diagnostics.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> "_Period":
        """Restore a :meth:`state_dict` into these (fresh) states; returns ``self``."""
        for m, v in self.metrics.items():
            v.load_state_dict(state["metrics"][m])
        if self.diagnostics is not None:
            self.diagnostics.load_state_dict(state["diagnostics"])
        return self

    def merge(self, other: "_Period") -> None:
        """Add ``other``'s frames after ours."""
        for m, v in self.metrics.items():
            v.merge(other.metrics[m])
        if self.diagnostics is not None:
            self.diagnostics.merge(other.diagnostics)


@dataclass
class _State:
    """What the frames added so far: states (one :class:`_Period` per save period) and per-frame records."""

    periods: list[_Period]
    records: dict[int, dict[str, Any]]
    done: set[int]


def plan(model: Any, dataset: Any, out: str | os.PathLike, config: EvalConfig, stats: Any = None,
         meta: dict[str, Any] | None = None, stats_path: str | os.PathLike | None = None) -> _Plan:
    """Check every setting of a run and resolve its defaults (no file is touched); the statistics
    must belong to the network (:func:`sml.pipelines.pairing.check_pairing`)."""
    from sml import protocols
    from sml.pipelines.pairing import check_pairing

    kind = common.dataset_kind(dataset)
    protocols.get_protocol(config.protocol)  # an unknown name is refused naming the choices
    check_benchmark(dataset)
    methods = list(config.methods)
    if not methods:
        raise InputError("no method to evaluate; give one or more with --method")
    scorers = build_scorers(methods, stats, config.sml_settings, model_kind=getattr(model, "kind", "logits"),
                            settings=config.method_settings, num_classes=getattr(model, "num_classes", None))
    indices = common.frame_indices(len(dataset), config.limit)
    formats = writers.parse_formats(config.save_maps)
    if config.report and "npy16" not in formats:
        formats.append("npy16")
    if config.track is not None and config.track not in ("anomaly", "obstacle"):
        raise InputError(f"--track {config.track!r}: choose anomaly or obstacle")
    if config.track is not None and not config.components:
        raise InputError("--track sets the component-metric size limits: add --components, or leave --track out")
    SavePolicy(config.save_every, config.save_interval)  # its checks, before anything runs
    loading = loader.Loading(config.batch_size, config.workers)
    frame_ap = config.report if config.frame_ap is None else bool(config.frame_ap)
    pairing = check_pairing(model, stats, stats_path, config.stats_from_other_network)
    return _Plan(Path(out), kind, methods, scorers, indices, formats, config.track or TRACKS.get(kind, "anomaly"),
                 config.components, frame_ap, dict(meta or {}), config.protocol,
                 _diagnostics_factory(model, stats, "sml" in methods) if config.diagnostics else None,
                 getattr(dataset, "smiyc_name", None) or kind, pairing, loading)


def _diagnostics_factory(model: Any, stats: Any, sml: bool) -> Any:
    """``() -> ClassDiagnostics`` for this model (with the training statistics beside each class when given)."""
    from sml.diagnostics import ClassDiagnostics

    if stats is not None:
        ClassDiagnostics(stats=stats, sml=sml)  # its checks (class count), before anything runs
        return lambda: ClassDiagnostics(stats=stats, sml=sml)
    c, names = common.num_classes(model), common.class_names(model)
    return lambda: ClassDiagnostics(num_classes=c, class_names=names, sml=False)


def check_benchmark(dataset: Any) -> None:
    """Refuse a data set that is not an anomaly benchmark (Cityscapes: in-distribution, no anomaly labels)."""
    if common.dataset_kind(dataset) == "cityscapes" or getattr(dataset, "task", "anomaly") != "anomaly":
        raise InputError(
            f"--data {common.dataset_kind(dataset)}: this is in-distribution data, not an anomaly benchmark, so "
            f"there is nothing for `sml eval` to score; use it with `sml stats` (class statistics), and evaluate "
            f"on road-anomaly:, smiyc-anomaly:, smiyc-obstacle:, fishyscapes-laf: or folder: data")


def evaluate(
    model: Any,
    dataset: Any,
    out: str | os.PathLike,
    config: EvalConfig,
    *,
    stats: Any = None,
    stats_path: str | os.PathLike | None = None,
    meta: dict[str, Any] | None = None,
    show_progress: bool = True,
) -> EvalRun:
    """Score ``dataset`` with ``config.methods`` and write the run directory ``out`` (collective call)."""
    from sml.pipelines import threshold_metrics

    p = plan(model, dataset, out, config, stats, meta, stats_path)
    timer = common.Timer()
    pixels = FramePixels(dataset)
    with rundir.RunLock(p.out, resume=config.resume, overwrite=config.overwrite,
                        expected=planned_files(p, dataset)) as lock:
        store = ResumeStore(p.out / PARTIAL / "state", _identity(model, dataset, p, stats))
        state = restore(store, p, config.resume, dataset, pixels)
        score_frames(model, dataset, p, state, store, SavePolicy(config.save_every, config.save_interval), timer,
                     show_progress)
        pooled, records, results, curves = finalize(p, state, timer)
        frame_list = [records[i] for i in p.indices]
        check_eval_results(results, frame_list, dataset, p.indices, pixels, p.out, _fix(p))
        if p.components or "npy16" in p.formats:
            with timer("post"):
                threshold_metrics.add_threshold_metrics(
                    dataset, p.indices, frame_list, pooled.metrics, results, p.out, p.kind,
                    p.tmp32 if p.components else None, p.track if p.components else None, show_progress,
                    protocol=p.protocol)
        metrics = _write_results(model, dataset, p, frame_list, results, curves, stats, stats_path, lock.run_id,
                                 timer, pooled.diagnostics)
        store.clear()
        lock.remove(PARTIAL)  # the temporary maps and the (now empty) state folder: this run's files only
        distributed.barrier()
    return EvalRun(metrics, frame_list, timer.seconds, p.out)


def _identity(model: Any, dataset: Any, p: _Plan, stats: Any) -> dict[str, Any]:
    """What the run's resume state depends on (:class:`~sml.pipelines.resume.ResumeStore`)."""
    return {"kind": "eval", "dataset": dataset_identity(dataset), "frame_files": frame_files(dataset, p.indices),
            "methods": p.methods, "settings": {m: scorer_settings(s) for m, s in p.scorers.items()},
            "formats": p.formats, "components": p.components, "protocol": p.protocol,
            "diagnostics": p.new_diagnostics is not None, "network": network_identity(model),
            "stats_digest": None if stats is None else stats.digest(), **p.meta}


def _fix(p: _Plan) -> str:
    return f"Delete {p.out / PARTIAL} and run again without --resume."


def planned_files(p: _Plan, dataset: Any) -> list[str]:
    """The per-frame files the run will write (relative to its folder), checked before it starts."""
    files = [f.relative_to(p.out).as_posix() for i in p.indices for m in p.methods for fmt in p.formats
             for f in writers.map_files(p.out, fmt, m, p.map_folder, dataset.frames[i].id)]
    if p.components:
        files += [(p.tmp32 / m / f"{writers.safe_name(dataset.frames[i].id)}.npy").relative_to(p.out).as_posix()
                  for i in p.indices for m in p.methods]
    return files


def _write_results(model: Any, dataset: Any, p: _Plan, frame_list: list[dict[str, Any]],
                   results: dict[str, dict[str, Any]], curves: dict[str, Any], stats: Any, stats_path: Any,
                   run_id: str, timer: common.Timer, diagnostics: Any = None) -> dict[str, Any]:
    """metrics.json's content; rank 0 writes the run's files (metrics.json last) with the list of its maps."""
    settings = {m: scorer_settings(s) for m, s in p.scorers.items()}
    metrics = rundir.metrics_json(dataset, p.kind, frame_list, settings, results,
                                  p.meta.get("model") or common.model_name(model), stats_path, p.meta,
                                  p.track if p.components else None, protocol=p.protocol)
    metrics["network"] = network_identity(model)
    if p.pairing is not None:
        metrics["stats_pairing"] = p.pairing
    diag = diagnostics.to_json() if diagnostics is not None and diagnostics.frames else None
    if distributed.is_main():
        with timer("results"):
            files = [writers.map_path(p.out, fmt, m, p.map_folder, f["id"]).relative_to(p.out).as_posix()
                     for f in frame_list for m in p.methods for fmt in p.formats]
            rundir.write_run(p.out, metrics, frame_list, curves, stats, stats_path, run_id, files, diag)
    return metrics


def restore(store: ResumeStore, p: _Plan, resume: bool, dataset: Any, pixels: FramePixels | None = None) -> _State:
    """The frames an interrupted run finished (``resume``), else a fresh state; rank 0 carries the loaded ones.

    Each chunk is checked against the frames it claims (:mod:`sml.pipelines.consistency`).
    """
    state = _State([], {}, set())
    pixels = pixels or FramePixels(dataset)
    for chunk in store.start(resume):
        try:
            recs = {int(i): r for i, r in chunk["records"]}
            period = p.new_period().load_state_dict(chunk)
        except (InputError, KeyError, TypeError, ValueError) as exc:
            raise InputError(f"the resume chunk {chunk.path} does not hold this run's state ({exc}); delete "
                             f"{p.out / PARTIAL} and run again without --resume") from None
        check_eval_chunk(chunk.path, recs, period, dataset, set(p.indices), p.methods,
                         p.new_diagnostics() if p.new_diagnostics else None, pixels, _fix(p))
        if set(recs) & state.done:
            raise InputError(f"the partial state in {store.folder} counts a frame twice; delete "
                             f"{p.out / PARTIAL} and run again without --resume")
        state.done.update(recs)
        if distributed.is_main():
            state.records.update(recs)
            _fold(state, period)
    state.periods.append(p.new_period())
    return state


def _fold(state: _State, period: _Period) -> None:
    """Add a finished period to the first one, in order: exact metric tables of periods share most
    of their distinct scores, so one pooled table per method is kept instead of one per period."""
    if state.periods:
        state.periods[0].merge(period)
    else:
        state.periods.append(period)


def score_frames(model: Any, dataset: Any, p: _Plan, state: _State, store: ResumeStore, policy: SavePolicy,
                 timer: common.Timer, show_progress: bool) -> None:
    """This process's share of the frames not yet done: scores, metric updates, maps, resume chunks."""
    todo = [i for i in p.indices if i not in state.done]
    mine = distributed.shard(todo)
    fresh: dict[int, dict[str, Any]] = {}
    frames = _scored_frames(model, dataset, p, mine, timer)
    with contextlib.closing(frames):  # on an error, the loader's workers stop at once
        bar = progress(frames, total=len(todo), desc=f"eval {p.kind}", disable=None if show_progress else True)
        for n, (i, labels, scored) in enumerate(bar, 1):
            frame = dataset.frames[i]
            rec = _record(frame)
            with timer("metrics"):
                _update_states(p, state.periods[-1], scored, labels, rec)
            with timer("writing"):
                _write_maps(p, frame, scored)
            state.records[i] = fresh[i] = rec
            last = n == len(mine)
            # One process saves only mid-run: after its last frame the results follow at once. With
            # several processes this one may wait for the others, so its last frames are saved too.
            if (policy.due(n) or last) and (not last or distributed.world_size() > 1):
                with timer("writing"):
                    _save_period(store, p, state, fresh, new_period=not last)
                policy.saved()
                fresh = {}


def _scored_frames(model: Any, dataset: Any, p: _Plan, indices: list[int],
                   timer: common.Timer) -> Iterator[tuple[int, Any, ScoredFrame]]:
    """``(index, labels, scored frame)`` of each frame of ``indices``, in order, a batch at a time."""
    with contextlib.closing(loader.batches(dataset, indices, p.loading, _device(model), timer=timer)) as batches:
        for batch in batches:
            yield from zip(batch.indices, [s.labels for s in batch.samples], _score_batch(model, p, batch, timer))


def _device(model: Any) -> torch.device:
    return torch.device(getattr(model, "device", "cpu"))


def _score_batch(model: Any, p: _Plan, batch: loader.Batch, timer: common.Timer) -> list[ScoredFrame]:
    """The batch's frames through the network together (the one forward pass), then every method per frame."""
    with timer("forward"):
        output = common.forward(model, batch.images, batch.output_size, whole=True)
    with timer("scoring"):
        return [score_frame(p.scorers, o) for o in common.split_frames(output, len(batch))]


def _save_period(store: ResumeStore, p: _Plan, state: _State, fresh: dict[int, dict[str, Any]],
                 new_period: bool) -> None:
    """A resume chunk with what the current period added; the next frames then start a new period."""
    store.save({"records": [[k, r] for k, r in fresh.items()], **state.periods[-1].state_dict()})
    if new_period:
        if len(state.periods) > 1:
            _fold(state, state.periods.pop())
        state.periods.append(p.new_period())


def _record(frame: Any) -> dict[str, Any]:
    """A frame's record in frames.json, before its numbers are added."""
    return {"id": frame.id, "image": str(frame.image_path),
            "labels": str(frame.label_path) if frame.label_path else None, "methods": {}}


def _update_states(p: _Plan, period: _Period, scored: ScoredFrame, labels: np.ndarray | None,
                   rec: dict[str, Any]) -> None:
    """One frame into the period's states: each method's pixel metric and the diagnostics; its pixel
    counts and (with ``frame_ap``) each method's AP into ``rec``."""
    from sml.metrics import FrameLabels

    if labels is None:
        rec["methods"] = {m: {} for m in p.methods}
        return
    fl = FrameLabels(labels, 255)  # validated and counted once for every method
    rec["pixels"] = {"anomaly": fl.n_pos, "inlier": fl.n_neg}
    for m in p.methods:  # any PixelMetric: the frame's AP where the protocol has one
        ap = period.metrics[m].update(scored.maps[m], fl, frame_ap=p.frame_ap)
        rec["methods"][m] = {} if ap is None else {"ap": float(ap)}
    if period.diagnostics is not None:
        d = period.diagnostics
        d.update_from_predictions(_kept(scored.pred[0]), _kept(scored.max_logit[0].float()), labels,
                                  scored.maps["sml"] if d.sml else None)


def _write_maps(p: _Plan, frame: Any, scored: ScoredFrame) -> None:
    """The frame's map files (``--save-maps``, ``--report``) and the float32 maps kept for the component metrics."""
    if not p.formats and not p.components:
        return
    pred_np = to_host(scored.pred[0]) if "fishyscapes" in p.formats else None
    for m in p.methods:
        host = to_host(scored.maps[m])  # the one full-resolution copy to the host, and only to be written
        for fmt in p.formats:
            writers.write_map(p.out, fmt, m, p.map_folder, frame.id, host, pred_np)
        if p.components:
            atomic.save_npy(p.tmp32 / m / f"{writers.safe_name(frame.id)}.npy", host)


def finalize(p: _Plan, state: _State, timer: common.Timer) -> tuple[_Period, dict[int, dict[str, Any]],
                                                                   dict[str, dict[str, Any]], dict[str, Any]]:
    """Merge every period and process (rank order); pooled metrics and (rank 0) curves per method."""
    with timer("final"):
        pooled = state.periods[0]
        for period in state.periods[1:]:
            pooled.merge(period)
        # one process: our own objects come back, nothing is copied
        gathered = distributed.all_gather_object(pooled)
        pooled = gathered[0]
        for other in gathered[1:]:
            pooled.merge(other)
        records: dict[int, dict[str, Any]] = {}
        for part in distributed.all_gather_object(state.records):
            records.update(part)
        main = distributed.is_main()

        def summary(m: str) -> tuple[dict[str, Any], Any]:
            metric = pooled.metrics[m]
            return metric.summary(CURVE_POINTS) if main else (metric.compute(), None)

        # The methods side by side: their sorts and searches are NumPy passes that release the
        # GIL. Measured with benchmarks/bench_eval.py (2 cores, 6 frames, 5 methods): 0.16 s per
        # frame instead of 0.24, 12% of the wall time. The results do not depend on it.
        with ThreadPoolExecutor(max(1, min(len(p.methods), torch.get_num_threads()))) as pool:
            done = dict(zip(p.methods, pool.map(summary, p.methods)))
    from sml import protocols

    results = {m: protocols.headline(p.protocol, r) for m, (r, _) in done.items()}
    curves = {m: c for m, (_, c) in done.items() if c is not None}
    return pooled, records, results, curves
