"""AnomalyMetrics / ComponentMetrics sync over two real gloo processes equals one process, bit for bit."""
from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

from sml.metrics import AnomalyMetrics, ComponentMetrics

pytestmark = pytest.mark.distributed


def _frames(n: int = 6):
    rng = np.random.default_rng(42)
    out = []
    for _ in range(n):
        s = rng.normal(size=(64, 96)).astype(np.float32)
        y = (rng.random((64, 96)) < 0.03).astype(np.uint8)
        y[20:30, 40:60] = 1
        s[y == 1] += 1.0
        s = np.round(s, 2)  # ties across ranks
        y[:5] = 255
        out.append((s, y))
    return out


def test_sync_with_gloo_equals_single_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(f"""
import pickle, sys, torch.distributed as dist
sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
from test_metrics_distributed import _frames
from sml.metrics import AnomalyMetrics, ComponentMetrics
r = int(sys.argv[1])
dist.init_process_group("gloo", rank=r, world_size=2, init_method="file://{tmp_path}/rdv")
m, c = AnomalyMetrics(), ComponentMetrics("obstacle", threshold=0.8)
for s, y in _frames()[r::2]:
    m.update(s, y)
    c.update(s, y)
m.sync(); c.sync()
pickle.dump((m.compute(), m.curves(50), c.compute()), open("{tmp_path}/out%d.pkl" % r, "wb"))
dist.destroy_process_group()
""")
    procs = [subprocess.Popen([sys.executable, str(script), str(r)]) for r in range(2)]
    assert all(p.wait(timeout=180) == 0 for p in procs)
    outs = [pickle.loads((tmp_path / f"out{r}.pkl").read_bytes()) for r in range(2)]
    single, comp = AnomalyMetrics(), ComponentMetrics("obstacle", threshold=0.8)
    for s, y in _frames():
        single.update(s, y)
        comp.update(s, y)
    ref = single.compute()
    for res, curves, cres in outs:
        assert res == ref  # identical floats, not close
        assert res["images"] == 6
        for part in ("roc", "pr"):
            for k, v in single.curves(50)[part].items():
                assert np.array_equal(curves[part][k], v)
        assert cres == comp.compute()
