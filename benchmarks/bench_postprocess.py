"""Benchmark: SML scoring vs the bare channel max and the literal reference-style form.

On 19 x 1024 x 2048 float32 logits (a segmentation network's output: low-
resolution logits upsampled bilinearly, as DeepLabV3+ does), side by side in
one run, interleaved repeats, median milliseconds:

- ``amax``: ``torch.amax(logits, 1)`` (the max-logit score's only work);
- ``torch.max``: values and indices in one pass (the least SML needs);
- ``sml``: ``sml.SML(stats)(logits)``, standardize + suppression + smoothing;
- ``literal``: the per-class / per-iteration transcription of the reference
  code (``sml.scores.reference.literal_sml``).

Peak extra memory is measured in a fresh subprocess per method (``VmHWM``
reset via ``/proc/self/clear_refs`` just before the call, glibc's dynamic mmap
threshold pinned so freed buffers are returned, after one call on a small input
so that one-time library set-up is not counted): the high-water mark over the
resident size before the call, including the returned map(s), in MiB and in
float32 maps of the image size.

Usage: ``python benchmarks/bench_postprocess.py [--threads 2 1] [--repeats 7] [--noise]``
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

METHODS = ("amax", "torch.max", "sml", "literal")


def make_logits(h: int, w: int, noise: bool, seed: int = 0) -> torch.Tensor:
    """Logits like a network's output: smooth regions at 1/32, detail at 1/8, upsampled bilinearly
    (about 17% boundary pixels at 1024 x 2048). ``noise``: pixel noise, nearly every pixel a boundary."""
    g = torch.Generator().manual_seed(seed)
    if noise:
        return torch.randn(1, 19, h, w, generator=g).mul_(2).add_(7)
    up = torch.nn.functional.interpolate
    coarse = torch.randn(1, 19, max(2, h // 32), max(2, w // 32), generator=g).mul_(3).add_(7)
    mid = up(coarse, size=(max(2, h // 8), max(2, w // 8)), mode="bilinear", align_corners=True)
    mid += torch.randn(mid.shape, generator=g).mul_(0.3)
    return up(mid, size=(h, w), mode="bilinear", align_corners=True)


def make_stats():
    from sml.stats import ClassStatistics

    # Fixed plausible statistics (the published ones' magnitudes) so the benchmark needs no files.
    means = [9.47, 8.34, 8.45, 7.72, 6.94, 6.60, 7.05, 7.17, 8.44, 7.49, 7.90, 7.61, 6.82, 8.61, 7.90,
             8.23, 7.62, 7.36, 6.76]
    var = [1.88, 1.56, 2.40, 3.63, 3.58, 4.17, 1.35, 1.68, 3.16, 2.04, 4.48, 2.33, 1.72, 1.61, 4.87,
           6.73, 4.30, 3.01, 2.33]
    return ClassStatistics.from_dict({"num_classes": 19, "count": [None] * 19, "mean": means, "var": var})


def method_fn(name: str, stats):
    import sml
    from sml.scores.reference import literal_sml

    if name == "amax":
        return lambda x: torch.amax(x, dim=1)
    if name == "torch.max":
        return lambda x: torch.max(x, dim=1)
    if name == "sml":
        return sml.SML(stats)
    if name == "literal":
        mean, std = stats.scoring_tensors()
        return lambda x: literal_sml(x, mean, std)
    raise ValueError(name)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def measure_memory(name: str, h: int, w: int, noise: bool) -> int:
    """Child process: peak resident bytes added by one call of ``name``."""
    fn = method_fn(name, make_stats())
    fn(make_logits(64, 128, noise))  # one-time library set-up (thread pools, kernels) is not per call
    x = make_logits(h, w, noise)
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset VmHWM to the current RSS
    out = fn(x)
    peak = _status_kib("VmHWM")
    del out
    return (peak - before) * 1024


def memory_in_subprocess(name: str, h: int, w: int, noise: bool) -> float:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="0")
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
            f"import bench_postprocess as b; print(b.measure_memory({name!r}, {h}, {w}, {noise}))")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--height", type=int, default=1024)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--literal-repeats", type=int, default=3)
    ap.add_argument("--noise", action="store_true", help="pixel-noise logits (worst case: all boundary)")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--threads", type=int, nargs="*", default=[],
                    help="torch intra-op thread counts to run (default: torch's own setting)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    results = []
    for n in args.threads or [torch.get_num_threads()]:
        torch.set_num_threads(n)
        results.append(run(args))
        args.no_memory = True  # memory does not depend on the thread count: measured once
    return results[0] if len(results) == 1 else {"runs": results}


def run(args: argparse.Namespace) -> dict:
    h, w = args.height, args.width
    x = make_logits(h, w, args.noise)
    stats = make_stats()
    fns = {m: method_fn(m, stats) for m in METHODS}
    for fn in fns.values():  # warm-up (allocator, thread pool)
        fn(x)
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    for rep in range(args.repeats):
        for m in METHODS:  # interleaved so drifting machine load hits all methods alike
            if m == "literal" and rep >= args.literal_repeats:
                continue
            t0 = time.perf_counter()
            fns[m](x)
            times[m].append((time.perf_counter() - t0) * 1e3)
    med = {m: statistics.median(v) for m, v in times.items()}

    from sml.scores.postprocess import boundary_mask

    frac = float(boundary_mask(torch.max(x, 1).indices).float().mean())
    map_bytes = h * w * 4
    mem = {} if args.no_memory else {m: memory_in_subprocess(m, h, w, args.noise) for m in METHODS}
    print(f"\nlogits 1 x 19 x {h} x {w} float32 ({'pixel noise' if args.noise else 'smooth, upsampled'}), "
          f"boundary pixels {100 * frac:.1f}%, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'method':<11} {'median ms':>10} {'runs':>5} {'/ torch.max':>12} {'/ amax':>8} "
          f"{'literal / x':>12} {'peak extra MiB':>15} {'maps':>6}")
    for m in METHODS:
        mb = mem.get(m)
        print(f"{m:<11} {med[m]:>10.1f} {len(times[m]):>5} {med[m] / med['torch.max']:>12.2f} "
              f"{med[m] / med['amax']:>8.2f} {med['literal'] / med[m]:>12.1f} "
              + (f"{mb / 2 ** 20:>15.1f} {mb / map_bytes:>6.2f}" if mb is not None else f"{'-':>15} {'-':>6}"))
    print(f"targets: sml <= 2x torch.max: {med['sml'] / med['torch.max']:.2f}x; "
          f"sml >= 30x faster than literal: {med['literal'] / med['sml']:.1f}x"
          + (f"; sml extra memory <= 3 maps: {mem['sml'] / map_bytes:.2f} (incl. the output map)" if mem else ""))
    result = {"threads": torch.get_num_threads(), "median_ms": med, "runs": times, "peak_extra_bytes": mem, "map_bytes": map_bytes,
              "boundary_fraction": frac, "shape": [1, 19, h, w], "noise": args.noise}
    if args.json:
        with open(args.json, "a") as fh:
            fh.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    main()
