"""Seconds per frame of `sml eval` on Road Anomaly with ERFNet on the CPU, split by stage.

Compares the pipeline of ``sml.pipelines.evaluate`` (one forward pass, max/argmax
shared by max_logit and sml, exact streaming metrics merged frame by frame)
with the obvious pipeline (every method scored from the logits on its own,
every map kept in memory, scikit-learn at the end). Timings on a shared
machine are noisy, so both run side by side, several times, and the table
reports medians and ratios. (The earlier target, everything beyond the forward
pass at most 20% of it, is retired: issue 12. What matters now is the per-frame
wall time of ``ours``, compared before and after a change.) Two readings are printed: the pipeline's own stage timers
(stages beyond decode and forward, over forward), and end to end: the wall time
per frame of the whole ``evaluate`` call minus that of a loop doing only decode
and forward on the same frames (``fwd only``), over the forward time; the second
charges everything, including work that runs beside the forward pass. The per-class
diagnostics (``ClassDiagnostics.update_from_predictions``, timed by wrapping it during the
run) are printed per ``ours`` variant as milliseconds per frame and share of the eval wall time.

    python benchmarks/bench_eval.py [--frames 12] [--repeats 3] [--methods sml,max_logit,...]
                                    [--stats-frames 3] [--batch-size 1] [--workers 0,1]

``--workers 0,1`` runs ``ours`` once per value, side by side (columns ``ours``, ``ours w1``), and
the loader table gives the time the loop waits for the next batch (stage ``decode``: the decoding
itself without workers, the wait for a worker's frame with them) against the rest of the wall time.

``ours`` runs ``evaluate`` with the defaults of ``sml eval`` (a resume chunk every
5 minutes of work, so none in a short run: ``--save-every N`` measures chunks every
N frames; no maps kept; no per-frame AP, which ``--frame-ap`` adds as ``--report``
does), and the
process is set up as the ``sml`` command sets it up (``sml.utils.process.tune_process``:
torch huge pages for large tensors, malloc keeping freed blocks; ``SML_MALLOC_TUNING=0``
measures without the latter), for both pipelines alike. ``--stats-frames N`` also times ``sml stats``
per frame on N Cityscapes frames (2048x1024), split into decode / network /
upsample / statistics update, next to the pipeline's own per-frame total.

Needs the shared data (``$SML_SHARED`` or ``../shared``). The SML statistics
are computed from the benchmark frames themselves (timing does not depend on
their values).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sml.utils.process import tune_process

# as the `sml` command does (sml/cli/main.py), before numpy or torch allocates anything
tune_process()

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SML_SHARED", REPO.parent / "shared"))
METHODS = ["sml", "max_logit", "msp", "entropy", "energy"]


def naive(model, dataset, frames, scorers) -> dict[str, float]:
    """Every map kept in memory, each method from the logits, scikit-learn at the end."""
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    t = {"decode": 0.0, "forward": 0.0, "scoring": 0.0, "metrics": 0.0, "final": 0.0}
    maps = {m: [] for m in scorers}
    labels = []
    for s, logits in decoded_forward(model, dataset, frames, t):
        t2 = time.perf_counter()
        with torch.inference_mode():
            for m, sc in scorers.items():
                maps[m].append(sc(logits)[0].numpy())
        labels.append(s.labels)
        t["scoring"] += time.perf_counter() - t2
    t0 = time.perf_counter()
    y = np.concatenate([lab.ravel() for lab in labels])
    keep = y != 255
    for m in scorers:
        s = np.concatenate([a.ravel() for a in maps[m]])[keep]
        yy = y[keep] == 1
        roc_auc_score(yy, s)
        average_precision_score(yy, s)
        fpr, tpr, _ = roc_curve(yy, s, drop_intermediate=False)
        np.interp(0.95, tpr, fpr)
    t["final"] += time.perf_counter() - t0
    return t


def ours(model, dataset, frames, methods, stats, frame_ap: bool = False,
         save_every: int | None = None, batch_size: int = 1, workers: int = 0) -> dict[str, float]:
    from sml.pipelines.evaluate import EvalConfig, evaluate

    # the defaults are left out, so that this script also times a tree from before --batch-size / --workers
    loading = {} if (batch_size, workers) == (1, 0) else {"batch_size": batch_size, "workers": workers}
    with tempfile.TemporaryDirectory() as d, timed_diagnostics() as diag:  # EvalConfig defaults = `sml eval` defaults
        t0 = time.perf_counter()
        run = evaluate(model, dataset, d, EvalConfig(methods=methods, limit=len(frames), frame_ap=frame_ap or None,
                                                        save_every=save_every, **loading),
                       stats=stats, show_progress=False)
        wall = time.perf_counter() - t0
    return {**run.seconds, "wall": wall, "diagnostics": diag["seconds"]}


@contextlib.contextmanager
def timed_diagnostics():
    """Within the block, ``ClassDiagnostics.update_from_predictions`` adds its seconds to the yielded
    ``{"seconds": ...}`` (the per-class diagnostics' share of the eval wall time); restored after."""
    from sml.diagnostics import ClassDiagnostics

    acc = {"seconds": 0.0}
    original = ClassDiagnostics.__dict__["update_from_predictions"]

    @functools.wraps(original)
    def timed(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            acc["seconds"] += time.perf_counter() - t0

    ClassDiagnostics.update_from_predictions = timed
    try:
        yield acc
    finally:
        ClassDiagnostics.update_from_predictions = original


def decoded_forward(model, dataset, frames, t: dict[str, float]):
    """Yield ``(sample, logits)`` per frame, adding decode and forward seconds to ``t``."""
    for i in frames:
        t0 = time.perf_counter()
        s = dataset[i]
        t1 = time.perf_counter()
        with torch.inference_mode():
            logits = model.predict(s.image, output_size=s.labels.shape)
        t["decode"] += t1 - t0
        t["forward"] += time.perf_counter() - t1
        yield s, logits
        del logits


def forward_only(model, dataset, frames) -> dict[str, float]:
    """Decode and forward pass alone, frame after frame: the floor any pipeline adds to."""
    t = {"decode": 0.0, "forward": 0.0}
    t_start = time.perf_counter()
    for _ in decoded_forward(model, dataset, frames, t):
        pass
    t["wall"] = time.perf_counter() - t_start
    return t


def bench_stats(model, n: int, repeats: int) -> None:
    """Per-frame cost of `sml stats` on Cityscapes frames, by stage, and the pipeline's own total."""
    import torch.nn.functional as F

    import sml.data
    from sml.pipelines.stats import compute_statistics
    from sml.stats import ClassStatistics

    root = SHARED / "data" / "cityscapes_mini"
    ds = sml.data.open_dataset(f"cityscapes:{root}", split="train", allow_subset=True)
    t = {k: [] for k in ("decode", "network", "upsample", "statistics", "pipeline")}
    for _ in range(repeats):
        acc = dict.fromkeys(t, 0.0)
        for i in range(n):
            t0 = time.perf_counter()
            s = ds.load(ds.frames[i], labels=False)
            t1 = time.perf_counter()
            cl = model.cpu_channels_last and model.device.type == "cpu"  # predict()'s default layout
            with model._mode(False, cl):
                raw = model._forward(model.preprocess(s.image), cl)
            t2 = time.perf_counter()
            with torch.no_grad():  # what model.predict does after the network
                logits = F.interpolate(raw, size=s.image.shape[:2], mode="bilinear", align_corners=False)
            t3 = time.perf_counter()
            ClassStatistics(19).update(logits)
            t4 = time.perf_counter()
            del logits, raw
            for k, a, b in (("decode", t0, t1), ("network", t1, t2), ("upsample", t2, t3), ("statistics", t3, t4)):
                acc[k] += b - a
        t0 = time.perf_counter()
        compute_statistics(model, ds, limit=n, show_progress=False)
        acc["pipeline"] = time.perf_counter() - t0
        for k in t:
            t[k].append(acc[k] / n)
    med = {k: statistics.median(v) for k, v in t.items()}
    print(f"\nsml stats, Cityscapes 2048x1024, ERFNet, CPU ({torch.get_num_threads()} threads), {n} frames x "
          f"{repeats} repeats; seconds per frame (median)")
    for k, v in med.items():
        print(f"{k:<12}{v:>10.4f}")
    stages = med["decode"] + med["network"] + med["upsample"] + med["statistics"]
    print(f"stages sum  {stages:>10.4f}   (pipeline/stages = {med['pipeline'] / stages:.2f})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=12, help="frames per run")
    p.add_argument("--save-every", type=int, default=None, metavar="N",
                   help="ours writes a resume chunk every N frames (default: by time, as `sml eval`)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--stats-frames", type=int, default=0, help="also time `sml stats` on this many Cityscapes frames")
    p.add_argument("--frame-ap", action="store_true", help="ours also computes each frame's AP (as with --report)")
    p.add_argument("--no-naive", action="store_true", help="skip the naive pipeline (about 3.5 s per frame)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's, i.e. OMP_NUM_THREADS or the core count)")
    p.add_argument("--batch-size", type=int, default=1, help="ours: --batch-size of `sml eval`")
    p.add_argument("--workers", default="0",
                   help="ours: comma-separated --workers values, each run side by side (e.g. 0,1); the loader "
                        "table gives the time the loop waits for the next batch against the rest")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    weights = SHARED / "models" / "erfnet_cityscapes.pth"
    root = SHARED / "data" / "road_anomaly" / "RoadAnomaly_jpg"
    if not weights.is_file() or not root.is_dir():
        print(f"shared data not found under {SHARED} (set SML_SHARED); skipping", file=sys.stderr)
        return 0
    import sml.data
    import sml.models
    from sml.pipelines.evaluate import build_scorers
    from sml.pipelines.pairing import network_identity
    from sml.stats import ClassStatistics

    methods = args.methods.split(",")
    model = sml.models.load("erfnet", weights=weights)
    ds = sml.data.open_dataset(f"road-anomaly:{root}")
    frames = list(range(args.frames))
    stats = ClassStatistics(19)
    for i in frames[:2]:
        stats.update(model.predict(ds[i].image))
    stats.model = network_identity(model)  # this network's statistics, as `sml stats` records them
    scorers = build_scorers(methods, stats, {})
    load0 = os.getloadavg()
    workers = [int(w) for w in args.workers.split(",")]
    variants = {("ours" if w == workers[0] else f"ours w{w}"): w for w in workers}
    ours(model, ds, frames[:1], methods, stats)  # warm-up (allocator, thread pools)
    runs = {"fwd": [], **{k: [] for k in variants}, "naive": []}
    for _ in range(args.repeats):
        runs["fwd"].append(forward_only(model, ds, frames))
        for k, w in variants.items():
            runs[k].append(ours(model, ds, frames, methods, stats, args.frame_ap, args.save_every,
                                args.batch_size, w))
        if not args.no_naive:
            runs["naive"].append(naive(model, ds, frames, scorers))
    # metrics: per frame (keys, frame AP); writing: waiting for resume chunks (and maps, none by default);
    # final: pooled metrics at the end; results: metrics.json, curves.json, frames.json ...
    stages = ["decode", "forward", "scoring", "metrics", "writing", "final", "post", "results"]
    med = {k: {s: statistics.median(r.get(s, 0.0) for r in v) / len(frames) for s in stages + ["wall"]}
           for k, v in runs.items() if v}
    # per-class diagnostics (ClassDiagnostics.update_from_predictions, within the stage metrics), per ours variant
    diag = {k: statistics.median(r["diagnostics"] / r["wall"] for r in runs[k]) for k in variants}
    diag_ms = {k: 1e3 * statistics.median(r["diagnostics"] for r in runs[k]) / len(frames) for k in variants}
    load1 = os.getloadavg()
    print(f"Road Anomaly 1280x720, ERFNet, CPU ({torch.get_num_threads()} threads, {os.cpu_count()} cores), "
          f"{len(frames)} frames x {args.repeats} repeats, methods {','.join(methods)}; seconds per frame (median)")
    saving = f"a resume chunk every {args.save_every} frames" if args.save_every else "resume chunks by time"
    print(f"ours: `sml eval` defaults ({saving}, no maps kept, {'with' if args.frame_ap else 'no'} frame AP, "
          f"--batch-size {args.batch_size}, --workers {variants['ours']}); "
          f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE')}, "
          f"SML_MALLOC_TUNING={os.environ.get('SML_MALLOC_TUNING', '1')}; "
          f"load average {load0[0]:.2f} before, {load1[0]:.2f} after")
    cols = [k for k in ("fwd", *variants, "naive") if k in med]
    names = {"fwd": "fwd only", "naive": "naive", **{k: k for k in variants}}
    print(f"{'stage':<10}" + "".join(f"{names[k]:>10}" for k in cols) + (f"{'ours/naive':>12}" if "naive" in med else ""))
    for s in stages + ["wall"]:
        vals = [med[k][s] for k in cols]
        if not any(vals):
            continue
        row = f"{s:<10}" + "".join(f"{v:>10.4f}" for v in vals)
        if "naive" in med:
            a, b = med["ours"][s], med["naive"][s]
            row += f"{(a / b if b else float('nan')):>12.2f}"
        print(row)
    for k in [c for c in (*variants, "naive") if c in med]:
        beyond = sum(v for s, v in med[k].items() if s not in ("forward", "decode", "wall"))
        print(f"{k}: stages beyond decode and forward / forward = {beyond / med[k]['forward']:.2f}")
    # end to end: everything the pipeline adds to decode + forward, however it is scheduled
    fwd = med["fwd"]
    extra = med["ours"]["wall"] - fwd["wall"]
    print(f"ours end to end: (wall - forward-only wall) / forward = {extra:.4f} / {fwd['forward']:.4f} "
          f"= {extra / fwd['forward']:.2f}")
    for k in variants:
        print(f"{k}: per-class diagnostics: {diag_ms[k]:.2f} ms per frame = {100 * diag[k]:.2f}% of the eval wall time")
    print("loader: the loop's wait for the next batch (stage decode: decoding itself without workers) "
          "against the rest of the wall time, seconds per frame")
    print(f"{'variant':<10}{'workers':>8}{'wait':>10}{'rest':>10}{'wall':>10}{'wait %':>8}")
    for k, w in variants.items():
        wait, wall = med[k]["decode"], med[k]["wall"]
        print(f"{k:<10}{w:>8}{wait:>10.4f}{wall - wait:>10.4f}{wall:>10.4f}{100 * wait / wall:>8.1f}")
    if args.stats_frames:
        bench_stats(model, args.stats_frames, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
