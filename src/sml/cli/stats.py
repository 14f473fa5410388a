"""`sml stats`: not implemented yet (placeholder owned by the issue that builds it)."""
from __future__ import annotations

import argparse

from sml.errors import SMLError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stats", help="(not implemented yet)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise SMLError("`sml stats` is not implemented yet")
