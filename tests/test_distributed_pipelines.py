"""torchrun with 2 CPU processes (gloo): `sml stats` and `sml eval` equal a 1-process run exactly."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from test_pipeline_fixtures import make_cityscapes, make_model, make_smiyc

pytestmark = pytest.mark.distributed


def _sml(args: list[str], nproc: int, cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "sml", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "-m", "sml", *args]
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def test_two_processes_equal_one(tmp_path: Path) -> None:
    model = make_model(tmp_path)
    cs = make_cityscapes(tmp_path / "cs", n=5)
    smiyc = make_smiyc(tmp_path / "smiyc", n=5)
    for n in (1, 2):
        _sml(["stats", "--model", str(model), "--data", f"cityscapes:{cs}", "-o", str(tmp_path / f"s{n}.json")],
             n, tmp_path)
    a, b = (json.loads((tmp_path / f"s{n}.json").read_text()) for n in (1, 2))
    for k in ("count", "mean", "var", "m2"):
        assert a[k] == b[k], k  # bit-identical (JSON floats round-trip exactly)
    for n in (1, 2):
        _sml(["eval", "--model", str(model), "--stats", str(tmp_path / "s1.json"), "--data",
              f"smiyc-anomaly:{smiyc}", "--out", str(tmp_path / f"e{n}"), "--components", "--save-maps", "npy16"],
             n, tmp_path)
    ma, mb = (json.loads((tmp_path / f"e{n}" / "metrics.json").read_text()) for n in (1, 2))
    assert ma["methods"] == mb["methods"] and ma["pixels"] == mb["pixels"]
    fa, fb = (json.loads((tmp_path / f"e{n}" / "frames.json").read_text()) for n in (1, 2))
    assert fa == fb
    for f in (tmp_path / "e1" / "maps").rglob("*.npy"):
        np.testing.assert_array_equal(np.load(f), np.load(tmp_path / "e2" / f.relative_to(tmp_path / "e1")))
    assert (tmp_path / "e2" / "curves.json").read_text() == (tmp_path / "e1" / "curves.json").read_text()
    # the per-class diagnostics merged with the metrics: the same counts from two processes
    assert (tmp_path / "e2" / "diagnostics.json").read_bytes() == (tmp_path / "e1" / "diagnostics.json").read_bytes()
    # the SegmentMeIfYouCan protocol's binned state too (its frames merged in rank order)
    for n in (1, 2):
        _sml(["eval", "--model", str(model), "--stats", str(tmp_path / "s1.json"), "--data",
              f"smiyc-anomaly:{smiyc}", "--out", str(tmp_path / f"p{n}"), "--components", "--protocol", "smiyc"],
             n, tmp_path)
    pa, pb = (json.loads((tmp_path / f"p{n}" / "metrics.json").read_text()) for n in (1, 2))
    assert pa["protocol"] == "smiyc" and pa["methods"] == pb["methods"]
