"""`sml demo`: the whole SML pipeline on generated street scenes, with no download and no data.

1. Generate a small Cityscapes-layout data set of synthetic streets (train +
   val, 256x128) and an anomaly set (unseen objects on the road, 0/1/255 labels).
2. Train the small demo network with ``sml train`` (the published recipe's
   data pipeline, shortened to a fixed number of iterations) on the CPU.
3. Compute the per-class max-logit statistics on the training frames
   (``sml stats``) and evaluate msp, max_logit, entropy, energy and sml on the
   anomaly set (``sml eval``), print the table and what the run's own numbers
   say about why SML helps, optionally write the report.

Everything is seeded: the same seed gives the same table on the same machine.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sml.demo.scenes import write_anomaly_set, write_cityscapes
from sml.errors import InputError
from sml.utils import atomic
from sml.utils.progress import write_message
from sml.utils.run_folder import RunFolder

METHODS = ["msp", "max_logit", "entropy", "energy", "sml"]
WIDTH, HEIGHT = 256, 128
#: the calibrated default: about 90 s of training on one CPU thread (the whole demo: under 2 minutes)
DEFAULT_ITERATIONS = 1000
MIN_ITERATIONS = 20
#: torch CPU threads for the whole demo: one thread makes the table independent of the core count, and on a
#: shared 2-core machine two threads were several times slower (they wait on each other) for this small network
THREADS = 1


def generate_data(out: Path, train_frames: int = 160, val_frames: int = 8, anomaly_frames: int = 30,
                  seed: int = 0) -> tuple[Path, Path]:
    """Write (or reuse) the synthetic Cityscapes set and the anomaly set under ``out/data``."""
    data = out / "data"
    marker = data / "complete.json"
    want = {"train": train_frames, "val": val_frames, "anomaly": anomaly_frames, "seed": seed,
            "size": [WIDTH, HEIGHT], "version": 2}
    if marker.is_file() and json.loads(marker.read_text()) == want:
        return data / "cityscapes", data / "anomaly"
    write_cityscapes(data / "cityscapes", {"train": train_frames, "val": val_frames}, seed=seed,
                     width=WIDTH, height=HEIGHT)
    write_anomaly_set(data / "anomaly", anomaly_frames, seed=seed + 1, width=WIDTH, height=HEIGHT)
    atomic.write_json(marker, want)
    return data / "cityscapes", data / "anomaly"


def demo_overrides(root: Path, out_dir: Path, iterations: int, device: str, seed: int = 0) -> list[str]:
    """The recipe, adapted to 256x128 frames and about 90 s of single-thread CPU training."""
    return [
        "model.arch=demo_net", "model.num_classes=19", "model.normalize=imagenet",
        f"data.root={root}", "data.batch_size=8", "data.num_workers=0", "data.crop_size=[128,128]",
        "data.scale_min=0.75", "data.scale_max=1.5", "data.class_uniform.tile=256",
        f"data.class_uniform.cache={out_dir}", "optim.lr=0.03", f"optim.iterations={iterations}",
        "optim.aux_weight=0.4", f"train.out_dir={out_dir}", f"train.device={device}", "train.amp=false",
        f"train.seed={seed}", f"train.threads={THREADS}", f"train.checkpoint_every={max(1, iterations // 4)}",
        f"train.val_every={iterations}", f"train.log_every={max(1, iterations // 20)}",
    ]


def iterations_for(seconds: float, device: str) -> int:
    """How many iterations fit in ``seconds`` on this machine (times a few steps on a demo-sized batch)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)   # time the steps the way training will run them
    try:
        return _iterations_for(seconds, device)
    finally:
        torch.set_num_threads(threads)


def _iterations_for(seconds: float, device: str) -> int:
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
    return int(max(MIN_ITERATIONS, min(20 * DEFAULT_ITERATIONS, seconds / per_it)))


def _forget_stale_training(out: Path, cfg: Any) -> None:
    """Resume an interrupted demo training only if it was for exactly this recipe and these data."""
    folder = out / "train"
    saved, data = folder / "config.yaml", out / "data" / "complete.json"
    if not (folder / "last.pth").is_file():
        return
    same = (saved.is_file() and saved.read_text() == cfg.to_yaml() and data.is_file()
            and data.stat().st_mtime <= (folder / "last.pth").stat().st_mtime)
    if not same:
        with RunFolder(folder, "train", clear=True):  # the files its run.json lists, nothing else
            pass


