"""benchmarks/bench_gpu.py: one line and exit 0 without CUDA; every code path on the CPU at a tiny size."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_without_cuda_one_line_and_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert _bench().main([]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("bench_gpu: no CUDA device here")


@pytest.mark.slow
def test_cpu_smoke_runs_every_path(shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench()
    out_json = tmp_path / "r.json"
    assert bench.main(["--device", "cpu", "--small", "--size", "64x32", "--repeats", "1", "--frames", "1",
                       "--batches", "1", "2", "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "batch 1:" in text and "batch 2:" in text and "largest difference" in text
    r = json.loads(out_json.read_text())
    assert r["size"] == [32, 64] and [t["batch"] for t in r["tables"]] == [1, 2]
    keys = {"forward fp32", "forward bf16", "sml post-processing", "sml (with max/argmax)", "five scores",
            "metric updates", "five scores + metrics", "class statistics update"}
    assert all(set(t["ms_per_frame"]) == keys and min(t["ms_per_frame"].values()) > 0 for t in r["tables"])
    p = r["precision"]
    assert p["frames"] == 1 and set(p["metrics"]["fp32"]) == set(bench.SCORES)
    for prec in ("fp32", "bf16"):
        for m in p["metrics"][prec].values():
            assert all(0.0 <= v <= 1.0 for v in m.values())
    diffs = [v for d in p["diff_points"].values() for v in d.values()]
    assert p["max_diff_points"] == max(diffs)
    assert p["metrics"]["fp32"] != p["metrics"]["bf16"]   # bf16 ran: the logits moved


def test_size_parsing() -> None:
    bench = _bench()
    assert bench.parse_size("2048x1024") == (1024, 2048)
    import argparse
    with pytest.raises(argparse.ArgumentTypeError, match="WIDTHxHEIGHT"):
        bench.parse_size("big")
