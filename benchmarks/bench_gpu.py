"""Benchmark: the GPU path per 2048x1024 frame, and what bf16 does to the metrics.

One table per batch size (1 and 4), milliseconds per frame (median of
repeats, CUDA events around each repeat after ``torch.cuda.synchronize``),
each row also as a ratio to the bf16 forward pass:

- ``forward fp32`` / ``forward bf16``: DeepLabV3+ R101 OS8 with random weights
  (``sml.models.build``), ``inference_mode``, channels-last on CUDA, bf16 by
  ``sml.utils.precision`` autocast (logits cast to float32);
- ``sml post-processing``: standardize + boundary suppression + dilated
  smoothing from a given channel max/argmax (``SML.score_from``);
- ``sml (with max/argmax)``: the SML score from the logits;
- ``five scores``: MSP, max logit, entropy, energy and SML together, sharing
  one ``LogitContext`` (what ``sml eval`` does per frame);
- ``metric updates``: ``AnomalyMetrics.update`` of the five maps (the exact metrics' sort happens
  once per run in ``compute()`` and is not in this per-frame row);
- ``five scores + metrics``;
- ``class statistics update``: ``ClassStatistics.update`` of the logits (what ``sml stats`` does per
  frame; per-class float64 sums on the logits' device, only 3 x 19 numbers to the host).

The scores run on network-like logits (19 x H x W, smooth regions upsampled as
DeepLabV3+'s are; ``bench_postprocess.make_logits``), not on a random
network's near-constant output, so boundary suppression has real boundaries.

Then ERFNet (the published weights from ``$SML_SHARED/models``) on the real
Road Anomaly frames in fp32 and bf16, through ``SegmentationModel.predict(precision=...)`` as
``sml eval --precision`` runs it: AUROC, AP and FPR@95 of the five scores,
and the largest difference in points. SML's statistics are fixed for both
precisions (estimated from the fp32 logits of the same frames), so the
difference is the precision's alone.

Targets on a GPU: SML post-processing < 2% of the bf16 forward; five scores +
metric updates < 10%; bf16 metrics within 0.1 points of fp32.

Without CUDA it prints one line and exits 0. ``--device cpu`` runs every code
path on the CPU (with ``--small``: 512x256 frames, 2 Road Anomaly frames,
2 repeats) to check the script, not to measure the GPU.

    python benchmarks/bench_gpu.py [--device cuda:0] [--repeats 10] [--frames 60] [--json out.json]
    python benchmarks/bench_gpu.py --device cpu --small
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SHARED = Path(os.environ.get("SML_SHARED", Path(__file__).resolve().parents[2] / "shared"))
SCORES = ("msp", "max_logit", "entropy", "energy", "sml")


# ---------------------------------------------------------------- timing
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median wall milliseconds of ``fn()``: CUDA events after a synchronize on CUDA, perf_counter elsewhere."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


# ---------------------------------------------------------------- pieces
def make_scorers(stats: Any) -> dict[str, Any]:
    from sml.scores import build_scorer
    return {name: build_scorer(name, stats) for name in SCORES}


def score_all(scorers: dict[str, Any], logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """The five scores of ``B x C x H x W`` logits, sharing one LogitContext."""
    from sml.scores import LogitContext
    ctx = LogitContext(logits)
    return {name: s.score_context(ctx) for name, s in scorers.items()}


def update_metrics(maps: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, Any]:
    from sml.metrics import AnomalyMetrics
    out = {}
    for name, m in maps.items():
        metric = AnomalyMetrics()
        metric.update(m, labels)
        out[name] = metric
    return out


def make_labels(b: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    """Anomaly labels: a block of anomaly (1) on inliers (0), the top rows void (255)."""
    lab = torch.zeros(b, h, w, dtype=torch.uint8, device=device)
    lab[:, h // 2: h // 2 + h // 8, w // 3: w // 3 + w // 8] = 1
    lab[:, : h // 16] = 255
    return lab


def network_table(device: torch.device, h: int, w: int, batches: list[int], repeats: int) -> list[dict]:
    import sml.models
    from bench_postprocess import make_logits, make_stats
    from sml.scores import max_and_argmax
    from sml.stats import ClassStatistics
    from sml.utils.precision import InferenceSettings

    torch.manual_seed(0)
    net = sml.models.build("deeplabv3plus_r101_os8", num_classes=19).eval().to(device)
    cl = InferenceSettings.channels_last(device)
    if cl:
        net = net.to(memory_format=torch.channels_last)
    stats = make_stats()
    scorers = make_scorers(stats)
    sml_scorer = scorers["sml"]
    rows = []
    for b in batches:
        x = torch.randn(b, 3, h, w, device=device)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        row: dict[str, float] = {}
        with torch.inference_mode():
            for p in ("fp32", "bf16"):
                s = InferenceSettings(p)
                row[f"forward {p}"] = time_ms(lambda: s.forward(net, x), device, repeats) / b
            logits = torch.cat([make_logits(h, w, False, seed=i) for i in range(b)]).to(device)
            labels = make_labels(b, h, w, device)
            values, pred = max_and_argmax(logits)   # as the pipelines get them (uint8 classes)
            row["sml post-processing"] = time_ms(lambda: sml_scorer.score_from(values, pred), device, repeats) / b
            row["sml (with max/argmax)"] = time_ms(lambda: sml_scorer(logits), device, repeats) / b
            row["five scores"] = time_ms(lambda: score_all(scorers, logits), device, repeats) / b
            maps = score_all(scorers, logits)
            row["metric updates"] = time_ms(lambda: update_metrics(maps, labels), device, repeats) / b
            row["five scores + metrics"] = time_ms(lambda: update_metrics(score_all(scorers, logits), labels),
                                                   device, repeats) / b
            row["class statistics update"] = time_ms(lambda: ClassStatistics(19).update(logits), device,
                                                     repeats) / b
        rows.append({"batch": b, "ms_per_frame": row})
        del x, logits
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def precision_table(device: torch.device, frames: int, size: tuple[int, int] | None) -> dict[str, Any] | None:
    """ERFNet on Road Anomaly in fp32 and bf16: the five scores' AUROC/AP/FPR@95 and their differences."""
    import sml.data
    import sml.models
    from sml.metrics import AnomalyMetrics
    from sml.stats import ClassStatistics
    from sml.utils.precision import InferenceSettings

    weights = SHARED / "models" / "erfnet_cityscapes.pth"
    root = SHARED / "data" / "road_anomaly" / "RoadAnomaly_jpg"
    if not (weights.is_file() and root.is_dir()):
        print(f"precision check skipped: {weights} or {root} not found (set SML_SHARED)")
        return None
    model = sml.models.load("erfnet", weights=weights, device=device).configure(InferenceSettings())
    if size is not None:
        model.input_size = size
    ds = sml.data.open_dataset(f"road-anomaly:{root}")
    logits: dict[str, list[torch.Tensor]] = {"fp32": [], "bf16": []}
    labels = []
    with torch.inference_mode():
        for frame in ds.frames[:frames]:
            sample = ds.load(frame)
            lab = torch.from_numpy(np.asarray(sample.labels))
            if size is not None:   # --small: labels at the reduced size too
                lab = F.interpolate(lab[None, None].float(), size=size, mode="nearest")[0, 0].to(torch.uint8)
            labels.append(lab.to(device))
            for p in logits:
                logits[p].append(model.predict(sample.image, output_size=tuple(lab.shape), precision=p))
    stats = ClassStatistics(num_classes=19)
    for lg in logits["fp32"]:
        stats.update(lg)
    scorers = make_scorers(stats)
    result: dict[str, dict[str, dict[str, float]]] = {}
    for p, lgs in logits.items():
        metrics = {name: AnomalyMetrics() for name in SCORES}
        for lg, lab in zip(lgs, labels):
            for name, m in score_all(scorers, lg).items():
                metrics[name].update(m[0], lab)
        result[p] = {n: {k: float(m.compute()[k]) for k in ("auroc", "ap", "fpr95")} for n, m in metrics.items()}
    diff = {n: {k: 100 * abs(result["bf16"][n][k] - result["fp32"][n][k]) for k in ("auroc", "ap", "fpr95")}
            for n in SCORES}
    worst = max((v, n, k) for n, d in diff.items() for k, v in d.items())
    return {"frames": len(labels), "metrics": result, "diff_points": diff,
            "max_diff_points": worst[0], "max_diff_at": f"{worst[1]} {worst[2]}"}


