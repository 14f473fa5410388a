"""`sml report RUN_DIR`: the static HTML report of a run directory written by `sml eval`."""
from __future__ import annotations

import argparse

from sml.protocols import PROTOCOLS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="write RUN_DIR/report/index.html: metrics, curves, class statistics, frame gallery",
        description="Write a self-contained static HTML report (RUN_DIR/report/index.html, opens offline "
                    "from the file system) of a run directory written by `sml eval --out RUN_DIR`: the "
                    "metrics table with its conventions, ROC / PR curves (PNG + SVG), the per-class "
                    "diagnostics (when RUN_DIR/diagnostics.json exists), the per-class "
                    "statistics and a sortable gallery of per-frame panels (image, ground truth, each "
                    "method's heatmap and its detections at the 95%-TPR threshold). Panels need the "
                    "anomaly maps saved by `sml eval --save-maps` (or --report). A file that cannot be read "
                    "(truncated map or image, missing labels) is reported here and exits with status 2.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `sml eval --out`")
    p.add_argument("--max-frames", type=int, default=None, metavar="N",
                   help="draw panels for the first N frames of frames.json only (default: all)")
    p.add_argument("--range", dest="ranges", choices=["dataset", "image"], default="dataset",
                   help="heatmap colour range: one per method from the 1st-99th percentile over the data "
                        "set (default, frames comparable) or per image")
    p.add_argument("--cmap", default="inferno", help="matplotlib colormap of the heatmaps (default inferno)")
    p.add_argument("--tile-width", type=int, default=400, metavar="PX",
                   help="width of one image in a full-size panel (default 400)")
    p.add_argument("--panel-format", choices=["png", "jpeg"], default="png",
                   help="full-size panels as lossless PNG (default) or JPEG (smaller, much faster for "
                        "hundreds of frames)")
    p.add_argument("--protocol", choices=list(PROTOCOLS), default=None,
                   help="check that the run was evaluated under this protocol (the report always states the "
                        "run's own); a different one is refused: evaluate again with `sml eval --protocol`")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sml.errors import InputError
    from sml.report import build_report
    from sml.report.rundir import load_run
    from sml.utils import atomic
    from sml.utils.progress import write_message
    from sml.utils.run_layout import REPORT

    def note(text: str) -> None:
        write_message(f"sml: note: {text}")

    if args.tile_width < 32:
        raise InputError(f"--tile-width {args.tile_width}: a panel image needs at least 32 pixels; give e.g. 400")
    if args.max_frames is not None and args.max_frames < 0:
        raise InputError(f"--max-frames {args.max_frames}: give 0 or more frames")
    run_ = load_run(args.run_dir)  # a missing or broken run is refused before anything is written
    used = str(run_.metrics.get("protocol", "exact"))  # runs before protocols existed were exact
    if args.protocol is not None and args.protocol != used:
        # not recomputed: another protocol needs every frame's float32 map or its bins, which a run keeps
        # only as float16 maps; a report must never show numbers of a protocol they were not computed by
        raise InputError(f"--protocol {args.protocol}: {args.run_dir} was evaluated with --protocol {used}; "
                         f"run `sml eval ... --protocol {args.protocol}` into another --out folder for its "
                         f"numbers, or leave --protocol out")
    atomic.check_writable(Path(args.run_dir) / REPORT)

    # unreadable files raise InputError (printed as `sml: error:`, exit 2) after the page is written
    index = build_report(args.run_dir, max_frames=args.max_frames, ranges=args.ranges, cmap=args.cmap,
                         tile_width=args.tile_width, panel_format=args.panel_format, on_note=note)
    print(f"report written to {index} (open it in a browser: file://{index.resolve()})")
    return 0
