"""`sml eval`: score a benchmark with SML and the baselines, print and write the metrics."""
from __future__ import annotations

import argparse

from sml.cli.args import (METHODS, HelpFormatter, add_gen_args, add_loading_args, add_model_args, add_resume_args,
                          add_sml_args, add_stats_pairing_arg, data_kinds_help, inference_settings)
from sml.protocols import PROTOCOLS
from sml.scores.registry import DEFAULT_METHODS

EPILOG = """\
examples:
  sml eval --model erfnet --weights erfnet_cityscapes.pth --stats stats.json \\
           --data road-anomaly:/data/RoadAnomaly_jpg --out runs/ra
  # SegmentMeIfYouCan: component metrics and the benchmark's HDF5 files
  sml eval ... --data smiyc-obstacle:/data/dataset_ObstacleTrack --out runs/obs \\
           --components --save-maps hdf5
  # interrupted? the same command with --resume continues where it stopped
  # several processes (results identical to one process):
  torchrun --nproc_per_node=4 -m sml eval ... --out runs/ra

One forward pass per frame is shared by every method. The run directory gets
metrics.json, metrics.csv, curves.json, frames.json (per-frame AP and, when
maps are kept, false-positive area at the pooled 95%-TPR threshold), a copy
of the statistics, diagnostics.json (per predicted class: inlier / anomaly
pixels and their max-logit and SML-score histograms; `sml diagnose DIR`) and
run.json (the run id and every file sml wrote there). DIR must be new, empty or
an earlier sml run: sml never replaces or deletes a file its run.json does not
list, and never writes through a symbolic link inside DIR. --protocol picks whose numbers are
reported (metrics.json and metrics.csv say which). Map formats (--save-maps, comma-separated or repeated):
  hdf5         SegmentMeIfYouCan: OUT/anomaly_p/METHOD/DATASET/ID.hdf5 (float16, key 'value')
  fishyscapes  OUT/fishyscapes/METHOD/ID_anomaly.npy (float32) + ID_segmentation.npy (train ids)
  npy          OUT/npy/METHOD/ID.npy (float32)
  npy16        OUT/maps/METHOD/ID.npy (float16; what `sml report` shows)
  png16        OUT/png16/METHOD/ID.png, 16-bit, each frame scaled min..max -> 0..65535,
               the range stored in the PNG text keys sml_min / sml_max
Scores are "higher = more anomalous" for every method. Every file is written
atomically; a partial state in OUT/.partial/ makes --resume possible (only for
the same data, frame files, network, statistics and settings). The statistics
must be this network's: same class names in the same order, and the network
`sml stats` recorded (else refused; --stats-from-other-network accepts another
network's and metrics.json records it under stats_pairing).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate anomaly scores on a benchmark (AUROC, AP, FPR@95)",
                       description="Score every frame of an anomaly benchmark with SML and the baselines "
                                   "(one forward pass per frame) and report AUROC, AP and FPR@95 "
                                   "(and the SegmentMeIfYouCan component metrics with --components).",
                       epilog=EPILOG + "\n" + data_kinds_help(), formatter_class=HelpFormatter)
    add_model_args(p)
    g = p.add_argument_group("data, methods and output")
    g.add_argument("--data", required=True, metavar="KIND:PATH",
                   help="benchmark, e.g. road-anomaly:PATH, smiyc-anomaly:PATH, smiyc-obstacle:PATH, "
                        "fishyscapes-laf:PATH, fishyscapes-static:PATH, lost-and-found:PATH (every kind: below)")
    g.add_argument("--split", default=None, help="split, for kinds that have splits")
    g.add_argument("--stats", metavar="stats.json", default=None,
                   help="class statistics from `sml stats` (needed by method sml); the reference "
                        "code's cityscapes_mean.npy also works with --stats-var")
    g.add_argument("--stats-var", metavar="VAR.npy", default=None,
                   help="the reference code's variance file, when --stats is its mean .npy")
    add_stats_pairing_arg(g)
    g.add_argument("--method", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated methods among {', '.join(METHODS)}")
    g.add_argument("--out", required=True, metavar="DIR", help="run directory to write")
    g.add_argument("--overwrite", action="store_true",
                   help="replace a finished run in --out (first the files its run.json lists are removed, "
                        "nothing else)")
    g.add_argument("--protocol", choices=list(PROTOCOLS), default="exact",
                   help="whose numbers: exact (sml's, = scikit-learn), sml-reference, fishyscapes (FPR@95 at "
                        "the first ROC point with TPR >= 95%%), smiyc (the SegmentMeIfYouCan tool's binned "
                        "metrics on float16 maps); see docs/protocols.md")
    g.add_argument("--no-diagnostics", action="store_true",
                   help="skip the per-class diagnostics (DIR/diagnostics.json, read by `sml diagnose`)")
    g.add_argument("--components", action="store_true",
                   help="also compute the SegmentMeIfYouCan component metrics (sIoU, PPV, mean F1)")
    g.add_argument("--track", choices=("anomaly", "obstacle"), default=None,
                   help="component-metric size limits (default: obstacle for smiyc-obstacle, else anomaly)")
    g.add_argument("--save-maps", action="append", default=[], metavar="FORMAT",
                   help="write per-frame maps: hdf5, fishyscapes, npy, npy16, png16")
    g.add_argument("--report", action="store_true",
                   help="keep float16 maps in DIR/maps and write the HTML report (sml report)")
    g.add_argument("--frame-ap", action="store_true",
                   help="record each frame's own AP in frames.json (on with --report, whose gallery sorts by "
                        "it; costs one sort of each frame's scores per method)")
    add_resume_args(g, "DIR/.partial/")
    add_loading_args(g)
    g.add_argument("--allow-subset", action="store_true",
                   help="accept fewer frames than the benchmark's release (results not comparable)")
    g.add_argument("--label-mapping", default=None, metavar="MAP",
                   help="folder data sets: raw mask value -> 0 inlier / 1 anomaly / 255 void, "
                        "e.g. '0:0,1:1,*:255' ('*' = every other value)")
    g.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use only the first N frames (implies --allow-subset)")
    add_sml_args(p)
    add_gen_args(p)
    p.set_defaults(func=run)


def load_stats(path: str | None, var_path: str | None = None):  # noqa: ANN201 - ClassStatistics
    """``--stats`` as a ClassStatistics: sml's JSON, or the reference code's mean/var .npy pair."""
    from pathlib import Path

    from sml.errors import InputError
    from sml.stats import ClassStatistics

    if path is None:
        if var_path is not None:
            raise InputError("--stats-var is the variance half of the reference code's .npy statistics: give "
                             "their mean file with --stats cityscapes_mean.npy too")
        return None
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--stats {p}: no such file; compute it with `sml stats ... -o {p}`")
    if p.suffix.lower() == ".npy":
        if var_path is None:
            raise InputError(f"--stats {p} is a reference .npy mean file; also give its variance file "
                             f"with --stats-var cityscapes_var.npy")
        return ClassStatistics.from_reference_npy(p, var_path)
    if var_path is not None:
        raise InputError(f"--stats-var {var_path} goes only with the reference code's mean .npy; {p} is sml's "
                         f"JSON statistics, which hold the variance already: leave --stats-var out")
    return ClassStatistics.load(p)


def run(args: argparse.Namespace) -> int:
    from sml.cli.args import loading_settings, method_settings, parse_methods, sml_settings
    from sml.pipelines import common
    from sml.pipelines.evaluate import EvalConfig, evaluate
    from sml.utils.tables import print_metrics
    from sml.utils import atomic, distributed, run_folder

    # every option first: nothing is loaded before they are all known to be usable
    methods = parse_methods(args.method)
    config = EvalConfig(methods=methods, sml_settings=sml_settings(args),
                        method_settings=method_settings(args, methods), components=args.components,
                        save_maps=args.save_maps, report=args.report, limit=args.limit, resume=args.resume,
                        save_every=args.save_every, save_interval=args.save_interval, track=args.track,
                        frame_ap=True if args.frame_ap else None, overwrite=args.overwrite,
                        protocol=args.protocol, diagnostics=not args.no_diagnostics,
                        stats_from_other_network=args.stats_from_other_network, **loading_settings(args))
    inference = inference_settings(args)   # device, precision: checked once, before anything opens
    stats = load_stats(args.stats, args.stats_var)
    atomic.check_writable(args.out)  # before the model loads, not at the first file written
    # a folder that is not sml's, a live run in it, a finished run without --overwrite: refused now
    run_folder.eval_run(args.out, resume=args.resume, overwrite=args.overwrite).check()
    distributed.init_from_env(args.device)
    dataset = common.open_data(args.data, split=args.split,
                               allow_subset=args.allow_subset or args.limit is not None,
                               mapping=args.label_mapping)
    model = common.load_model(args.model, args.weights, device=args.device, trust=args.trust_checkpoint,
                              settings=inference)
    meta = {"model": args.model, "weights": str(args.weights), "data": args.data, "split": args.split,
            "inference": model.describe(),
            "stats": str(args.stats), "limit": args.limit}
    if args.label_mapping is not None:
        meta["label_mapping"] = args.label_mapping   # `sml report` maps the raw masks the same way
    result = evaluate(model, dataset, args.out, config, stats=stats, stats_path=args.stats, meta=meta)
    if distributed.is_main():
        print_metrics(result.metrics, result.out)
        if args.report:
            from sml.report import build_report

            print(f"report: {build_report(result.out)}")
    distributed.barrier()
    return 0
