"""`sml demo`: synthetic street scenes + anomalies, a one-minute training, statistics and evaluation."""
from __future__ import annotations

from sml.demo.run import run_demo

__all__ = ["run_demo"]
