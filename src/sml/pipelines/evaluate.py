"""``sml eval``: anomaly scores of several methods on a benchmark, from one forward pass per frame.

Flow per frame: decode -> ``model.predict`` at label resolution (the only
forward pass) -> every requested scorer on the same logits -> per-method
pixel metrics (a per-frame :class:`AnomalyMetrics`, whose AP goes to
``frames.json`` and which is then merged into the pooled one) -> map files.

After the pass, and only when maps were kept (``--components``, ``--report``,
``--save-maps npy16``), a second pass over the saved maps (no network) adds
the numbers that need thresholds known only at the end: the component metrics
at the pooled best-F1 threshold, and for each frame the false-positive area at
the pooled 95%-TPR threshold (fraction of the frame's inlier pixels scoring at
or above it; computed on the float32 maps kept for ``--components``, otherwise
on the float16 maps of ``maps/``).

Many processes: rank ``r`` scores ``frames[r::world]``; the pooled metric
states are gathered and merged in rank order (the metric state is exact
counts, so the merge does not depend on grouping) and per-frame records are
sorted by frame index; rank 0 writes every run-level file.
"""
from __future__ import annotations

import csv
import io
import math
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from sml.errors import InputError
from sml.pipelines import common, writers
from sml.pipelines.resume import ResumeStore, SavePolicy
from sml.utils import atomic, distributed
from sml.utils.progress import progress

PARTIAL = ".partial"
CURVE_POINTS = 2000
#: SegmentMeIfYouCan component-metric tracks by data-set kind (spec section 6)
TRACKS = {"smiyc-obstacle": "obstacle"}


@dataclass
class EvalConfig:
    """What to compute and write; see ``sml eval --help`` for each field."""

    methods: list[str]
    sml_settings: dict[str, Any] = field(default_factory=dict)
    components: bool = False
    save_maps: list[str] = field(default_factory=list)
    report: bool = False
    limit: int | None = None
    resume: bool = False
    save_every: int | None = None  # frames between resume chunks; None: by time (save_interval)
    save_interval: float = 300.0   # seconds of work between resume chunks when save_every is None
    track: str | None = None
    frame_ap: bool | None = None   # each frame's AP in frames.json; None: only with ``report``


# ------------------------------------------------------------------ adapters to the core packages
def build_scorers(methods: Sequence[str], stats: Any, sml_settings: dict[str, Any]) -> dict[str, Any]:
    """One scorer per method (``sml`` gets the statistics and its settings)."""
    from sml.scores import build_scorer

    out = {}
    for m in methods:
        if m == "sml":
            if stats is None:
                raise InputError("method sml needs class statistics: pass --stats stats.json (from `sml stats`)")
            out[m] = build_scorer(m, stats=stats, **sml_settings)
        else:
            out[m] = build_scorer(m)
    return out


def scorer_settings(scorer: Any) -> dict[str, Any]:
    s = getattr(scorer, "settings", None)
    return dict(s()) if callable(s) else {}


def new_metric() -> Any:
    from sml.metrics import AnomalyMetrics

    return AnomalyMetrics(ignore_index=255)


def merge_into(a: Any, b: Any) -> Any:
    out = a.merge(b)
    return a if out is None else out


def _f(v: Any) -> float | None:
    """JSON-friendly float (NaN stays NaN: interface.md reports missing values as NaN)."""
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


_POOLS: dict[int, ThreadPoolExecutor] = {}


class _Workers:
    """Runs tasks on a few threads (torch's and NumPy's array passes release the GIL).

    The thread count follows torch's (``OMP_NUM_THREADS``; 1 per process under torchrun),
    capped by ``n_tasks``; with one thread the tasks run inline. Each task touches only
    its own method's state (or its own rows), so results do not depend on scheduling.
    Pools are kept for the process's lifetime (idle threads cost nothing).
    """

    def __init__(self, n_tasks: int) -> None:
        n = max(1, min(n_tasks, torch.get_num_threads()))
        if n > 1 and n not in _POOLS:
            # one OpenMP thread per worker: the workers already fill the cores, and nested
            # parallel regions on a full machine make every small op wait (see HOT_LOOP_THREADS)
            _POOLS[n] = ThreadPoolExecutor(n, thread_name_prefix="sml-eval", initializer=torch.set_num_threads,
                                           initargs=(1,))
        self._pool = _POOLS.get(n) if n > 1 else None
        #: worker threads (1: inline)
        self.size = n

    def map(self, fn: Any, items: Sequence[Any]) -> list[Any]:
        """``[fn(x) for x in items]``, in order (the first exception is raised)."""
        if self._pool is None:
            return [fn(x) for x in items]
        return list(self._pool.map(fn, items))

    def run(self, fns: Sequence[Callable[[], Any]]) -> list[Any]:
        """``[f() for f in fns]``, handing all but the first to an idle worker if there is one.

        Safe from inside a task on these workers: the caller runs the first itself, then
        takes back every one that no worker has started (``Future.cancel``) and runs it
        too, so it never waits on work queued behind its own. While the queue is long
        everything runs inline; at the end of a batch the idle threads pick up halves.
        """
        if self._pool is None or len(fns) < 2:
            return [f() for f in fns]
        futures = [self._pool.submit(f) for f in fns[1:]]
        try:
            out = [fns[0]()]
            for f, fut in zip(fns[1:], futures):
                out.append(f() if fut.cancel() else fut.result())
        except BaseException:
            # nothing of ours keeps running after we return: the tasks share their caller's state
            for fut in futures:
                if not fut.cancel():
                    fut.exception()
            raise
        return out


