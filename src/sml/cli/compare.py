"""`sml compare RUN_DIR... [--out DIR]`: one table of several runs (Markdown, CSV, LaTeX, HTML with curves)."""
from __future__ import annotations

import argparse

from sml.cli.args import HelpFormatter

EPILOG = """\
examples:
  sml compare runs/ra runs/ra-smiyc                 # print the Markdown table
  sml compare runs/ra runs/ra-smiyc --out runs/compare

Rows are network + method (+ the settings that set a row apart: statistics for
methods that use them, inference settings, method settings); columns are data
set x protocol, each with AUROC %, AP % and FPR@95 %, the best of each column
in bold. Runs under different --protocol get separate columns, labelled with
the protocol. The same network, method and settings evaluated twice on one data
set and protocol keep a row each, marked run=FOLDER. The settings that differ
between the runs are listed. --out DIR writes compare.md, compare.csv (one line
per run and method, fractions), compare.tex (booktabs), compare.html (with one
ROC / PR figure per data set and protocol, compare-*.png/.svg) and
compare.json, the list of those files: only files it lists are ever replaced.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="one table of several run directories (Markdown, CSV, LaTeX, HTML)",
                       description="Compare run directories written by `sml eval --out`: one table of every "
                                   "run's methods per network, data set and protocol, for a paper.",
                       epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories written by `sml eval --out`")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="write compare.md/.csv/.tex/.html, the figures and compare.json to DIR (without it the "
                        "Markdown is printed and nothing is written)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sml.report.compare import compare_runs

    comparison = compare_runs(args.run_dirs)  # every run checked before anything is written
    files = comparison.write(args.out) if args.out is not None else []
    print(comparison.to_markdown(), end="")
    if files:
        print(f"\nwritten to {args.out}/: {', '.join(f.name for f in files)}")
    return 0
