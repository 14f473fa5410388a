"""`sml demo`: the whole SML pipeline on generated street scenes, with no download and no data.

1. Generate a small Cityscapes-layout data set of synthetic streets (train +
   val) and an anomaly set (unseen objects on the road, 0/1/255 labels).
2. Train the small demo network with ``sml train`` (the published recipe's
   data pipeline, shortened to a time budget) on the CPU.
3. Compute the per-class max-logit statistics on the training frames
   (``sml stats``) and evaluate msp, max_logit, entropy, energy and sml on the
   anomaly set (``sml eval``), print the table, optionally write the report.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

from sml.demo.scenes import write_anomaly_set, write_cityscapes
from sml.utils import atomic

METHODS = ["msp", "max_logit", "entropy", "energy", "sml"]
WIDTH, HEIGHT = 320, 160


def generate_data(out: Path, train_frames: int = 160, val_frames: int = 8, anomaly_frames: int = 30,
                  seed: int = 0) -> tuple[Path, Path]:
    """Write (or reuse) the synthetic Cityscapes set and the anomaly set under ``out/data``."""
    data = out / "data"
    marker = data / "complete.json"
    want = {"train": train_frames, "val": val_frames, "anomaly": anomaly_frames, "seed": seed,
            "size": [WIDTH, HEIGHT], "version": 1}
    if marker.is_file():
        import json
        if json.loads(marker.read_text()) == want:
            return data / "cityscapes", data / "anomaly"
    write_cityscapes(data / "cityscapes", {"train": train_frames, "val": val_frames}, seed=seed,
                     width=WIDTH, height=HEIGHT)
    write_anomaly_set(data / "anomaly", anomaly_frames, seed=seed + 1, width=WIDTH, height=HEIGHT)
    atomic.write_json(marker, want)
    return data / "cityscapes", data / "anomaly"


def demo_overrides(root: Path, out_dir: Path, iterations: int, device: str) -> list[str]:
    """The recipe, adapted to 320x160 frames and a one-minute CPU budget."""
    return [
        "model.arch=demo_net", "model.num_classes=19", "model.normalize=imagenet",
        f"data.root={root}", "data.batch_size=8", "data.num_workers=0", "data.crop_size=[128,128]",
        "data.scale_min=0.75", "data.scale_max=1.5", "data.class_uniform.tile=160",
        f"data.class_uniform.cache={out_dir}", "optim.lr=0.02", f"optim.iterations={iterations}",
        "optim.aux_weight=0.4", f"train.out_dir={out_dir}", f"train.device={device}", "train.amp=false",
        f"train.checkpoint_every={max(1, iterations // 4)}", f"train.val_every={iterations}",
        f"train.log_every={max(1, iterations // 20)}",
    ]


def _iterations_for(seconds: float, device: str) -> int:
    """How many iterations fit in ``seconds``: time a few steps of the demo network on a demo-sized batch."""
    from sml.demo.net import demo_net

    torch.manual_seed(0)
    net = demo_net(19).to(device).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(8, 3, 128, 128, device=device)
    y = torch.randint(0, 19, (8, 128, 128), device=device)
    times = []
    for _ in range(4):
        t = time.perf_counter()
        out, aux = net(x)
        loss = torch.nn.functional.cross_entropy(out, y) + 0.4 * aux.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    per_it = sorted(times[1:])[1] * 1.25   # median of the warm steps, + data loading
    return int(max(100, min(4000, seconds / per_it)))


def run_demo(out: str | Path = "runs/demo", seconds: float = 60.0, report: bool = False,
             device: str = "cpu", iterations: int | None = None, seed: int = 0,
             stats_frames: int | None = 80, quiet_stats: bool = True, train_frames: int = 160,
             val_frames: int = 8, anomaly_frames: int = 30) -> dict[str, Any]:
    """Generate data, train, compute statistics, evaluate; returns the metrics dict (also written to ``out``)."""
    from sml.demo.net import register
    from sml.pipelines.evaluate import EvalConfig, evaluate, print_table
    from sml.pipelines.stats import compute_statistics, print_report, save_statistics
    from sml.data import open_dataset
    from sml.train import load_config, train
    import sml.models

    out = Path(out)
    t0 = time.time()
    say = lambda msg: print(f"[demo {time.time() - t0:5.0f}s] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    say(f"generating synthetic street scenes in {out / 'data'} (Cityscapes layout + anomaly set)")
    cs_root, anomaly_root = generate_data(out, train_frames, val_frames, anomaly_frames, seed=seed)

    register()
    n = iterations or _iterations_for(seconds, device)
    say(f"training the demo network for {n} iterations (~{seconds:.0f} s) with the SML recipe's pipeline")
    cfg = load_config("deeplabv3plus_r101_os8_cityscapes", demo_overrides(cs_root, out / "train", n, device))
    summary = train(cfg, resume=True)
    say(f"trained: loss {summary['loss']:.3f}, val mIoU {100 * (summary['val_miou'] or 0):.1f}% "
        f"(7 classes present of 19)")

    model = sml.models.load("demo_net", weights=out / "train" / "last.pth", device=device)
    say("computing per-class max-logit statistics on the training frames (sml stats)")
    train_set = open_dataset(f"cityscapes:{cs_root}", split="train")
    stats_run = compute_statistics(model, train_set, limit=stats_frames, show_progress=False)
    stats_path = out / "stats.json"
    save_statistics(stats_run.stats, stats_path, model="demo_net", data=f"cityscapes:{cs_root}")
    if not quiet_stats:
        print_report(stats_run.stats, stats_run.frames, stats_path, file=sys.stderr)

    say("evaluating msp, max_logit, entropy, energy and sml on the anomaly set (sml eval)")
    anomaly_set = open_dataset(f"folder:{anomaly_root}")
    run_dir = out / "eval"
    result = evaluate(model, anomaly_set, run_dir, EvalConfig(methods=METHODS, report=report),
                      stats=stats_run.stats, stats_path=stats_path, show_progress=False,
                      meta={"model": "demo_net"})
    print_table(result.metrics, run_dir)
    if report:
        from sml.report import build_report
        index = build_report(run_dir, show_progress=False)
        print(f"report: {index}")
    say("done")
    return result.metrics
