"""`sml predict`: anomaly maps and colour overlays for images, folders and videos."""
from __future__ import annotations

import argparse

from sml.cli.args import (METHODS, HelpFormatter, add_gen_args, add_model_args, add_sml_args,
                          add_stats_pairing_arg, inference_settings)

EPILOG = """\
examples:
  sml predict --model erfnet --weights erfnet_cityscapes.pth --stats stats.json \\
              street.jpg dashcam_frames/ --out predictions
  # a video (needs OpenCV: pip install opencv-python-headless), every 5th frame:
  sml predict ... clip.mp4 --every 5 --out predictions
  # the baselines next to SML, all frames coloured over one fixed range:
  sml predict ... --method sml,max_logit frames/ --vmin -2 --vmax 4 --out predictions

Outputs per input NAME and method M: OUT/M/NAME.npy (float32 anomaly score at
the image size, higher = more anomalous), OUT/M/NAME_heatmap.png and
OUT/M/NAME_overlay.png (the heatmap blended over the photo; strong colour =
likely anomaly). Videos give a folder of per-frame maps and OUT/M/CLIP_overlay.mp4.
With statistics, OUT/predict.json records the network, the statistics and how
they were paired (checked before any image is read).
OUT must be new, empty or an earlier `sml predict` output (its run.json lists
every file sml wrote there; only those are ever replaced).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="anomaly maps and overlays for your own images, folders, videos",
                       description="Run a segmentation network and SML (or a baseline) on your own images, "
                                   "folders of images or videos, and write anomaly maps and colour overlays.",
                       epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders of images, or videos")
    add_model_args(p)
    g = p.add_argument_group("scoring and output")
    g.add_argument("--stats", metavar="stats.json", default=None, help="class statistics (needed by sml)")
    g.add_argument("--stats-var", metavar="VAR.npy", default=None,
                   help="the reference code's variance file, when --stats is its mean .npy")
    add_stats_pairing_arg(g)
    g.add_argument("--method", default="sml", help=f"comma-separated methods among {', '.join(METHODS)}")
    g.add_argument("--out", required=True, metavar="DIR", help="output folder")
    g.add_argument("--vmin", type=float, default=None, help="score drawn darkest (default: per image, 1st percentile)")
    g.add_argument("--vmax", type=float, default=None, help="score drawn brightest (default: per image, 99th percentile)")
    g.add_argument("--alpha", type=float, default=0.6, help="overlay opacity of the highest scores")
    g.add_argument("--every", type=int, default=1, metavar="N", help="videos: process every N-th frame")
    g.add_argument("--no-npy", action="store_true", help="write only the PNG heatmaps and overlays")
    add_sml_args(p)
    add_gen_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sml.cli.eval import load_stats
    from sml.errors import InputError
    from sml.pipelines import common
    from sml.cli.args import method_settings, parse_methods, sml_settings
    from sml.pipelines.predict import predict_files
    from sml.utils import atomic, distributed, run_folder

    methods = parse_methods(args.method)
    settings = sml_settings(args)
    others = method_settings(args, methods)
    if (args.vmin is None) != (args.vmax is None):
        raise InputError("give both --vmin and --vmax (one fixed colour range), or neither (per image)")
    if args.vmin is not None and args.vmax <= args.vmin:
        raise InputError(f"--vmax ({args.vmax}) must be larger than --vmin ({args.vmin})")
    inference = inference_settings(args)   # device, precision: checked once, before anything opens
    stats = load_stats(args.stats, args.stats_var) if "sml" in methods else None
    atomic.check_writable(args.out)  # before the model loads
    run_folder.RunFolder(args.out, "predict").check()  # a folder that is not sml's is refused now
    distributed.init_from_env(args.device)
    model = common.load_model(args.model, args.weights, device=args.device, trust=args.trust_checkpoint,
                              settings=inference)
    result = predict_files(model, args.inputs, args.out, methods, stats=stats, sml_settings=settings,
                           vmin=args.vmin, vmax=args.vmax, alpha=args.alpha, every=args.every,
                           save_npy=not args.no_npy, stats_path=args.stats,
                           stats_from_other_network=args.stats_from_other_network, method_settings=others)
    done = distributed.all_gather_object((result.images, result.video_frames))
    if distributed.is_main():
        imgs, vids = sum(d[0] for d in done), sum(d[1] for d in done)
        print(f"{imgs} images and {vids} video frames scored with {', '.join(methods)}; "
              f"maps and overlays in {args.out}/")
    return 0
