"""Command-line options shared by ``sml stats``, ``sml eval`` and ``sml predict`` (argparse helpers of the CLI)."""
from __future__ import annotations

import argparse
from typing import Any

from sml.errors import InputError
from sml.scores.registry import METHODS, canonical_method
from sml.utils.precision import InferenceSettings, add_inference_args

__all__ = ["METHODS", "HelpFormatter", "add_model_args", "add_resume_args", "add_sml_args", "add_gen_args",
           "add_stats_pairing_arg", "add_loading_args", "loading_settings", "sml_settings", "method_settings",
           "parse_methods", "inference_settings", "data_kinds_help"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples in epilogs as written and shows the defaults that carry information."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, [], argparse.SUPPRESS) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def add_model_args(p: argparse.ArgumentParser) -> None:
    """``--model``, ``--weights``, ``--trust-checkpoint``, ``--device``, ``--precision``, ``--tf32``, ``--compile``."""
    g = p.add_argument_group("model")
    g.add_argument("--model", required=True, metavar="NAME",
                   help="network name (see `sml models`), e.g. erfnet or deeplabv3plus_r101_os8; "
                        "or a model card CARD.yaml describing your own network (see `sml models card`); "
                        "or hf:ID_OR_FOLDER, a transformers model (a card with format: transformers and that "
                        "source)")
    g.add_argument("--weights", metavar="PATH", default=None,
                   help="checkpoint file (state dict) for the network")
    g.add_argument("--trust-checkpoint", action="store_true",
                   help="allow checkpoints that need full pickle loading (only for files you trust)")
    g.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
    add_inference_args(g)


def data_kinds_help() -> str:
    """The epilog lines naming every ``--data`` kind with its layout (from the loaders, so none is left out)."""
    from sml.data.registry import dataset_help

    return "data-set kinds (--data KIND:PATH):\n" + dataset_help()


def inference_settings(args: argparse.Namespace) -> InferenceSettings:
    """``--device`` and the inference options, checked once (before data or weights are opened)."""
    settings = InferenceSettings.from_args(args)
    settings.check(args.device)
    return settings


def add_resume_args(g: argparse._ArgumentGroup, where: str) -> None:
    """``--resume`` / ``--save-every`` / ``--save-interval``: the partial state ``where`` names (stats and eval)."""
    g.add_argument("--resume", action="store_true", help=f"continue an interrupted run from {where}")
    g.add_argument("--save-every", type=int, default=None, metavar="N",
                   help="save partial progress every N frames (per process) instead of by time")
    g.add_argument("--save-interval", type=float, default=300.0, metavar="SECONDS",
                   help="save partial progress once SECONDS of work have passed since the last save "
                        "(default 300: an interruption loses at most about 5 minutes)")


def add_loading_args(g: argparse._ArgumentGroup) -> None:
    """``--batch-size`` / ``--workers``: how frames reach the network (stats and eval; sml.pipelines.loader)."""
    g.add_argument("--batch-size", type=int, default=1, metavar="N",
                   help="run the network on N consecutive frames of one size at a time (a frame of another "
                        "size starts a new batch); the results are those of batch size 1. Worth it on a GPU")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="decode frames in N processes ahead of the network (0: in the main process). "
                        "Default: 0 on the CPU, where the network takes every core; on CUDA one per core "
                        "left to this process, at most 8")


def loading_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``batch_size`` and ``workers`` of parsed arguments, checked (before anything is opened)."""
    from sml.pipelines.loader import check_loading

    check_loading(args.batch_size, args.workers)
    return {"batch_size": args.batch_size, "workers": args.workers}


def add_stats_pairing_arg(g: argparse._ArgumentGroup) -> None:
    """``--stats-from-other-network`` (eval and predict): accept statistics that do not name this network."""
    g.add_argument("--stats-from-other-network", action="store_true",
                   help="use --stats although they were computed with another network, or name none (older "
                        "files, the reference code's .npy files other than the published ones); the run "
                        "records it. Class names must still be the network's, in order")


def add_sml_args(p: argparse.ArgumentParser) -> None:
    """SML post-processing settings (spec sections 3 and 4)."""
    g = p.add_argument_group("SML settings (method sml only)")
    g.add_argument("--boundary-width", type=int, default=4, metavar="PX",
                   help="width of the suppressed band around predicted class boundaries")
    g.add_argument("--boundary-iterations", type=int, default=4, metavar="N",
                   help="boundary suppression iterations (must divide --boundary-width)")
    g.add_argument("--no-suppression", action="store_true", help="switch iterative boundary suppression off")
    g.add_argument("--no-smoothing", action="store_true", help="switch dilated smoothing off")
    g.add_argument("--border", choices=("reference", "ignore"), default="reference",
                   help="image-border handling of the boundary: 'reference' reproduces the published "
                        "numbers, 'ignore' finds no boundaries at the image border")


def sml_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The SML settings of parsed arguments, as keyword arguments of the scorer."""
    from sml.scores.postprocess import check_suppression_settings

    try:  # validated before any model or data is opened
        check_suppression_settings(args.boundary_width, args.boundary_iterations, args.border)
    except InputError as exc:
        raise InputError(f"--boundary-width / --boundary-iterations: {exc}") from None
    return {
        "boundary_width": args.boundary_width,
        "boundary_iterations": args.boundary_iterations,
        "suppression": not args.no_suppression,
        "smoothing": not args.no_smoothing,
        "border": args.border,
    }


def add_gen_args(p: argparse.ArgumentParser) -> None:
    """GEN settings (sml-algorithm.md section 8; recorded in the run's settings)."""
    g = p.add_argument_group("GEN settings (method gen only)")
    g.add_argument("--gen-gamma", type=float, default=None, metavar="G",
                   help="GEN's exponent gamma (default 0.1, the authors')")
    g.add_argument("--gen-m", type=int, default=None, metavar="M",
                   help="GEN sums over the M largest class probabilities (default min(100, number of classes))")


def method_settings(args: argparse.Namespace, methods: list[str]) -> dict[str, dict[str, Any]]:
    """Settings of the methods other than sml (``{"gen": {"gamma", "M"}}``), checked before anything loads;
    a method's options without the method in ``--method`` are refused."""
    from sml.scores.functional import check_gen_settings

    given = [o for o, v in (("--gen-gamma", args.gen_gamma), ("--gen-m", args.gen_m)) if v is not None]
    if not given:
        return {}
    if "gen" not in methods:
        raise InputError(f"{' and '.join(given)} set{'s' if len(given) == 1 else ''} method gen, which is not in "
                         f"--method ({','.join(methods)}); add gen to --method or leave {' and '.join(given)} out")
    try:
        gamma, m = check_gen_settings(0.1 if args.gen_gamma is None else args.gen_gamma, args.gen_m)
    except InputError as exc:
        raise InputError(f"--gen-gamma / --gen-m: {exc}") from None
    return {"gen": {"gamma": gamma, "M": m}}


def parse_methods(text: str) -> list[str]:
    """``"sml,max_logit"`` -> ``["sml", "max_logit"]``, validated by the method registry, order kept, repeats dropped."""
    out: list[str] = []
    for m in str(text).split(","):
        if m.strip():
            key = canonical_method(m)
            if key not in out:
                out.append(key)
    if not out:
        raise InputError(f"--method is empty; give one or more of {', '.join(METHODS)}")
    return out
