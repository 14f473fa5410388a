"""Shared fixtures. Real data and weights are read from ``../shared`` (or ``$SML_SHARED``)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    """Root of the read-only shared material: ``$SML_SHARED`` or ``<repo>/../shared``."""
    return Path(os.environ.get("SML_SHARED", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared() -> Path:
    """The shared folder; missing data skips locally but fails in CI (``CI=true``)."""
    root = shared_root()
    if not (root / "data").is_dir():
        msg = f"shared data not found at {root} (set SML_SHARED)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return root


@pytest.fixture(scope="session")
def erfnet_weights(shared: Path) -> Path:
    return shared / "models" / "erfnet_cityscapes.pth"
