"""`sml stats`: per-class max-logit statistics of a network over a training split."""
from __future__ import annotations

import argparse
from pathlib import Path

from sml.cli.args import HelpFormatter, add_loading_args, add_model_args, add_resume_args, inference_settings
from sml.utils.tables import print_stats

EPILOG = """\
examples:
  sml stats --model erfnet --weights erfnet_cityscapes.pth \\
            --data cityscapes:/data/cityscapes --split train -o stats.json
  # interrupted? continue where it stopped (same arguments plus --resume):
  sml stats ... -o stats.json --resume
  # several processes (each takes every N-th frame; result identical to one process):
  torchrun --nproc_per_node=4 -m sml stats --model erfnet ... -o stats.json

The statistics are the count, mean and unbiased variance of the max logit over
all pixels predicted as each class (spec section 2). They are what `sml eval
--method sml` and `sml predict` need (--stats stats.json). Partial progress is
saved to OUT.partial/ every --save-interval seconds (or --save-every frames);
it is removed once OUT exists. An existing OUT is replaced only when it is a
statistics file of sml ("format": "sml-class-statistics/...").
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stats", help="per-class max-logit statistics over a training split",
                       description="Compute per-class max-logit statistics (count, mean, std) of a "
                                   "segmentation network over every image of a split.",
                       epilog=EPILOG, formatter_class=HelpFormatter)
    add_model_args(p)
    g = p.add_argument_group("data and output")
    g.add_argument("--data", required=True, metavar="KIND:PATH",
                   help="data set, e.g. cityscapes:/data/cityscapes (labels are not needed)")
    g.add_argument("--split", default=None, help="split to use (default: the kind's own, train for cityscapes)")
    g.add_argument("-o", "--out", "--output", dest="out", required=True, metavar="stats.json",
                   help="where to write the statistics (JSON)")
    g.add_argument("--limit", type=int, default=None, metavar="N", help="use only the first N frames")
    g.add_argument("--valid-only", action="store_true",
                   help="count only pixels whose label is not the ignore label (needs labels)")
    g.add_argument("--allow-subset", action="store_true",
                   help="accept a data set with fewer frames than its release")
    add_resume_args(g, "OUT.partial/")
    add_loading_args(g)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sml.cli.args import loading_settings
    from sml.errors import InputError
    from sml.pipelines import common
    from sml.pipelines.stats import compute_statistics
    from sml.utils import atomic, distributed, run_folder

    out = Path(args.out)
    if out.suffix.lower() != ".json":
        raise InputError(f"-o {out}: the statistics are written as JSON; give a path ending in .json")
    inference = inference_settings(args)   # device, precision: checked once, before anything opens
    loading = loading_settings(args)
    atomic.check_writable(out, file=True)  # before the model loads
    run_folder.check_replace(out, "-o")    # never over a file that is not sml's statistics
    run_folder.check_state_folder(out.with_name(out.name + ".partial"))
    distributed.init_from_env(args.device)
    dataset = common.open_data(args.data, split=args.split, allow_subset=args.allow_subset,
                               labels_required=True if args.valid_only else False)
    model = common.load_model(args.model, args.weights, device=args.device, trust=args.trust_checkpoint,
                              settings=inference)
    meta = {"model": args.model, "weights": str(args.weights), "data": args.data, "split": args.split,
            "inference": model.describe(),
            "limit": args.limit}
    data = args.data if args.split is None else f"{args.data} (split {args.split})"
    result = compute_statistics(model, dataset, valid_only=args.valid_only, limit=args.limit,
                                state_dir=out.with_name(out.name + ".partial"), resume=args.resume,
                                save_every=args.save_every, save_interval=args.save_interval, meta=meta,
                                out=out, identity={"data": data, "inference": model.describe()}, **loading)
    if distributed.is_main():
        print_stats(result.stats, result.frames, out)
    return 0
