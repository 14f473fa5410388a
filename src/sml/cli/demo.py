"""`sml demo`: the whole SML pipeline on generated street scenes (no download, no data, CPU, a few minutes)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="generate street scenes, train a small network, compute statistics, evaluate (no download)",
        description=__doc__ + "\n\nGenerates a synthetic Cityscapes-layout data set and an anomaly set under "
        "OUT/data, trains a small network for about --seconds on the CPU (OUT/train), computes class statistics "
        "(OUT/stats.json), evaluates msp, max_logit, entropy, energy and sml (OUT/eval) and prints the table.")
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--seconds", type=float, default=60.0, help="training time budget in seconds (default: 60)")
    p.add_argument("--iterations", type=int, default=None, help="train exactly this many iterations instead")
    p.add_argument("--report", action="store_true", help="also write the HTML report (OUT/eval/report/index.html)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated scenes and of training")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sml.demo import run_demo
    from sml.errors import InputError

    if args.seconds <= 0:
        raise InputError(f"--seconds must be positive, got {args.seconds}")
    run_demo(args.out, seconds=args.seconds, report=args.report, device=args.device,
             iterations=args.iterations, seed=args.seed)
    return 0