# ------------------------------------------------------------------ the pass
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
    """One frame through :func:`score_frame`."""

    maps: dict[str, np.ndarray]   # method -> float32 H x W anomaly map
    pred: torch.Tensor            # B x H x W argmax of the logits
    results: dict[str, Any]       # method -> what ``then(method, map)`` returned (None without ``then``)
    then_seconds: float           # task seconds spent in ``then``, summed over the methods


def score_frame(scorers: dict[str, Any], logits: torch.Tensor, workers: "_Workers | None" = None,
                then: Callable[[str, np.ndarray], Any] | None = None) -> ScoredFrame:
    """Every method's ``H x W`` map from one frame's logits (and ``then(method, map)`` for each).

    The methods share one :class:`sml.scores.LogitContext`: the channel max and
    argmax are computed once (max_logit, sml), and so is the one exponential per
    logit behind msp, entropy and energy; with ``workers`` that pass is split into
    row bands, one per thread. Then each method is one task (its map, then
    ``then(method, map)``, e.g. its metric update), so the cheap methods' tasks run
    beside sml's, each single-threaded (see ``sml.scores.functional.HOT_LOOP_THREADS``).
    Without ``workers`` everything runs on the calling thread with torch's intra-op
    threads, which is what :func:`evaluate` does (see there). The maps are the same either way.
    """
    from sml.scores import LogitContext

    with torch.inference_mode():
        ctx = LogitContext(logits)
        softmax = any(not getattr(sc, "uses_max_only", False) for sc in scorers.values())
        ctx.precompute(softmax, workers.map if workers is not None else None, workers.size if workers else 1)
        pred = ctx.max_and_argmax()[1]

    def run(m: str) -> tuple[np.ndarray, Any, float]:
        with torch.inference_mode():  # thread-local: entered in each worker
            amap = scorers[m].score_context(ctx)[0].float().cpu().numpy()
        t1 = time.perf_counter()
        res = then(m, amap) if then is not None else None
        return amap, res, time.perf_counter() - t1

    # the slowest task (sml's post-processing) first, so the others fill the second thread meanwhile
    order = sorted(scorers, key=lambda m: m != "sml")
    done = dict(zip(order, workers.map(run, order) if workers is not None else map(run, order)))
    return ScoredFrame({m: done[m][0] for m in scorers}, pred, {m: done[m][1] for m in scorers},
                       sum(d[2] for d in done.values()))


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
    from sml.metrics import FrameLabels

    out = Path(out)
    kind = common.dataset_kind(dataset)
    methods = list(config.methods)
    scorers = build_scorers(methods, stats, config.sml_settings)
    indices = common.frame_indices(len(dataset), config.limit)
    formats = list(config.save_maps)
    if config.report and "npy16" not in formats:
        formats.append("npy16")
    keep32 = config.components
    tmp32 = out / PARTIAL / "maps32"
    track = config.track or TRACKS.get(kind, "anomaly")

    store = ResumeStore(out / PARTIAL / "state", {
        "kind": "eval", "frames": [dataset.frames[i].id for i in indices], "methods": methods,
        "settings": {m: scorer_settings(s) for m, s in scorers.items()}, "formats": formats,
        "components": config.components, **(meta or {})})
    pooled = {m: new_metric() for m in methods}
    records: dict[int, dict[str, Any]] = {}
    loaded = store.start(config.resume)
    done: set[int] = set()
    for payload in loaded:
        if set(payload["records"]) & done:
            raise InputError(f"the partial state in {store.folder} counts a frame twice; delete "
                             f"{out / PARTIAL} and run again without --resume")
        done.update(payload["records"])
        if distributed.is_main():  # rank 0 carries what earlier runs did
            records.update(payload["records"])
            for m in methods:
                pooled[m] = merge_into(pooled[m], payload["metrics"][m])
    todo = [i for i in indices if i not in done]
    mine = distributed.shard(todo)
    # Keys go straight into ``pooled``; a resume chunk holds what was added since the last save
    # (``pooled[m].since(mark)``: views, pickled at once), so no key is ever copied in memory.
    workers = _Workers(len(methods))
    # each frame's own AP (frames.json) costs a sort of its keys: only when the report's gallery wants it
    frame_ap = config.report if config.frame_ap is None else bool(config.frame_ap)
    reserved = False
    fresh_records: dict[int, dict[str, Any]] = {}
    marks = {m: pooled[m].mark() for m in methods}
    timer = common.Timer()
    policy = SavePolicy(config.save_every, config.save_interval)
    bar = progress(mine, total=len(todo), desc=f"eval {kind}", disable=None if show_progress else True)
    for n, i in enumerate(bar, 1):
        frame = dataset.frames[i]
        with timer("decode"):
            sample = dataset.load(frame)
        labels = sample.labels
        size = labels.shape if labels is not None else sample.image.shape[:2]
        with timer("forward"):
            logits = common.forward(model, sample.image, size)

        rec: dict[str, Any] = {"id": frame.id, "image": str(frame.image_path),
                               "labels": str(frame.label_path) if frame.label_path else None, "methods": {}}
        frame_labels = None
        if labels is not None:
            with timer("metrics"):
                frame_labels = FrameLabels(labels, 255)  # validated and counted once for every method
                rec["pixels"] = {"anomaly": frame_labels.n_pos, "inlier": frame_labels.n_neg}
                if not reserved:
                    # room for the rest of this process's frames at this size, taken once: pages are
                    # committed only as keys are written, and the buffer never has to grow and move
                    for m in methods:
                        pooled[m].reserve(labels.size * (len(mine) - n + 1))
                    reserved = True

        def count(m: str, amap: np.ndarray) -> Any:
            # the frame's keys go into the pooled state (and its own AP, when asked, from one sort of them)
            return pooled[m].update_frame(amap, frame_labels, ap=frame_ap) if frame_labels is not None else None

        t0 = time.perf_counter()
        # On this thread, with torch's intra-op threads: the metric updates write fresh state
        # memory, and page faults taken from two worker threads at once were measured twice as
        # slow (2 cores, 5 methods at 1280x720: 34 ms per frame here against 67 on the workers).
        scored = score_frame(scorers, logits, None, then=count)
        # one after the other on this thread: the updates' own time is the metrics stage, the
        # rest (the shared max / softmax pass included) is scoring
        timer.add("scoring", time.perf_counter() - t0 - scored.then_seconds)
        timer.add("metrics", scored.then_seconds)
        maps, pred = scored.maps, scored.pred
        rec["methods"] = {m: {} if r is None else {"ap": _f(r)} for m, r in scored.results.items()}
        del logits, scored
        with timer("writing"):
            pred_np = pred[0].cpu().numpy() if "fishyscapes" in formats else None
            for m in methods:
                for fmt in formats:
                    writers.write_map(out, fmt, m, kind, frame.id, maps[m], pred_np)
                if keep32:
                    atomic.save_npy(tmp32 / m / f"{writers.safe_name(frame.id)}.npy", maps[m])
        records[i] = fresh_records[i] = rec
        last = n == len(mine)
        if policy.due(n) or last:
            # One process saves only mid-run: after its last frame the results follow at once,
            # so a final chunk would guard just the frames since the last save against a crash
            # in the final computation, at the price of writing every key of them. With
            # several processes this one may wait for the others, so its last frames are saved.
            if not last or distributed.world_size() > 1:
                with timer("writing"):
                    store.save({"records": fresh_records, "metrics": {m: pooled[m].since(marks[m]) for m in methods}})
                policy.saved()
            marks = {m: pooled[m].mark() for m in methods}
            fresh_records = {}

    # ---- gather: metric states in rank order, records by frame index
    with timer("final"):
        states = distributed.all_gather_object(pooled)
        # rank 0's state (our own object on one process) takes the others in rank order, so
        # a single process copies nothing here
        pooled = states[0]
        for st in states[1:]:
            for m in methods:
                pooled[m] = merge_into(pooled[m], st[m])
        all_records: dict[int, dict[str, Any]] = {}
        for part in distributed.all_gather_object(records):
            all_records.update(part)
        # Side by side (NumPy's sorts and searches release the GIL), each method's metrics and its
        # curves for curves.json from one table; idle workers take halves of the last methods'
        # sorts, searches and metrics/curves (workers.run), so the last one does not run alone.
        if distributed.is_main():
            done = workers.map(lambda m: pooled[m].summary(CURVE_POINTS, workers.run), methods)
        else:
            done = workers.map(lambda m: (pooled[m].compute(), None), methods)
        results = {m: r for m, (r, _) in zip(methods, done)}
        curves = {m: c for m, (_, c) in zip(methods, done) if c is not None}

    # ---- second pass over the kept maps (thresholds known only now)
    frame_list = [all_records[i] for i in indices]
    if keep32 or "npy16" in formats:
        with timer("post"):
            _post_pass(dataset, indices, frame_list, methods, pooled, results, out, kind, tmp32 if keep32 else None,
                       track if config.components else None, show_progress)

    metrics = _metrics_json(dataset, kind, frame_list, methods, scorers, results, model, stats_path, meta, track,
                            config)
    if distributed.is_main():
        with timer("results"):
            _write_run(out, metrics, frame_list, curves, stats, stats_path)
    store.clear()
    if distributed.is_main():  # the temporary maps and the (now empty) state folder
        shutil.rmtree(out / PARTIAL, ignore_errors=True)
    distributed.barrier()
    return EvalRun(metrics, frame_list, timer.seconds, out)