# ---------------------------------------------------------------- what the run shows
@dataclass
class Breakdown:
    """Max-logit statistics on the anomaly frames, split by pixel kind, per predicted class."""

    anomaly: Any                       # ClassStatistics of anomaly pixels
    interior: Any                      # inlier pixels away from prediction boundaries
    boundary: Any                      # inlier pixels on a prediction boundary (3x3 neighbourhood)
    ablation: dict[str, dict[str, Any]] = field(default_factory=dict)   # SML parts: {name: metrics}


#: SML with parts switched off, to show what each part contributes
ABLATION = {"standardized max logit": {"suppression": False, "smoothing": False},
            "+ boundary suppression": {"smoothing": False}}


def breakdown(model: Any, dataset: Any, stats: Any = None) -> Breakdown:
    """One forward pass over ``dataset``: where anomaly and inlier max logits sit, class by class;
    with ``stats``, also the metrics of SML with parts switched off (:data:`ABLATION`)."""
    from sml.metrics import AnomalyMetrics
    from sml.pipelines import common
    from sml.scores import build_scorer
    from sml.stats import ClassStatistics

    def new() -> ClassStatistics:
        return ClassStatistics(common.num_classes(model), common.class_names(model))

    out = Breakdown(new(), new(), new())
    parts = {k: (build_scorer("sml", stats=stats, **kw), AnomalyMetrics()) for k, kw in ABLATION.items()} \
        if stats is not None else {}
    for frame in dataset.frames:
        sample = dataset.load(frame)
        labels = torch.from_numpy(np.asarray(sample.labels))
        logits = common.forward(model, sample.image, labels.shape)[0].float()
        max_logit, pred = logits.max(0)
        # a pixel is on a boundary when its 3x3 neighbourhood holds another predicted class
        p = torch.nn.functional.pad(pred[None, None].float(), (1, 1, 1, 1), mode="replicate")
        hi = torch.nn.functional.max_pool2d(p, 3, 1)[0, 0]
        lo = -torch.nn.functional.max_pool2d(-p, 3, 1)[0, 0]
        edge = hi != lo
        out.anomaly.update_from_predictions(pred, max_logit, labels == 1)
        out.interior.update_from_predictions(pred, max_logit, (labels == 0) & ~edge)
        out.boundary.update_from_predictions(pred, max_logit, (labels == 0) & edge)
        for scorer, metric in parts.values():
            metric.update(scorer(logits[None]), labels[None].numpy())
    out.ablation = {k: metric.compute() for k, (_, metric) in parts.items()}
    return out


def _mean(s: Any) -> float:
    """Pooled mean of the max logit over all classes of a ClassStatistics."""
    n, m = np.asarray(s.count, float), np.nan_to_num(np.asarray(s.mean, float))
    return float((n * m).sum() / n.sum()) if n.sum() > 0 else math.nan


@dataclass
class _Classes:
    """The training statistics' classes as the explanation uses them: names, mean and std of the max logit,
    and the classes with enough pixels (``present``)."""

    names: list[str]
    mu: np.ndarray
    sd: np.ndarray
    present: np.ndarray


_LABEL = {"auroc": "AUROC", "ap": "AP", "fpr95": "FPR@95"}


def explain(metrics: dict[str, Any], stats: Any, bd: Breakdown, min_share: float = 0.002) -> list[str]:
    """Sentences on what this run's numbers show, each one printed only when it is true for the run."""
    n, mu, sd = np.asarray(stats.count, float), np.asarray(stats.mean, float), np.asarray(stats.std, float)
    present = np.flatnonzero((n / max(n.sum(), 1) >= min_share) & np.asarray(stats.usable))
    if present.size < 2:
        return []
    cl = _Classes(list(stats.class_names), mu, sd, present)
    order = present[np.argsort(-mu[present])]
    lines = ["On the training frames the max logit depends on the predicted class: "
             + ", ".join(f"{cl.names[c]} {mu[c]:.1f}±{sd[c]:.1f}" for c in order) + "."]
    if np.asarray(bd.anomaly.count, float).sum() == 0:
        return lines
    v = _mean(bd.anomaly)
    return lines + _anomaly_lines(metrics, cl, bd, v) + _boundary_lines(bd, v) + _result_lines(metrics, bd)


