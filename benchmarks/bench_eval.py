"""Seconds per frame of `sml eval` on Road Anomaly with ERFNet on the CPU, split by stage.

Compares the pipeline of ``sml.pipelines.evaluate`` (one forward pass, max/argmax
shared by max_logit and sml, exact streaming metrics merged frame by frame)
with the obvious pipeline (every method scored from the logits on its own,
every map kept in memory, scikit-learn at the end). Timings on a shared
machine are noisy, so both run side by side, several times, and the table
reports medians and ratios. Target: everything beyond the forward pass costs
at most 20% of it.

    python benchmarks/bench_eval.py [--frames 6] [--repeats 3] [--methods sml,max_logit,...]

Needs the shared data (``$SML_SHARED`` or ``../shared``). The SML statistics
are computed from the benchmark frames themselves (timing does not depend on
their values).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SML_SHARED", REPO.parent / "shared"))
METHODS = ["sml", "max_logit", "msp", "entropy", "energy"]


def naive(model, dataset, frames, scorers) -> dict[str, float]:
    """Every map kept in memory, each method from the logits, scikit-learn at the end."""
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    t = {"decode": 0.0, "forward": 0.0, "scoring": 0.0, "metrics": 0.0}
    maps = {m: [] for m in scorers}
    labels = []
    for i in frames:
        t0 = time.perf_counter()
        s = dataset[i]
        t1 = time.perf_counter()
        with torch.inference_mode():
            logits = model.predict(s.image, output_size=s.labels.shape)
        t2 = time.perf_counter()
        with torch.inference_mode():
            for m, sc in scorers.items():
                maps[m].append(sc(logits)[0].numpy())
        t3 = time.perf_counter()
        labels.append(s.labels)
        t["decode"] += t1 - t0
        t["forward"] += t2 - t1
        t["scoring"] += t3 - t2
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
    t["metrics"] += time.perf_counter() - t0
    return t


def ours(model, dataset, frames, methods, stats) -> dict[str, float]:
    from sml.pipelines.evaluate import EvalConfig, evaluate

    with tempfile.TemporaryDirectory() as d:
        run = evaluate(model, dataset, d, EvalConfig(methods=methods, limit=len(frames), save_every=10 ** 6),
                       stats=stats, show_progress=False)
    return dict(run.seconds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=6)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--methods", default=",".join(METHODS))
    args = p.parse_args(argv)
    weights = SHARED / "models" / "erfnet_cityscapes.pth"
    root = SHARED / "data" / "road_anomaly" / "RoadAnomaly_jpg"
    if not weights.is_file() or not root.is_dir():
        print(f"shared data not found under {SHARED} (set SML_SHARED); skipping", file=sys.stderr)
        return 0
    import sml.data
    import sml.models
    from sml.pipelines.evaluate import build_scorers
    from sml.stats import ClassStatistics

    methods = args.methods.split(",")
    model = sml.models.load("erfnet", weights=weights)
    ds = sml.data.open_dataset(f"road-anomaly:{root}")
    frames = list(range(args.frames))
    stats = ClassStatistics(19)
    for i in frames[:2]:
        stats.update(model.predict(ds[i].image))
    scorers = build_scorers(methods, stats, {})
    ours(model, ds, frames[:1], methods, stats)  # warm-up (allocator, thread pools)
    runs = {"ours": [], "naive": []}
    for _ in range(args.repeats):
        runs["ours"].append(ours(model, ds, frames, methods, stats))
        runs["naive"].append(naive(model, ds, frames, scorers))
    stages = ["decode", "forward", "scoring", "metrics", "writing", "post"]
    med = {k: {s: statistics.median(r.get(s, 0.0) for r in v) / len(frames) for s in stages} for k, v in runs.items()}
    print(f"Road Anomaly, ERFNet, CPU ({torch.get_num_threads()} threads), {len(frames)} frames x "
          f"{args.repeats} repeats, methods {','.join(methods)}; seconds per frame (median)")
    print(f"{'stage':<10}{'ours':>10}{'naive':>10}{'ours/naive':>12}")
    for s in stages:
        a, b = med["ours"][s], med["naive"][s]
        if a == 0 and b == 0:
            continue
        print(f"{s:<10}{a:>10.4f}{b:>10.4f}{(a / b if b else float('nan')):>12.2f}")
    for k in ("ours", "naive"):
        beyond = sum(v for s, v in med[k].items() if s not in ("forward", "decode"))
        med[k]["beyond"] = beyond
    print(f"{'total':<10}{sum(med['ours'][s] for s in stages):>10.4f}{sum(med['naive'][s] for s in stages):>10.4f}")
    for k in ("ours", "naive"):
        ratio = med[k]["beyond"] / med[k]["forward"]
        print(f"{k}: scoring+metrics(+writing) / forward = {ratio:.2f}  (target <= 0.20)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