def _post_pass(dataset: Any, indices: list[int], frame_list: list[dict[str, Any]], methods: list[str],
               pooled: dict[str, Any], results: dict[str, dict[str, Any]], out: Path, kind: str,
               tmp32: Path | None, track: str | None, show_progress: bool) -> None:
    """fp_area per frame and (with ``track``) component metrics, from the maps on disk."""
    def finite(v: Any) -> float | None:
        v = _f(v)
        return v if v is not None and math.isfinite(v) else None

    thr95 = {m: finite(results[m].get("threshold_at_95tpr")) for m in methods}
    best = {m: finite(pooled[m].best_f1_threshold()) for m in methods} if track else {}
    pos = list(range(len(indices)))
    mine = distributed.shard(pos)
    per_frame: dict[int, dict[str, Any]] = {}
    for p in progress(mine, total=len(pos), desc="thresholds", disable=None if show_progress else True):
        frame = dataset.frames[indices[p]]
        if frame.label_path is None:
            continue
        labels = dataset.load_labels(frame)
        res: dict[str, Any] = {}
        for m in methods:
            name = writers.safe_name(frame.id)
            path = tmp32 / m / f"{name}.npy" if tmp32 is not None else writers.map_path(out, "npy16", m, kind, frame.id)
            amap = np.load(path).astype(np.float32)
            entry: dict[str, Any] = {}
            inl = labels == 0
            if thr95.get(m) is not None and inl.any():
                entry["fp_area"] = float((amap[inl] >= thr95[m]).mean())
            if track and best.get(m) is not None:
                entry["components"] = _component_state(amap, labels, best[m], track)
            res[m] = entry
        per_frame[p] = res
    merged: dict[int, dict[str, Any]] = {}
    for part in distributed.all_gather_object(per_frame):
        merged.update(part)
    comp_total: dict[str, Any] = {}
    for p in pos:
        for m, entry in merged.get(p, {}).items():
            comp = entry.pop("components", None)
            if comp is not None:
                comp_total[m] = comp if m not in comp_total else merge_into(comp_total[m], comp)
            frame_list[p]["methods"][m].update(entry)
    for m, comp in comp_total.items():
        results[m]["components"] = {k: _f(v) if isinstance(v, (float, np.floating)) else v
                                    for k, v in comp.compute().items()}
        results[m]["components"]["threshold"] = best[m]