def _anomaly_lines(metrics: dict[str, Any], cl: _Classes, bd: Breakdown, v: float) -> list[str]:
    """Which classes the anomalies are taken for, and whether one max-logit threshold can separate them."""
    an = bd.anomaly
    an_n = np.asarray(an.count, float)
    share = an_n / an_n.sum()
    top = [c for c in np.argsort(-share) if share[c] >= 0.1 and c in cl.present]
    if not top:
        return []
    names, mu = cl.names, cl.mu
    z = [(float(an.mean[c]) - mu[c]) / cl.sd[c] for c in top]
    taken = ", ".join(f"{names[c]} {100 * share[c]:.0f}% (mean {float(an.mean[c]):.1f}, z {zc:+.1f})"
                      for c, zc in zip(top, z))
    lines = [f"Anomaly pixels average a max logit of {v:.1f}; they are taken for {taken}."]
    low_for_class = [names[c] for c, zc in zip(top, z) if zc < 0]
    below = [c for c in cl.present if mu[c] < v]
    if low_for_class and below:
        text = (f"That is low for {_join(low_for_class)}, yet higher than the typical max logit of whole "
                f"inlier classes ({', '.join(names[c] for c in below)}): one threshold on the max logit "
                f"cannot separate them")
        std_only = bd.ablation.get("standardized max logit", {}).get("auroc")
        ml_auroc = metrics["methods"].get("max_logit", {}).get("auroc")
        if _finite(std_only) and _finite(ml_auroc) and std_only > ml_auroc:
            text += (f"; standardizing per predicted class alone lifts the AUROC from {100 * ml_auroc:.1f}% "
                     f"to {100 * std_only:.1f}%")
        lines.append(text + ".")
    return lines


def _boundary_lines(bd: Breakdown, v: float) -> list[str]:
    """Inlier pixels on class boundaries, when their max logit is lower than inside regions."""
    b, i = _mean(bd.boundary), _mean(bd.interior)
    nb, ni = float(np.sum(bd.boundary.count)), float(np.sum(bd.interior.count))
    if not (b < i and nb > 0):
        return []
    return [f"Inlier pixels on class boundaries ({100 * nb / (nb + ni):.0f}% of the inlier pixels) average "
            f"{b:.1f} ({'below' if b < v else 'above'} the anomalies' {v:.1f}), against {i:.1f} "
            f"inside regions: these are the false alarms SML's boundary suppression targets, while its "
            f"dilated smoothing fills in the anomalies."]


def _result_lines(metrics: dict[str, Any], bd: Breakdown) -> list[str]:
    """SML against max_logit: the metrics it improves, what each part adds, the metrics it does not improve."""
    m = metrics["methods"]
    if "sml" not in m or "max_logit" not in m:
        return []
    s, ml = m["sml"], m["max_logit"]
    better = [k for k, lo in (("auroc", False), ("ap", False), ("fpr95", True))
              if _finite(s.get(k)) and _finite(ml.get(k)) and ((s[k] < ml[k]) if lo else (s[k] > ml[k]))]
    lines = []
    if better:
        nums = "; ".join(f"{_LABEL[k]} {100 * ml[k]:.1f}% -> {100 * s[k]:.1f}%" for k in better)
        lines.append(f"Result: SML improves on max_logit in {', '.join(_LABEL[k] for k in better)} ({nums}).")
    lines += _ablation_lines(ml, s, bd)
    worse = [k for k in _LABEL if k not in better and _finite(s.get(k)) and _finite(ml.get(k))]
    if worse:
        lines.append(f"Not improved in this run: {', '.join(_LABEL[k] for k in worse)}.")
    return lines


def _ablation_lines(ml: dict[str, Any], s: dict[str, Any], bd: Breakdown) -> list[str]:
    """AUROC (and AP) from max_logit through SML's parts to full SML, when the ablation was measured."""
    steps = [("max_logit", ml)] + list(bd.ablation.items()) + [("full SML", s)]
    aurocs = [r.get("auroc") for _, r in steps]
    if not (len(steps) > 2 and all(_finite(a) for a in aurocs)):
        return []
    gains = all(b > a for a, b in zip(aurocs, aurocs[1:]))
    return [("Each part of SML adds to the AUROC: " if gains else "AUROC by part of SML: ")
            + " -> ".join(f"{k} {100 * float(a):.1f}%" for (k, _), a in zip(steps, aurocs))
            + " (AP " + " -> ".join(_pct1(r.get("ap")) for _, r in steps) + ")."]


def _pct1(v: Any) -> str:
    return f"{100 * float(v):.1f}%" if _finite(v) else "n/a"


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _finite(v: Any) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


