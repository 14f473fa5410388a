"""Benchmark: the GPU path of `sml eval` at 1024x2048, and what bf16 does to the metrics.

Per network (DeepLabV3+ R101 OS8 with random weights; ERFNet with the published weights from
``$SML_SHARED/models``, random ones when they are missing) and batch size (1, 4, 8), milliseconds
per frame (median of repeats; CUDA events after a synchronize), each also as a ratio to the bf16
forward pass of the same network and batch size:

- ``forward fp32`` / ``bf16`` / ``fp16``: ``sml.pipelines.common.forward`` (what `sml eval` runs:
  uint8 frames already on the device -> ``SegmentationModel.predict``: resize, normalize, the
  network in channels-last under autocast, logits upsampled to 1024x2048, float32);
- ``forward bf16 compiled`` (and fp32 / fp16 with ``--compile``): the same with ``torch.compile``
  (default mode, as ``sml eval --compile``), at the largest batch size (``--compile-batches``).
  Compilation is timed apart (row ``compile seconds``) and bounded by ``--compile-budget-s``: a
  compile row that would not fit is skipped;
- per frame, the same for every batch size (the pipeline scores frame by frame), on network-like
  logits (``bench_postprocess.make_logits``: regions and boundaries as a trained network gives):
  ``sml post-processing`` (``SML.score_from`` a given max/argmax), ``five scores``
  (``sml.pipelines.evaluate.score_frame``: MSP, max logit, entropy, energy, SML from one shared
  context, maps as the pipeline keeps them), ``metric update`` (``evaluate._update_states`` of the
  five maps, exact metrics, no diagnostics), ``diagnostics`` (``_update_states`` with the per-class
  diagnostics, minus the row above), ``statistics update`` (``ClassStatistics.update``, what `sml
  stats` does per frame);
- ``sml eval``: the whole pipeline (``sml.pipelines.evaluate.evaluate``, the code `sml eval` runs)
  on ``--eval-frames`` frames at 1024x2048 in a temporary ``folder:`` data set (the Road Anomaly
  frames upsampled when the shared data are there, else generated ones), five methods, exact
  metrics, bf16, ``--batch-size`` 1/4/8, decoding workers as `sml eval` chooses them; wall time per
  frame (frames per second and the stages in the JSON), and ``sml eval loop (per frame)``: the same
  without the once-per-run work at the end (pooled metrics, curves, the run's files).

Targets printed beside the tables (on a GPU): SML post-processing at most 2% of the bf16 forward;
everything beyond the forward at most 10% (five methods, exact metrics: from the rows, and end to
end from the ``sml eval`` loop row); bf16 metrics within 0.1 points of fp32 (ERFNet on the shared Road
Anomaly frames at full size, ``precision_table``: AUROC, AP and FPR@95 of the five scores, SML's
statistics fixed from the fp32 logits, so the difference is the precision's alone).

Unattended: every row runs on its own (an error is printed and the next row runs), tables are
printed as they fill, ``--json`` is rewritten after every row, and ``--budget-s`` skips what would
not fit (cheap rows first, compilation last). Without CUDA it prints one line and exits 0;
``--device cpu --small`` runs every code path on the CPU at 64x128 in a minute or two, to check
the script (compile rows with the ``eager`` backend), not to measure.

    python benchmarks/bench_gpu.py [--device cuda:0] [--json out.json] [--budget-s 480]
    python benchmarks/bench_gpu.py --device cpu --small
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SHARED = Path(os.environ.get("SML_SHARED", Path(__file__).resolve().parents[2] / "shared"))
SCORES = ("msp", "max_logit", "entropy", "energy", "sml")
NETWORKS = {"deeplabv3plus_r101_os8": "DeepLabV3+ R101 OS8", "erfnet": "ERFNet"}
PRECISIONS = ("fp32", "bf16", "fp16")
#: seconds a first compilation is assumed to take before one was measured
COMPILE_GUESS_S = 90.0


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


# ---------------------------------------------------------------- results, budget, output
class Bench:
    """The results so far, the time budget, and the JSON file rewritten after every row."""

    def __init__(self, args: argparse.Namespace, device: torch.device, size: tuple[int, int]) -> None:
        self.args, self.device, self.size = args, device, size
        self.t0 = time.perf_counter()
        self.compile_s = 0.0          # seconds spent compiling so far
        self.compile_max = 0.0        # the longest compilation seen
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
            f"CPU ({torch.get_num_threads()} threads)"
        self.data: dict[str, Any] = {"device": name, "torch": torch.__version__, "size": list(size),
                                     "repeats": args.repeats, "batches": args.batches, "tables": {},
                                     "eval": {}, "precision": None, "targets": {}, "notes": [], "elapsed_s": 0.0}

    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.t0)

    def save(self) -> None:
        self.data["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        if self.args.json:
            path = Path(self.args.json)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(self.data, indent=1, default=str))
            os.replace(tmp, path)

    def note(self, text: str) -> None:
        print(f"note: {text}", flush=True)
        self.data["notes"].append(text)
        self.save()

    def cell(self, net: str, row: str, batch: int | str, value: dict[str, Any]) -> None:
        self.data["tables"].setdefault(net, {}).setdefault(row, {})[str(batch)] = value
        self.save()

    def measure(self, net: str, row: str, batch: int | str, fn: Callable[[], float], need_s: float = 0.0) -> float | None:
        """``fn()`` (milliseconds per frame) into the table, unless the budget cannot cover ``need_s``;
        an error is recorded and printed, and the run goes on."""
        if self.left() < need_s:
            self.cell(net, row, batch, {"skipped": f"budget: {self.left():.0f} s left, about {need_s:.0f} s needed"})
            return None
        try:
            ms = float(fn())
        except Exception as exc:  # noqa: BLE001 - every row on its own: report and go on
            return self.failed(net, row, batch, exc)
        self.cell(net, row, batch, {"ms": ms})
        return ms

    def failed(self, net: str, row: str, batch: int | str, exc: BaseException) -> None:
        msg = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"
        print(f"error in {net} / {row} / batch {batch}: {msg}", flush=True)
        if self.args.verbose:
            traceback.print_exc()
        self.cell(net, row, batch, {"error": msg})
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return None


# ---------------------------------------------------------------- inputs
def frames_on_device(b: int, h: int, w: int, device: torch.device, seed: int = 0) -> list[torch.Tensor]:
    """``b`` uint8 ``H x W x 3`` frames with smooth regions, on the device (decoded frames, as the loader gives)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(b):
        coarse = torch.rand(1, 3, max(2, h // 16), max(2, w // 16), generator=g)
        img = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]
        out.append((img * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().to(device))
    return out


def make_labels(h: int, w: int) -> np.ndarray:
    """Anomaly labels: a block of anomaly (1) on inliers (0), the top rows void (255)."""
    lab = np.zeros((h, w), np.uint8)
    lab[h // 2: h // 2 + h // 8, w // 3: w // 3 + w // 8] = 1
    lab[: h // 16] = 255
    return lab


def load_network(name: str, device: torch.device, folder: Path, bench: Bench) -> Any:
    """A ``SegmentationModel`` as `sml eval --model NAME --weights ...` loads it (random weights for DeepLabV3+;
    ERFNet's published ones when present)."""
    import sml.models

    if name == "erfnet":
        weights = SHARED / "models" / "erfnet_cityscapes.pth"
        if not weights.is_file():
            bench.note(f"{weights} not found (set SML_SHARED): ERFNet with random weights")
            weights = None
    else:
        weights = None
    if weights is None:
        torch.manual_seed(0)
        net = sml.models.build(name, num_classes=20 if name == "erfnet" else 19)
        weights = folder / f"{name}_random.pth"
        torch.save(net.state_dict(), weights)
        del net
    return sml.models.load(name, weights=weights, device=device)


def configure(model: Any, precision: str, compiled: bool = False, backend: str | None = None) -> Any:
    from sml.utils.precision import InferenceSettings

    return model.configure(InferenceSettings(precision, compile=compiled, compile_backend=backend))


# ---------------------------------------------------------------- rows
def forward_rows(bench: Bench, model: Any, net: str, precisions: list[str]) -> None:
    """Eager forward passes: every precision the device runs, every batch size."""
    from sml.pipelines import common

    h, w = bench.size
    for b in bench.args.batches:
        images = frames_on_device(b, h, w, bench.device)
        for p in precisions:
            def run(p: str = p) -> float:
                configure(model, p)
                return time_ms(lambda: common.forward(model, images, (h, w)), bench.device, bench.args.repeats) / b
            bench.measure(net, f"forward {p}", b, run, need_s=5.0)
        del images
        if bench.device.type == "cuda":
            torch.cuda.empty_cache()
    configure(model, "fp32")


def compile_rows(bench: Bench, model: Any, net: str, precisions: list[str]) -> None:
    """``torch.compile`` (default mode, as ``--compile``) at the ``--compile-batches`` sizes: a compilation per
    precision (and a recompilation per further batch size, with the batch dimension dynamic), timed apart,
    within the compile budget."""
    from sml.pipelines import common

    h, w = bench.size
    backend = bench.args.compile_backend
    for p in precisions:
        row = f"forward {p} compiled"
        guess = bench.compile_max or COMPILE_GUESS_S
        if bench.compile_s + guess > bench.args.compile_budget_s or bench.left() < guess + 10:
            for b in bench.args.compile_batches:
                bench.cell(net, row, b, {"skipped": f"compile budget: {bench.compile_s:.0f} of "
                                                    f"{bench.args.compile_budget_s:.0f} s used, a compilation "
                                                    f"takes about {guess:.0f} s; {bench.left():.0f} s left"})
            continue
        try:
            configure(model, p, compiled=True, backend=backend)
        except Exception as exc:  # noqa: BLE001
            for b in bench.args.compile_batches:
                bench.failed(net, row, b, exc)
            continue
        for b in bench.args.compile_batches:
            if (bench.data["tables"].get(net, {}).get(row) or {}) and \
                    any("error" in c for c in bench.data["tables"][net][row].values()):
                bench.cell(net, row, b, {"skipped": "the compilation failed at a batch size before"})
                continue
            images = frames_on_device(b, h, w, bench.device)

            def run(b: int = b, images: list = images) -> float:
                t0 = time.perf_counter()
                common.forward(model, images, (h, w))   # compiles (or recompiles for this batch size)
                sync(bench.device)
                spent = time.perf_counter() - t0
                bench.compile_s += spent
                bench.compile_max = max(bench.compile_max, spent)
                bench.cell(net, f"compile seconds {p}", b, {"s": spent})
                return time_ms(lambda: common.forward(model, images, (h, w)), bench.device, bench.args.repeats) / b
            bench.measure(net, row, b, run, need_s=(bench.compile_max or COMPILE_GUESS_S) / 2 + 5)
            del images
        configure(model, "fp32")
        if bench.device.type == "cuda":
            torch.cuda.empty_cache()


def per_frame_rows(bench: Bench, model: Any, plan_dataset: Any, stats: Any, folder: Path) -> None:
    """Scoring, metric, diagnostics and statistics rows, per frame, on network-like logits."""
    import importlib

    from bench_postprocess import make_logits
    from sml.scores import max_and_argmax
    from sml.stats import ClassStatistics

    E = importlib.import_module("sml.pipelines.evaluate")  # the module (sml.pipelines.evaluate the name is the function)
    h, w = bench.size
    dev, reps = bench.device, bench.args.repeats
    net = "per frame"
    try:
        plans = {diag: E.plan(model, plan_dataset, folder / f"plan{int(diag)}",
                              E.EvalConfig(methods=list(SCORES), diagnostics=diag, stats_from_other_network=True),
                              stats) for diag in (False, True)}
        logits = make_logits(h, w, False).to(dev)
        labels = make_labels(h, w)
        scored = E.score_frame(plans[True].scorers, logits)
    except Exception as exc:  # noqa: BLE001
        bench.failed(net, "set-up", 1, exc)
        return
    values, pred = max_and_argmax(logits)
    sml_scorer = plans[True].scorers["sml"]
    bench.measure(net, "sml post-processing", 1, lambda: time_ms(lambda: sml_scorer.score_from(values, pred), dev, reps))
    bench.measure(net, "five scores", 1, lambda: time_ms(lambda: E.score_frame(plans[True].scorers, logits), dev, reps))
    upd = {}
    for diag, row in ((False, "metric update"), (True, "metric update + diagnostics")):
        p = plans[diag]
        upd[diag] = bench.measure(net, row, 1, lambda p=p: time_ms(
            lambda: E._update_states(p, p.new_period(), scored, labels, {"methods": {}}), dev, reps))
    if upd[False] is not None and upd[True] is not None:
        bench.cell(net, "diagnostics", 1, {"ms": max(0.0, upd[True] - upd[False]), "derived": True})
    bench.measure(net, "statistics update", 1, lambda: time_ms(
        lambda: ClassStatistics(19).update(logits), dev, reps))


def eval_data(folder: Path, n: int, h: int, w: int, bench: Bench) -> Path:
    """A ``folder:`` data set of ``n`` frames at ``h x w``: the Road Anomaly frames upsampled (labels nearest),
    or smooth generated frames with an anomaly block when the shared data are missing."""
    from PIL import Image

    root = folder / "frames"
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    ra = SHARED / "data" / "road_anomaly" / "RoadAnomaly_jpg"
    ds = None
    if ra.is_dir():
        import sml.data

        ds = sml.data.open_dataset(f"road-anomaly:{ra}", allow_subset=True)
    else:
        bench.note(f"{ra} not found: the sml eval rows run on generated frames")
    rng = np.random.default_rng(0)
    for i in range(n):
        if ds is not None:
            s = ds[i % len(ds)]
            img = Image.fromarray(s.image).resize((w, h), Image.BILINEAR)
            lab = Image.fromarray(s.labels).resize((w, h), Image.NEAREST)
        else:
            base = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
            img = Image.fromarray(base).resize((w, h), Image.BILINEAR)
            lab = Image.fromarray(make_labels(h, w))
        img.save(root / "images" / f"f{i:03d}.png")
        lab.save(root / "labels" / f"f{i:03d}.png")
    bench.data["eval_frames"] = {"frames": n, "source": "road anomaly, upsampled" if ds is not None else "generated"}
    return root


def eval_rows(bench: Bench, model: Any, net: str, root: Path, stats: Any, folder: Path) -> None:
    """`sml eval` as a whole (``evaluate``), bf16, five methods, exact metrics, per batch size."""
    import sml.data
    from sml.pipelines.evaluate import EvalConfig, evaluate

    n = bench.args.eval_frames
    ds = sml.data.open_dataset(f"folder:{root}")
    configure(model, "bf16")
    for b in bench.args.batches:
        def run(b: int = b) -> float:
            out = folder / f"eval_{net}_{b}"
            config = EvalConfig(methods=list(SCORES), batch_size=b, stats_from_other_network=True)
            sync(bench.device)
            t0 = time.perf_counter()
            result = evaluate(model, ds, out, config, stats=stats, show_progress=False)
            wall = time.perf_counter() - t0
            # the frames' loop apart from the once-per-run work (pooled metrics and curves, the run's files)
            loop = wall - sum(result.seconds.get(k, 0.0) for k in ("final", "post", "results"))
            bench.data["eval"].setdefault(net, {})[str(b)] = {
                "frames": n, "wall_s": wall, "fps": n / wall, "loop_s": loop, "loop_fps": n / loop,
                "seconds": result.seconds, "auroc": {m: r.get("auroc") for m, r in result.metrics["methods"].items()}}
            bench.cell(net, "sml eval loop (per frame)", b, {"ms": 1e3 * loop / n, "derived": True})
            return 1e3 * wall / n
        guess = bench.data["eval"].get(net, {}).get(str(bench.args.batches[0]), {}).get("wall_s", 30.0)
        bench.measure(net, "sml eval (whole, bf16)", b, run, need_s=guess)
    configure(model, "fp32")


def precision_table(device: torch.device, frames: int, size: tuple[int, int] | None) -> dict[str, Any] | None:
    """ERFNet on Road Anomaly in fp32 and bf16: the five scores' AUROC/AP/FPR@95 and their differences."""
    import sml.data
    import sml.models
    from sml.metrics import AnomalyMetrics
    from sml.scores import LogitContext, build_scorer
    from sml.stats import ClassStatistics
    from sml.utils.precision import InferenceSettings

    weights = SHARED / "models" / "erfnet_cityscapes.pth"
    root = SHARED / "data" / "road_anomaly" / "RoadAnomaly_jpg"
    if not (weights.is_file() and root.is_dir()):
        print(f"precision check skipped: {weights} or {root} not found (set SML_SHARED)", flush=True)
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
    scorers = {name: build_scorer(name, stats) for name in SCORES}
    result: dict[str, dict[str, dict[str, float]]] = {}
    for p, lgs in logits.items():
        metrics = {name: AnomalyMetrics() for name in SCORES}
        for lg, lab in zip(lgs, labels):
            ctx = LogitContext(lg)
            for name, s in scorers.items():
                metrics[name].update(s.score_context(ctx)[0], lab)
        result[p] = {n: {k: float(m.compute()[k]) for k in ("auroc", "ap", "fpr95")} for n, m in metrics.items()}
    diff = {n: {k: 100 * abs(result["bf16"][n][k] - result["fp32"][n][k]) for k in ("auroc", "ap", "fpr95")}
            for n in SCORES}
    worst = max((v, n, k) for n, d in diff.items() for k, v in d.items())
    return {"frames": len(labels), "metrics": result, "diff_points": diff,
            "max_diff_points": worst[0], "max_diff_at": f"{worst[1]} {worst[2]}"}


# ---------------------------------------------------------------- report
def _fmt_cell(v: dict[str, Any] | None, ref: float | None) -> str:
    if v is None:
        return ""
    if "ms" in v:
        ratio = f" ({v['ms'] / ref:.3f})" if ref else ""
        return f"{v['ms']:.2f}{ratio}"
    if "s" in v:
        return f"{v['s']:.1f} s"
    return "error" if "error" in v else "skipped"


def format_tables(data: dict[str, Any]) -> str:
    """Per network: rows x batch sizes, ms per frame (ratio to the bf16 forward of that batch size); the
    per-frame rows are shown in every network's table, as ratios to its forward."""
    lines = []
    batches = [str(b) for b in data["batches"]]
    per_frame = data["tables"].get("per frame", {})
    for net, rows in data["tables"].items():
        if net == "per frame":
            continue
        h, w = data["size"]
        lines.append(f"{NETWORKS.get(net, net)} at {w}x{h}: ms per frame (ratio to the bf16 forward)")
        ref = {b: (rows.get("forward bf16", {}).get(b) or {}).get("ms") for b in batches}
        lines.append(f"  {'row':<30}" + "".join(f"{'batch ' + b:>20}" for b in batches))
        all_rows = {**rows, **{k: {b: v.get("1") for b in batches} for k, v in per_frame.items()}}
        for name, cells in all_rows.items():
            lines.append(f"  {name:<30}" + "".join(f"{_fmt_cell(cells.get(b), ref[b] if 's' not in (cells.get(b) or {}) else None):>20}"
                                                  for b in batches))
    return "\n".join(lines)


def targets(data: dict[str, Any]) -> list[str]:
    """The targets, from what was measured (bf16 forward as the reference)."""
    out = []
    pf = {k: (v.get("1") or {}).get("ms") for k, v in data["tables"].get("per frame", {}).items()}
    for net, rows in data["tables"].items():
        if net == "per frame":
            continue
        for b in map(str, data["batches"]):
            fwd = (rows.get("forward bf16", {}).get(b) or {}).get("ms")
            if not fwd:
                continue
            parts = []
            if pf.get("sml post-processing") is not None:
                r = pf["sml post-processing"] / fwd
                parts.append(f"SML post-processing {100 * r:.1f}% of the bf16 forward (<= 2%: "
                             f"{'met' if r <= 0.02 else 'NOT met'})")
            beyond = [pf.get(k) for k in ("five scores", "metric update + diagnostics")]
            if all(v is not None for v in beyond):
                r = sum(beyond) / fwd
                parts.append(f"five scores + metric update + diagnostics {100 * r:.1f}% (<= 10%: "
                             f"{'met' if r <= 0.10 else 'NOT met'})")
            ev = (rows.get("sml eval (whole, bf16)", {}).get(b) or {}).get("ms")
            loop = (rows.get("sml eval loop (per frame)", {}).get(b) or {}).get("ms")
            if ev is not None and loop is not None:
                r = (loop - fwd) / fwd
                parts.append(f"sml eval {1e3 / ev:.1f} frames/s whole ({ev:.1f} ms/frame with the pooled metrics "
                             f"at the end), its frame loop {loop:.1f} ms/frame: beyond the forward {100 * r:.1f}% "
                             f"(<= 10%: {'met' if r <= 0.10 else 'NOT met'})")
            if parts:
                out.append(f"{NETWORKS.get(net, net)}, batch {b}: " + "; ".join(parts))
    p = data.get("precision")
    if p:
        d = p["max_diff_points"]
        out.append(f"bf16 vs fp32 (ERFNet, {p['frames']} Road Anomaly frames): largest difference {d:.3f} points "
                   f"({p['max_diff_at']}); <= 0.1: {'met' if d <= 0.1 else 'NOT met'}")
    data["targets"] = out
    return out


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


def show(bench: Bench, title: str) -> None:
    print(f"\n== {title} ({time.perf_counter() - bench.t0:.0f} s)\n{format_tables(bench.data)}", flush=True)
    for line in targets(bench.data):
        print(f"target: {line}", flush=True)
    bench.save()


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` (e.g. 2048x1024) -> (H, W)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} must be WIDTHxHEIGHT, e.g. 2048x1024") from None
    return h, w


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu to check the code paths")
    ap.add_argument("--small", action="store_true",
                    help="CPU check: 64x128 frames, batches 1 2, 1 repeat, 2 frames, compile with the eager backend")
    ap.add_argument("--size", type=parse_size, default=None, help="frame size WIDTHxHEIGHT (default 2048x1024)")
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes (default 1 4 8)")
    ap.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per row (default 5; --small 1)")
    ap.add_argument("--frames", type=int, default=None, help="Road Anomaly frames of the precision check "
                                                             "(default all 60; --small 2)")
    ap.add_argument("--eval-frames", type=int, default=None, help="frames of each sml eval row (default 16; --small 2)")
    ap.add_argument("--compile", default="bf16", help="precisions with a torch.compile row, comma-separated, or none")
    ap.add_argument("--compile-batches", type=int, nargs="+", default=None,
                    help="batch sizes of the compile rows (default the largest of --batches; --small all)")
    ap.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor; --small eager)")
    ap.add_argument("--compile-budget-s", type=float, default=200.0, help="seconds of compilation at most")
    ap.add_argument("--budget-s", type=float, default=480.0,
                    help="seconds for the whole run: rows that would not fit are skipped (default 480)")
    ap.add_argument("--no-precision", action="store_true", help="skip the ERFNet fp32/bf16 metric comparison")
    ap.add_argument("--no-eval", action="store_true", help="skip the sml eval rows")
    ap.add_argument("--json", help="write the results here (rewritten after every row)")
    ap.add_argument("--verbose", action="store_true", help="print the traceback of a failed row")
    args = ap.parse_args(argv)
    args.batches = args.batches or ([1, 2] if args.small else [1, 4, 8])
    args.repeats = args.repeats or (1 if args.small else 5)
    args.frames = args.frames or (2 if args.small else 60)
    args.eval_frames = args.eval_frames or (2 if args.small else 16)
    args.compile_batches = args.compile_batches or (args.batches if args.small else [max(args.batches)])
    if args.small and args.compile_backend is None:
        args.compile_backend = "eager"
    args.compile = [] if args.compile.strip().lower() == "none" else [p.strip() for p in args.compile.split(",")]
    bad = [p for p in args.compile if p not in PRECISIONS]
    if bad:
        ap.error(f"--compile {','.join(bad)}: choose among {', '.join(PRECISIONS)} or none")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"bench_gpu: no CUDA device here (torch {torch.__version__}); nothing measured "
              f"(use --device cpu --small to check the code paths)")
        return 0
    size = args.size or ((64, 128) if args.small else (1024, 2048))
    bench = Bench(args, device, size)
    h, w = size
    print(f"bench_gpu: {bench.data['device']}, torch {torch.__version__}, frames {w}x{h}, batches "
          f"{args.batches}, {args.repeats} repeats, budget {args.budget_s:.0f} s (compile {args.compile_budget_s:.0f} s)",
          flush=True)
    precisions = [p for p in PRECISIONS if device.type == "cuda" or p != "fp16"]  # fp16 runs on CUDA only
    if "fp16" not in precisions:
        bench.note("fp16 rows left out: sml runs fp16 on CUDA only")
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        run_all(bench, Path(tmp), precisions)
    show(bench, "done")
    return 0


def run_all(bench: Bench, folder: Path, precisions: list[str]) -> None:
    """The sections, cheapest first; each prints its table."""
    from bench_postprocess import make_stats

    args, h, w = bench.args, *bench.size
    models: dict[str, Any] = {}
    for net in args.networks:
        try:
            models[net] = load_network(net, bench.device, folder, bench)
        except Exception as exc:  # noqa: BLE001
            bench.failed(net, "load", "-", exc)
    stats = make_stats()
    root = None
    try:
        root = eval_data(folder, max(args.eval_frames, 1), h, w, bench)
    except Exception as exc:  # noqa: BLE001
        bench.failed("data", "frames", "-", exc)
    for net, model in models.items():
        forward_rows(bench, model, net, precisions)
    show(bench, "forward passes")
    if root is not None and models:
        import sml.data

        per_frame_rows(bench, next(iter(models.values())), sml.data.open_dataset(f"folder:{root}"), stats, folder)
        show(bench, "per-frame rows")
    if not args.no_precision and bench.left() > 30:
        try:
            small = bench.size if (args.small or args.size) else None
            bench.data["precision"] = precision_table(bench.device, args.frames, small)
            if bench.data["precision"] is not None:
                print(format_precision(bench.data["precision"]), flush=True)
        except Exception as exc:  # noqa: BLE001
            bench.failed("precision", "table", "-", exc)
    elif not args.no_precision:
        bench.note("precision table skipped: budget")
    if not args.no_eval and root is not None:
        for net, model in models.items():
            eval_rows(bench, model, net, root, stats, folder)
        show(bench, "sml eval")
    for net, model in models.items():
        compile_rows(bench, model, net, [p for p in args.compile if p in precisions])
    if args.compile:
        show(bench, "compiled forward passes")


if __name__ == "__main__":
    sys.exit(main())