def _component_state(amap: np.ndarray, labels: np.ndarray, threshold: float, track: str) -> Any:
    from sml.metrics import ComponentMetrics

    cm = ComponentMetrics(track)
    cm.update(amap, labels, threshold)
    return cm


def _metrics_json(dataset: Any, kind: str, frames: list[dict[str, Any]], methods: list[str],
                  scorers: dict[str, Any], results: dict[str, dict[str, Any]], model: Any,
                  stats_path: Any, meta: dict[str, Any] | None, track: str, config: EvalConfig) -> dict[str, Any]:
    labelled = [f for f in frames if f.get("pixels")]
    anomaly = sum(f["pixels"]["anomaly"] for f in labelled)
    inlier = sum(f["pixels"]["inlier"] for f in labelled)
    out: dict[str, Any] = {
        "dataset": kind, "frames": len(labelled), "frames_scored": len(frames),
        "pixels": {"anomaly": anomaly, "inlier": inlier},
        "model": (meta or {}).get("model") or common.model_name(model),
        "stats": str(stats_path) if stats_path else None,
        "fpr95_convention": "interpolated",
        "methods": {},
    }
    if getattr(dataset, "notes", None):
        out["notes"] = list(dataset.notes)
    if (meta or {}).get("label_mapping") is not None:
        out["label_mapping"] = meta["label_mapping"]
    if config.components:
        out["component_track"] = track
    for m in methods:
        r = results[m]
        entry: dict[str, Any] = {k: _f(r.get(k)) for k in ("auroc", "ap", "fpr95", "fpr95_threshold",
                                                            "threshold_at_95tpr", "best_f1", "best_f1_threshold")}
        if r.get("reason"):
            entry["reason"] = r["reason"]  # why values are NaN (e.g. no anomaly pixel)
        if "components" in r:
            entry["components"] = r["components"]
        settings = scorer_settings(scorers[m])
        if settings:
            entry["settings"] = settings
        out["methods"][m] = entry
    return out