# ---------------------------------------------------------------- report
def format_tables(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        ms = r["ms_per_frame"]
        ref = ms["forward bf16"]
        lines.append(f"batch {r['batch']}: ms per frame (ratio to the bf16 forward)")
        for k, v in ms.items():
            lines.append(f"  {k:<24} {v:10.2f} ms  {v / ref:8.3f}")
        post, five = ms["sml post-processing"] / ref, ms["five scores + metrics"] / ref
        lines.append(f"  targets: post-processing {100 * post:.1f}% of bf16 forward (< 2%: "
                     f"{'met' if post < 0.02 else 'NOT met'}); five scores + metrics {100 * five:.1f}% "
                     f"(< 10%: {'met' if five < 0.10 else 'NOT met'})")
    return "\n".join(lines)


def format_precision(p: dict[str, Any]) -> str:
    lines = [f"ERFNet on {p['frames']} Road Anomaly frames: fp32 -> bf16 (points)",
             f"  {'score':<10} {'AUROC':>16} {'AP':>16} {'FPR@95':>16}"]
    for n in SCORES:
        cells = [f"{100 * p['metrics']['fp32'][n][k]:6.2f}->{100 * p['metrics']['bf16'][n][k]:6.2f}"
                 for k in ("auroc", "ap", "fpr95")]
        lines.append(f"  {n:<10} " + " ".join(f"{c:>16}" for c in cells))
    d = p["max_diff_points"]
    lines.append(f"  largest difference: {d:.3f} points ({p['max_diff_at']}); target < 0.1: "
                 f"{'met' if d < 0.1 else 'NOT met'}")
    return "\n".join(lines)


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` (e.g. 2048x1024) -> (H, W)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} must be WIDTHxHEIGHT, e.g. 2048x1024") from None
    return h, w


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu to check the code paths")
    ap.add_argument("--small", action="store_true",
                    help="reduced run for a CPU check: 512x256 frames, 2 repeats, 2 Road Anomaly frames")
    ap.add_argument("--size", type=parse_size, default=None, help="frame size WIDTHxHEIGHT (default 2048x1024)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per row (default 10; --small 2)")
    ap.add_argument("--frames", type=int, default=None, help="Road Anomaly frames (default all 60; --small 2)")
    ap.add_argument("--no-precision", action="store_true", help="skip the ERFNet fp32/bf16 metric comparison")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"bench_gpu: no CUDA device here (torch {torch.__version__}); nothing measured "
              f"(use --device cpu --small to check the code paths)")
        return 0
    h, w = args.size or ((256, 512) if args.small else (1024, 2048))
    repeats = args.repeats or (2 if args.small else 10)
    frames = args.frames or (2 if args.small else 60)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"bench_gpu: {name}, torch {torch.__version__}, frames {w}x{h}, {repeats} repeats")
    rows = network_table(device, h, w, args.batches, repeats)
    print(format_tables(rows))
    prec = None
    if not args.no_precision:
        # the real frames at their own size on a GPU; with --small at the reduced frame size
        prec = precision_table(device, frames, (h, w) if (args.small or args.size) else None)
        if prec is not None:
            print(format_precision(prec))
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "torch": torch.__version__, "size": [h, w],
                                               "repeats": repeats, "tables": rows, "precision": prec}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
