"""`sml models`: not implemented yet (placeholder owned by the issue that builds it)."""
from __future__ import annotations

import argparse

from sml.errors import SMLError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="(not implemented yet)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise SMLError("`sml models` is not implemented yet")