CSV_FIELDS = ["method", "auroc", "ap", "fpr95", "fpr95_threshold", "threshold_at_95tpr", "best_f1_threshold",
              "siou", "ppv", "mean_f1"]


def _write_run(out: Path, metrics: dict[str, Any], frames: list[dict[str, Any]], curves: dict[str, Any],
               stats: Any, stats_path: Any) -> None:
    atomic.write_json(out / "metrics.json", metrics)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["dataset", "frames", *CSV_FIELDS])
    for m, r in metrics["methods"].items():
        comp = r.get("components") or {}
        row = [metrics["dataset"], metrics["frames"], m]
        for k in CSV_FIELDS[1:]:
            v = comp.get(k) if k in ("siou", "ppv", "mean_f1") else r.get(k)
            row.append("" if v is None else repr(float(v)))
        w.writerow(row)
    atomic.write_text(out / "metrics.csv", buf.getvalue())
    curves = {m: {**_plain(c), "auroc": metrics["methods"][m].get("auroc"), "ap": metrics["methods"][m].get("ap")}
              for m, c in curves.items()}
    # compact: tens of thousands of floats read by programs; json writes them with its C
    # encoder only without indentation (10x faster than the pretty-printed form)
    atomic.write_json(out / "curves.json", curves, indent=None)
    atomic.write_json(out / "frames.json", frames)
    if stats_path is not None and Path(stats_path).is_file():
        atomic.write_bytes(out / "stats.json", Path(stats_path).read_bytes())
    elif stats is not None and hasattr(stats, "save"):
        stats.save(out / "stats.json")


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return obj.astype(np.float64).tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _pct(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * float(v):.2f}"


def metrics_table(metrics: dict[str, Any]) -> str:
    """The table ``sml eval`` prints: percent, one row per method."""
    comp = any("components" in r for r in metrics["methods"].values())
    header = ["method", "AUROC %", "AP %", "FPR@95 %"] + (["sIoU %", "PPV %", "mean F1 %"] if comp else [])
    rows = []
    for m, r in metrics["methods"].items():
        row = [m, _pct(r.get("auroc")), _pct(r.get("ap")), _pct(r.get("fpr95"))]
        if comp:
            c = r.get("components") or {}
            row += [_pct(c.get("siou")), _pct(c.get("ppv")), _pct(c.get("mean_f1"))]
        rows.append(row)
    px = metrics["pixels"]
    title = (f"{metrics['dataset']}: {metrics['frames']} labelled frames"
             f"{'' if metrics['frames_scored'] == metrics['frames'] else ' of ' + str(metrics['frames_scored'])}, "
             f"{px['anomaly']:,} anomaly / {px['inlier']:,} inlier pixels, model {metrics['model']}")
    return title + "\n" + common.format_table(header, rows)


def print_table(metrics: dict[str, Any], out: Path, file: Any = None) -> None:
    file = file or sys.stdout
    print(metrics_table(metrics), file=file)
    print(f"results written to {out}/ (metrics.json, metrics.csv, curves.json, frames.json)", file=file)
