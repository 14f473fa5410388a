"""`sml export smiyc|fishyscapes RUN_DIR OUT`: a run's maps as the benchmark's submission takes them."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="pack a run's maps as a benchmark submission (SegmentMeIfYouCan zip, Fishyscapes .npy)",
        description="smiyc: zip RUN_DIR/anomaly_p/<method>/<AnomalyTrack-all|ObstacleTrack-all|LostAndFound-test>/"
                    "<id>.hdf5 (the tree the official tool reads under DIR_OUTPUTS), refusing a split whose frame "
                    "list is not the release's. fishyscapes: write <id>_anomaly.npy (float32) and "
                    "<id>_segmentation.npy (train ids) at 1024 x 2048 into OUT.")
    p.add_argument("benchmark", choices=["smiyc", "fishyscapes"])
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `sml eval --save-maps ... --out`")
    p.add_argument("out", metavar="OUT", help="smiyc: OUT.zip; fishyscapes: output folder")
    p.add_argument("--method", default=None, help="method to export (needed when the run has several)")
    p.add_argument("--folder", action="append", default=None, metavar="NAME",
                   help="smiyc: export only this tool folder (e.g. AnomalyTrack-all); repeatable")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sml.protocols.export import export_fishyscapes, export_smiyc

    if args.benchmark == "smiyc":
        counts = export_smiyc(args.run_dir, args.out, method=args.method, folders=args.folder)
        print(f"{args.out}: " + ", ".join(f"{k} {v} frames" for k, v in counts.items()))
    else:
        if args.folder:
            from sml.errors import InputError

            raise InputError("--folder applies to `sml export smiyc` only")
        n = export_fishyscapes(args.run_dir, args.out, method=args.method)
        print(f"{args.out}: {n} frames (<id>_anomaly.npy, <id>_segmentation.npy)")
    return 0
