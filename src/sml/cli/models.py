"""`sml models`: the registered networks and the zoo's published checkpoints, with cache status."""
from __future__ import annotations

import argparse
import json
import sys

from sml.errors import InputError
from sml.utils.tables import model_check_table, models_listing

EPILOG = """\
examples:
  sml models                 # table of architectures and published configurations
  sml models --verbose       # also URLs, sha256 and where cached files are
  sml models --json          # machine-readable
  sml models card net.onnx -o net.yaml            # a model card for your network file
  sml models check --model net.yaml --data cityscapes:/data/cityscapes
  sml models download erfnet --mirror /data/weights   # or --mirror https://host/weights/

Weights of a published configuration are fetched on first use (sml.models.load(NAME)) or by
`sml models download` into $SML_CACHE (default ~/.cache/sml) and checked against their
sha256; a mirror (--mirror, or $SML_MIRROR: a folder or a base URL holding the files by name)
is used instead of the URL, and --weights PATH overrides both.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list networks; write and check model cards; download weights",
                       description="List the registered network architectures and their published "
                                   "configurations (input size, classes, whether the weights are cached "
                                   "here); write a model card for your own network file, check a model on "
                                   "labelled frames, or download published weights.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--verbose", "-v", action="store_true", help="also print URLs, checksums and file paths")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    c = actions.add_parser("card", help="write a model card template for a network file (from one dry run)",
                           description="Write a model card for a TorchScript, ONNX or .pt2 network file: "
                                       "format, file, sha256, output channels and (when the file fixes it) "
                                       "input size come from dry runs (a file traced with fixed sizes, whose "
                                       "output does not follow the input size, gets the size it was traced at, "
                                       "never null); the preprocessing fields are marked FILL-IN, and a card "
                                       "is refused until they are filled in.")
    c.add_argument("file", metavar="FILE", help="the network file")
    c.add_argument("-o", "--output", metavar="CARD.yaml", default=None,
                   help="write the card here (default: print it)")
    c.set_defaults(func=run_card)
    k = actions.add_parser("check", help="pixel accuracy and mIoU on labelled frames (a misread network shows)",
                           description="Run the model on labelled in-distribution frames and print pixel "
                                       "accuracy and mIoU (mean over the classes present in the labels of "
                                       "TP / (TP + FP + FN), pooled over all frames); warn when they are near "
                                       "chance, when the other channel order (mean and std reversed with it) "
                                       "segments better, where a wrong channel order or normalisation shows "
                                       "first, or when the logits hold NaN or infinity. Exit status 1 when warned.")
    k.add_argument("--model", required=True, metavar="NAME|CARD.yaml", help="registered name or model card")
    k.add_argument("--weights", default=None, metavar="PATH", help="checkpoint for a registered name")
    k.add_argument("--trust-checkpoint", action="store_true",
                   help="allow checkpoints that need full pickle loading (only for files you trust)")
    k.add_argument("--data", required=True, metavar="KIND:PATH",
                   help="labelled frames with the model's classes, e.g. cityscapes:/data/cityscapes")
    k.add_argument("--split", default=None, help="data split (cityscapes default: train)")
    k.add_argument("--max-frames", type=int, default=None, metavar="N", help="check at most N labelled frames")
    k.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
    k.add_argument("--json", action="store_true", help="print the numbers as JSON")
    k.set_defaults(func=run_check)
    d = actions.add_parser("download", help="download published weights (sha256 checked) into the cache",
                           description="Fetch the weights of a published configuration into $SML_CACHE "
                                       "(default ~/.cache/sml), with a progress bar and a sha256 check, so "
                                       "that --model NAME works without --weights.")
    d.add_argument("name", metavar="NAME", help="a published configuration (see `sml models`)")
    d.add_argument("--mirror", metavar="URL_OR_DIR", default=None,
                   help="a folder or base URL (file://, https://) holding the file by its name")
    d.set_defaults(func=run_download)


def run_card(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sml.models.card import card_template
    from sml.utils.atomic import write_bytes

    if args.output is None:
        print(card_template(args.file), end="")
        return 0
    out = Path(args.output)
    if not out.name.lower().endswith((".yaml", ".yml")):
        raise InputError(f"-o {out}: a model card is a .yaml file; name it e.g. {out.with_suffix('.yaml').name}")
    if out.exists():
        raise InputError(f"-o {out} exists; remove it or choose another name (a card is never overwritten)")
    write_bytes(out, card_template(args.file, card_dir=out.parent).encode())
    print(f"wrote {out}; fill in every FILL-IN field, then check it with "
          f"`sml models check --model {out} --data cityscapes:PATH`")
    return 0


def run_check(args: argparse.Namespace) -> int:
    import itertools

    from sml.data import open_dataset
    from sml.models import load
    from sml.models.check import check_model
    from sml.pipelines.common import check_device

    if args.max_frames is not None and args.max_frames < 1:
        raise InputError(f"--max-frames must be >= 1, got {args.max_frames}")
    check_device(args.device)
    ds = open_dataset(args.data, split=args.split, labels_required=False, allow_subset=True)
    names = getattr(ds, "class_names", None)
    if not names or not ds.has_labels:
        raise InputError(f"--data {args.data}: sml models check needs labelled frames with class labels "
                         f"(e.g. cityscapes:PATH with its gtFine folder); this data set has "
                         f"{'no labels' if names else 'anomaly labels, not classes'}")
    model = load(args.model, weights=args.weights, device=args.device, trust=args.trust_checkpoint)
    labelled = (ds.load(f) for f in ds.frames if f.label_path is not None)
    result = check_model(model, itertools.islice(labelled, args.max_frames), list(names))
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(model_check_table(model, args.data, result))
    warnings = result.warnings()
    for w in warnings:
        print(f"sml: warning: {w}", file=sys.stderr)
    return 1 if warnings else 0


def run_download(args: argparse.Namespace) -> int:
    from sml.models.zoo import get_entry, install

    path = install(args.name, mirror=args.mirror)   # a cached file is hashed again: never "checked" unread
    known = get_entry(args.name).sha256
    checked = "sha256 checked" if known else "no published sha256 to check: see the warning"
    print(f"{args.name}: {path} ({checked}); use it with --model {args.name}")
    return 0


def rows() -> list[dict]:
    """One dict per architecture and per published configuration ``arch.tag`` (what the table shows)."""
    from sml.models import registry, zoo

    out = []
    for name in registry.list_models():
        arch = registry.get_architecture(name)
        cfg = registry.get_config(name)
        out.append({"name": name, "kind": "architecture", "default": cfg.name,
                    "input_size": list(cfg.input_size) if cfg.input_size else None,
                    "classes": len(cfg.class_names), "normalization": "imagenet" if cfg.mean else "none",
                    "weights": "--weights PATH", "description": arch.description})
    for name in registry.list_pretrained():
        e = registry.get_config(name)
        if e.filename:
            where = zoo.locate(name)
            status = f"cached ({where})" if where else ("not cached" if e.urls else "manual download")
        else:
            status = "--weights PATH"
        out.append({"name": name, "kind": "pretrained", "arch": e.arch,
                    "input_size": list(e.input_size) if e.input_size else None,
                    "classes": len(e.class_names), "normalization": "imagenet" if e.mean else "none",
                    "weights": status, "description": e.notes, "filename": e.filename, "urls": list(e.urls),
                    "sha256": e.sha256, "homepage": e.homepage, "licence": e.licence,
                    "reference_statistics": e.stats_mean is not None})
    return out


def run(args: argparse.Namespace) -> int:
    table = rows()
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    print(models_listing(table, verbose=args.verbose))
    return 0
