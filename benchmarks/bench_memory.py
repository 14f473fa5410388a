"""Memory of the exact pixel metrics at benchmark scale: five AnomalyMetrics states on 2048 x 1024 frames.

Lost and Found ``test`` is 1203 frames of 2048 x 1024. This script makes N such
frames and feeds the five methods' maps (max_logit, msp, entropy, energy, sml)
to five :class:`sml.metrics.AnomalyMetrics`, once with every pixel evaluated
and once with a 30% region of interest (the rest ignored, as Lost and Found's
ROI), then calls ``compute()`` and ``curves()`` of each. It reports the peak of
what NumPy allocates (tracemalloc: the metric states and their temporaries;
the maps are memory-mapped files, not counted) and the process's peak RSS.

Frames: the real ERFNet logits (``/work/shared/models/erfnet_cityscapes.pth``)
of two shared Cityscapes frames (``cityscapes_mini``), computed once at
512 x 1024, then per frame flipped, shifted, with a smooth random field added
to each class's logits (8 x 16 grid, std 0.7, bilinear); the maps are
``sml``'s own scorers on those logits (sml with class statistics of the two
base frames and its default post-processing), upsampled bilinearly to
1024 x 2048 (scoring at half resolution keeps the 2-core generation at ~2 s a
frame; interpolation makes new float values as upsampled logits would). Anomaly labels are a few random ellipses (~1% of pixels).
Maps are cached as ``.npy`` files under ``--cache`` (5 x 8 MiB a frame).

The state of the counted tables grows with the number of distinct float32
scores, which is measured (after an explicit compaction every ``--every``
frames) rather than assumed, and extrapolated to 1203 frames by continuing the
last measured growth per frame linearly (an upper bound while growth slows).
The old code (a path given by ``--old-src``: every evaluated pixel's key,
4 bytes plus growth slack) is run side by side on ``--old-frames`` frames and
extrapolated linearly (its state is linear in pixels by construction).

    python benchmarks/bench_memory.py --frames 120 --old-src /path/to/old/src
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

H, W = 1024, 2048
METHODS = ("max_logit", "msp", "entropy", "energy", "sml")
LAF_FRAMES = 1203
ROI = {"all": None, "roi30": (int(0.6 * H), int(0.9 * H))}  # rows kept: 30% of the frame
SHARED = Path(os.environ.get("SML_SHARED", "/work/shared"))


# ---------------------------------------------------------------- frames
def make_frames(cache: Path, n: int) -> None:
    """Write ``n`` frames' five maps and labels to ``cache`` (skips frames already there)."""
    import torch

    from sml.pipelines.common import forward, load_model
    from sml.pipelines.evaluate import score_frame
    from sml.scores import build_scorers
    from sml.stats import ClassStatistics
    from sml.data.io import read_image

    todo = [i for i in range(n) if not (cache / f"{i}.labels.npy").exists()]
    if not todo:
        return
    torch.manual_seed(0)
    model = load_model("erfnet", str(SHARED / "models" / "erfnet_cityscapes.pth"))
    imgs = sorted((SHARED / "data" / "cityscapes_mini" / "leftImg8bit").rglob("*.jpg"))[:2]
    base = [forward(model, read_image(p), (H // 2, W // 2)) for p in imgs]
    stats = ClassStatistics()
    for lg in base:
        stats.update(lg)
    scorers = build_scorers(METHODS, stats)
    for i in todo:
        g = torch.Generator().manual_seed(i)
        lg = base[i % len(base)]
        if i % 4 >= 2:
            lg = lg.flip(-1)
        dy, dx = (int(v) for v in torch.randint(-40, 41, (2,), generator=g))
        lg = torch.roll(lg, shifts=(dy, dx), dims=(-2, -1))
        noise = torch.randn(1, lg.shape[1], 8, 16, generator=g) * 0.7
        lg = lg + torch.nn.functional.interpolate(noise, size=lg.shape[-2:], mode="bilinear", align_corners=False)
        half = score_frame(scorers, lg).maps
        maps = {m: torch.nn.functional.interpolate(torch.from_numpy(v)[None, None], size=(H, W), mode="bilinear",
                                                   align_corners=False)[0, 0].numpy() for m, v in half.items()}
        rng = np.random.default_rng(i)
        yy, xx = np.ogrid[:H, :W]
        y = np.zeros((H, W), np.uint8)
        for _ in range(3):
            cy, cx = rng.integers(int(0.6 * H), int(0.9 * H)), rng.integers(0, W)
            ry, rx = rng.integers(15, 60), rng.integers(20, 90)
            y[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = 1
        for m in METHODS:
            np.save(cache / f"{i}.{m}.npy", np.ascontiguousarray(maps[m], dtype=np.float32))
        np.save(cache / f"{i}.labels.npy", y)
        print(f"  frame {i + 1}/{n} made", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- one measured run (own process)
def measure(cache: Path, n: int, roi: str, every: int) -> dict:
    from sml.metrics import AnomalyMetrics, FrameLabels

    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    ms = {m: AnomalyMetrics() for m in METHODS}
    counted = hasattr(ms[METHODS[0]], "distinct")
    growth, evaluated, anomaly = [], 0, 0
    t0 = time.perf_counter()
    for i in range(n):
        y = np.load(cache / f"{i}.labels.npy")
        if ROI[roi] is not None:
            r0, r1 = ROI[roi]
            keep = np.zeros((H, W), bool)
            keep[r0:r1] = True
            y[~keep] = 255
        fl = FrameLabels(y)
        evaluated += fl.n_pos + fl.n_neg
        anomaly += fl.n_pos
        for m in METHODS:
            ms[m].update(np.load(cache / f"{i}.{m}.npy", mmap_mode="r"), fl)
        del y, fl
        if counted and ((i + 1) % every == 0 or i + 1 == n):
            for m in METHODS:
                ms[m]._compact_pending()  # a compaction point like any other: results do not change
            growth.append([i + 1] + [[ms[m].distinct, ms[m]._an.distinct, ms[m]._ev.nbytes + ms[m]._an.nbytes]
                                     for m in METHODS])
    t_update = time.perf_counter() - t0
    state = {m: ms[m].nbytes for m in METHODS}
    peak_update = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    res = {}
    for m in METHODS:
        r = ms[m].compute()
        ms[m].curves(2000)
        res[m] = [r["auroc"], r["ap"], r["fpr95"]]
    t_compute = time.perf_counter() - t0
    peak_compute = tracemalloc.get_traced_memory()[1] - base
    return {"frames": n, "roi": roi, "evaluated": evaluated, "anomaly": anomaly, "state": state, "peak_update": peak_update,
            "peak_compute": peak_compute, "peak": max(peak_update, peak_compute), "growth": growth,
            "rss_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "results": res,
            "seconds_update": t_update, "seconds_compute": t_compute}


def run_child(src: str, cache: Path, n: int, roi: str, every: int) -> dict:
    env = dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    out = subprocess.run([sys.executable, __file__, "--child", str(cache), str(n), roi, str(every)], env=env,
                         check=True, capture_output=True, text=True).stdout
    (cache / f"result.{Path(src).resolve().parent.name}.{roi}.{n}.json").write_text(out.strip().splitlines()[-1])
    return json.loads(out.strip().splitlines()[-1])


# ---------------------------------------------------------------- extrapolation
def extrapolate_new(r: dict) -> dict:
    """Tables and peak bytes of the five counted states at 1203 frames, from the measured growth.

    Each method's table bytes continue their last measured growth per frame
    linearly (an upper bound while the growth slows). Peak while updating: every
    table, plus the largest one again (a compaction writes the new table while the
    old one is alive), plus what was measured beyond that at N frames (pending
    buffers, run temporaries); no table above the 4 B/pixel bound. Peak of
    compute(): the tables plus its measured temporaries scaled with the distinct anomaly scores.
    """
    g = r["growth"]
    (n0, *d0), (n1, *d1) = g[-2], g[-1]
    scale = (LAF_FRAMES - n1) / (n1 - n0)
    cap = 4 * (r["evaluated"] + r["anomaly"]) / r["frames"] * LAF_FRAMES  # the 4 B/pixel bound, per method
    t_n = [b for _, _, b in d1]
    t = [min(cap, b1 + max(0, b1 - b0) * scale) for (_, _, b0), (_, _, b1) in zip(d0, d1)]
    d = [a1 + max(0, a1 - a0) * scale for (a0, _, _), (a1, _, _) in zip(d0, d1)]
    p_n = sum(p for _, p, _ in d1)
    p = sum(p1 + max(0, p1 - p0) * scale for (_, p0, _), (_, p1, _) in zip(d0, d1))
    rest = max(0.0, r["peak_update"] - sum(t_n) - max(t_n))
    temp = max(0.0, r["peak_compute"] - sum(t_n))  # compute()'s arrays: per distinct anomaly score
    return {"distinct": d, "tables": sum(t), "peak_update": sum(t) + max(t) + rest,
            "peak_compute": sum(t) + temp * p / max(1, p_n)}


def gb(x: float) -> str:
    return f"{x / 2**30:6.2f} GB"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        cache, n, roi, every = Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
        print(json.dumps(measure(cache, n, roi, every)))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=120, help="frames measured with the current code (default 120)")
    ap.add_argument("--old-src", help="a src/ folder with the previous sml (its runs side by side)")
    ap.add_argument("--old-frames", type=int, default=24, help="frames measured with the old code (default 24)")
    ap.add_argument("--every", type=int, default=10, help="frames between distinct-value measurements")
    ap.add_argument("--cache", help="folder for the generated maps (default: a temporary folder, removed)")
    args = ap.parse_args()
    src = str(Path(__file__).resolve().parent.parent / "src")
    cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="sml-bench-mem-"))
    cache.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, src)
    from sml.metrics.pixel import COMPACT_AT

    try:
        t0 = time.perf_counter()
        make_frames(cache, max(args.frames, args.old_frames if args.old_src else 0))
        print(f"frames ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        rows = []
        for roi in ROI:
            new = run_child(src, cache, args.frames, roi, args.every)
            old = run_child(args.old_src, cache, args.old_frames, roi, args.every) if args.old_src else None
            rows.append((roi, new, old))
        print(f"\nfive AnomalyMetrics (max_logit, msp, entropy, energy, sml), 2048x1024 frames; "
              f"compact_at = {COMPACT_AT}")
        for roi, new, _ in rows:
            print(f"\n[{roi}] distinct float32 scores (evaluated / anomaly) and table MB per method:")
            print("frames | " + " | ".join(METHODS))
            for n, *d in new["growth"]:
                print(f"{n:6d} | " + " | ".join(f"{a / 1e6:6.2f}M / {p / 1e6:5.2f}M {b / 2**20:5.0f}MB"
                                                for a, p, b in d))
            px = new["evaluated"] / new["frames"]
            ex = extrapolate_new(new)
            print(f"pixels evaluated per frame: {px / 1e6:.2f}M ({px / (H * W):.0%}); measured at {new['frames']} "
                  f"frames: state {gb(sum(new['state'].values()))}, peak {gb(new['peak'])} (update "
                  f"{gb(new['peak_update'])}, compute+curves {gb(new['peak_compute'])}), process RSS peak "
                  f"{gb(new['rss_peak'])}")
            print(f"at {LAF_FRAMES} frames: distinct evaluated scores " + ", ".join(
                f"{m} {v / 1e6:.0f}M" for m, v in zip(METHODS, ex["distinct"])) + f"; tables {gb(ex['tables'])}, "
                f"peak update {gb(ex['peak_update'])}, compute {gb(ex['peak_compute'])}; the state never exceeds "
                f"4 B per evaluated pixel + 4 B per anomaly pixel: {gb(4 * (new['evaluated'] + new['anomaly']) / new['frames'] * LAF_FRAMES * len(METHODS))} (the old state's size)")
        print("\n| case | frames measured | old peak (measured) | new peak (measured) | old peak at 1203 | "
              "new peak at 1203 | ratio new/old at 1203 |")
        print("|---|---|---|---|---|---|---|")
        for roi, new, old in rows:
            ex = extrapolate_new(new)
            new_1203 = max(ex["peak_update"], ex["peak_compute"])
            if old is not None:
                old_1203 = old["peak"] / old["frames"] * LAF_FRAMES
                old_s = f"{gb(old['peak'])} ({old['frames']} fr)"
                ratio = f"{new_1203 / old_1203:.3f}"
            else:
                old_1203, old_s, ratio = float("nan"), "not run", "-"
            print(f"| {roi} | {new['frames']} | {old_s} | {gb(new['peak'])} | {gb(old_1203)} | {gb(new_1203)} | "
                  f"{ratio} |")
        for roi, new, old in rows:
            if old is not None:
                same = all(np.allclose(new["results"][m], old["results"][m], rtol=0, atol=0)
                           for m in METHODS) if new["frames"] == old["frames"] else None
                print(f"{roi}: old {old['seconds_update'] / old['frames'] * 1e3:.0f} ms/frame update, "
                      f"{old['seconds_compute']:.1f} s compute; results identical at equal frames: {same}")
        print("peaks: tracemalloc (NumPy allocations of the five states and their temporaries, not the maps); "
              "1203-frame figures: old linear in pixels, new from the last measured growth of its tables "
              "continued linearly (see extrapolate_new).")
    finally:
        if not args.cache:
            shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
