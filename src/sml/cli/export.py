"""`sml export smiyc|fishyscapes RUN_DIR OUT`: a run's maps as the benchmark's submission takes them."""
from __future__ import annotations

import argparse

from sml.cli.args import HelpFormatter

EPILOG = """\
examples:
  sml eval ... --data smiyc-anomaly:/data/dataset_AnomalyTrack --save-maps hdf5 --out runs/ra21
  sml export smiyc runs/ra21 ra21.zip --method sml
  sml eval ... --data fishyscapes-laf:/data/fs_laf --save-maps fishyscapes --out runs/fs
  sml export fishyscapes runs/fs fs_submission --method sml

smiyc: the zip holds RUN_DIR/anomaly_p/<method>/<AnomalyTrack-all|ObstacleTrack-all|
LostAndFound-test>/<id>.hdf5, the tree the official tool reads under DIR_OUTPUTS; a
split whose frame list is not the release's is refused.
fishyscapes (runs on fishyscapes-laf or fishyscapes-static): OUT gets DDDD_anomaly.npy
(float32) and DDDD_segmentation.npy (train ids 0..18) at 1024 x 2048, the names the
official validation script sorts by their number: the release's own number where the
frame names start with it, else 0000, 0001, ... in sml's frame order; OUT/frame_ids.json
maps each number to its frame.
Every map is read without pickle and checked (dtype, shape, finite scores) before it
enters the submission. The export is written under a temporary name and renamed when
complete: a refused export leaves nothing. An existing OUT is replaced only with
--overwrite, and only if `sml export` wrote it.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="pack a run's maps as a benchmark submission (SegmentMeIfYouCan zip, Fishyscapes .npy)",
        description="Pack the maps a run wrote (`sml eval --save-maps hdf5|fishyscapes`) as the benchmark's "
                    "submission takes them.",
        epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("benchmark", choices=["smiyc", "fishyscapes"])
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `sml eval --save-maps ... --out`")
    p.add_argument("out", metavar="OUT", help="smiyc: OUT.zip; fishyscapes: output folder")
    p.add_argument("--method", default=None, help="method to export (needed when the run has several)")
    p.add_argument("--folder", action="append", default=None, metavar="NAME",
                   help="smiyc: export only this tool folder (e.g. AnomalyTrack-all); repeatable")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT if it is a previous `sml export` (anything else is never replaced)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sml.protocols.export import FISHYSCAPES_INDEX, export_fishyscapes, export_smiyc

    if args.benchmark == "smiyc":
        counts = export_smiyc(args.run_dir, args.out, method=args.method, folders=args.folder,
                              overwrite=args.overwrite)
        print(f"{args.out}: " + ", ".join(f"{k} {v} frames" for k, v in counts.items()))
    else:
        if args.folder:
            from sml.errors import InputError

            raise InputError("--folder applies to `sml export smiyc` only")
        n = export_fishyscapes(args.run_dir, args.out, method=args.method, overwrite=args.overwrite)
        print(f"{args.out}: {n} frames (DDDD_anomaly.npy, DDDD_segmentation.npy; {FISHYSCAPES_INDEX} names "
              "the frame of each number)")
    return 0
