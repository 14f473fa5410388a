"""`sml train`: train a segmentation network with the published SML recipe (or any config)."""
from __future__ import annotations

import argparse
import json
import sys

EPILOG = """\
Examples:
  sml train --config deeplabv3plus_r101_os8_cityscapes data.root=/data/cityscapes \\
            model.pretrained_backbone=/weights/resnet101_imagenet.pth
  sml train --config erfnet_cityscapes data.root=/data/cityscapes \\
            model.init_weights=erfnet_cityscapes.pth optim.lr=0.001 optim.iterations=2000
  torchrun --nproc_per_node=2 -m sml train --config deeplabv3plus_r101_os8_cityscapes data.root=...
  sml train --config my.yaml --resume          # continue from OUT_DIR/last.pth after a kill
Every config value can be overridden as section.key=value (see --print-config).
"""


def register(sub: argparse._SubParsersAction) -> None:
    from sml.train.config import packaged_configs

    p = sub.add_parser("train", help="train a segmentation network (the published SML recipe by default)",
                       description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="deeplabv3plus_r101_os8_cityscapes",
                   help=f"YAML file or packaged config name ({', '.join(packaged_configs())}); "
                        "default: the published recipe")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="override config values, e.g. optim.lr=0.005 data.root=/data/cityscapes")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
                   help="resume from OUT_DIR/last.pth (or the given checkpoint) with optimizer, "
                        "schedule, sampler position and RNG states")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: train.device of the config)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sml.train import load_config, train

    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"train.device={args.device}")
    cfg = load_config(args.config, overrides)
    if args.print_config:
        sys.stdout.write(cfg.to_yaml())
        return 0
    summary = train(cfg, resume=args.resume)
    from sml.utils import distributed as du
    if du.is_main():
        print(json.dumps(summary))
    return 0
