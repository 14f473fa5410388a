"""`sml demo`: the whole SML pipeline on generated street scenes (no download, no data, CPU, a few minutes)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from sml.demo.run import DEFAULT_ITERATIONS

    p = sub.add_parser(
        "demo", help="generate street scenes, train a small network, compute statistics, evaluate (no download)",
        description=__doc__ + "\n\nGenerates a synthetic Cityscapes-layout data set and an anomaly set under "
        f"OUT/data, trains a small network on the CPU for {DEFAULT_ITERATIONS} iterations (about 90 s on one "
        "core; OUT/train), computes class statistics (OUT/stats.json), evaluates msp, max_logit, entropy, "
        "energy and sml (OUT/eval), prints the table and what the run's numbers show (OUT/explanation.txt). "
        "Seeded: the same seed gives the same table on the same machine.")
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--iterations", type=int, default=None,
                   help=f"training iterations (default: {DEFAULT_ITERATIONS}, the calibrated setting)")
    p.add_argument("--seconds", type=float, default=None,
                   help="instead of --iterations: train as many iterations as fit in this many seconds on "
                        "this machine (fewer than the default give a weaker network and a weaker table)")
    p.add_argument("--report", action="store_true", help="also write the HTML report (OUT/eval/report/index.html)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated scenes and of training")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sml.demo import run_demo
    from sml.errors import InputError

    if args.seconds is not None and args.iterations is not None:
        raise InputError("give --iterations or --seconds, not both")
    run_demo(args.out, seconds=args.seconds, report=args.report, device=args.device,
             iterations=args.iterations, seed=args.seed)
    return 0