# ---------------------------------------------------------------- the job
def run_demo(out: str | Path = "runs/demo", seconds: float | None = None, report: bool = False,
             device: str = "cpu", iterations: int | None = None, seed: int = 0,
             stats_frames: int | None = None, quiet_stats: bool = True, train_frames: int = 160,
             val_frames: int = 8, anomaly_frames: int = 30, explain_run: bool = True) -> dict[str, Any]:
    """Generate data, train, compute statistics, evaluate; returns the metrics dict (also written to ``out``).

    Training runs ``iterations`` steps (default :data:`DEFAULT_ITERATIONS`), or as many as fit in
    ``seconds`` on this machine when that is given instead.
    """
    if iterations is not None and iterations < 1:
        raise InputError(f"--iterations must be a positive number, got {iterations}")
    if seconds is not None and not seconds > 0:
        raise InputError(f"--seconds must be positive, got {seconds}")
    atomic.check_writable(out)  # before minutes of work, not at the first file written
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        # a folder that is not a demo's is refused; OUT/train and OUT/eval are run folders of their own
        with RunFolder(out, "demo"):
            return _run(Path(out), seconds, report, device, iterations, seed, stats_frames, quiet_stats,
                        train_frames, val_frames, anomaly_frames, explain_run)
    finally:
        torch.set_num_threads(threads)


def _run(out: Path, seconds: float | None, report: bool, device: str, iterations: int | None, seed: int,
         stats_frames: int | None, quiet_stats: bool, train_frames: int, val_frames: int, anomaly_frames: int,
         explain_run: bool) -> dict[str, Any]:
    from sml.data import open_dataset
    from sml.demo.net import register
    from sml.pipelines.evaluate import EvalConfig, evaluate
    from sml.pipelines.stats import compute_statistics, save_statistics
    from sml.utils.tables import print_metrics, print_stats
    from sml.train import load_config, train
    import sml.models

    t0 = time.time()
    say = lambda msg: write_message(f"[demo {time.time() - t0:5.0f}s] {msg}")  # noqa: E731
    say(f"generating synthetic street scenes in {out / 'data'} (Cityscapes layout + anomaly set)")
    cs_root, anomaly_root = generate_data(out, train_frames, val_frames, anomaly_frames, seed=seed)

    register()
    if iterations is None:
        iterations = iterations_for(seconds, device) if seconds is not None else DEFAULT_ITERATIONS
    say(f"training the demo network for {iterations} iterations with the SML recipe's pipeline")
    cfg = load_config("deeplabv3plus_r101_os8_cityscapes",
                      demo_overrides(cs_root, out / "train", iterations, device, seed))
    _forget_stale_training(out, cfg)
    summary = train(cfg, resume=True)
    say(f"trained: loss {summary['loss']:.3f}, mIoU {100 * (summary['val_miou'] or 0):.1f}% on the "
        f"{val_frames} validation frames (thin poles and small signs are the hard classes)")

    model = sml.models.load("demo_net", weights=out / "train" / "last.pth", device=device)
    say("computing per-class max-logit statistics on the training frames (sml stats)")
    train_set = open_dataset(f"cityscapes:{cs_root}", split="train")
    stats_run = compute_statistics(model, train_set, limit=stats_frames, show_progress=False)
    stats_path = out / "stats.json"
    save_statistics(stats_run.stats, stats_path, data=f"cityscapes:{cs_root}")
    if not quiet_stats:
        print_stats(stats_run.stats, stats_run.frames, stats_path, file=sys.stderr)

    say("evaluating msp, max_logit, entropy, energy and sml on the anomaly set (sml eval)")
    anomaly_set = open_dataset(f"folder:{anomaly_root}")
    run_dir = out / "eval"
    result = evaluate(model, anomaly_set, run_dir, EvalConfig(methods=METHODS, report=report, overwrite=True),
                      stats=stats_run.stats, stats_path=stats_path, show_progress=False,
                      meta={"model": "demo_net"})
    print_metrics(result.metrics, run_dir)
    if explain_run:
        lines = explain(result.metrics, stats_run.stats, breakdown(model, anomaly_set, stats_run.stats))
        if lines:
            text = "\n".join(lines)
            print("\nWhat this run shows:\n" + "\n".join(f"- {ln}" for ln in lines))
            atomic.write_text(out / "explanation.txt", text + "\n")
    if report:
        from sml.report import build_report
        say("writing the report (sml report)")
        index = build_report(run_dir, show_progress=False)
        print(f"report: {index}")
    say("done")
    return result.metrics
