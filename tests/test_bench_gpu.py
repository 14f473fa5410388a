"""benchmarks/bench_gpu.py: one line and exit 0 without CUDA; every code path on the CPU at a tiny size; a row
that fails or does not fit the budget is recorded and the run goes on."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"
SMALL = ["--device", "cpu", "--small", "--size", "64x32", "--frames", "1", "--eval-frames", "2",
         "--batches", "1", "2", "--networks", "erfnet"]


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
    # a compile backend that does not exist: those rows fail, every other row runs
    assert bench.main([*SMALL, "--compile", "bf16", "--compile-backend", "no_such_backend",
                       "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "ERFNet at 64x32" in text and "largest difference" in text and "target:" in text
    assert "error in erfnet / forward bf16 compiled" in text
    r = json.loads(out_json.read_text())
    assert r["size"] == [32, 64] and r["batches"] == [1, 2]
    erf = r["tables"]["erfnet"]
    for row in ("forward fp32", "forward bf16", "sml eval (whole, bf16)"):
        assert set(erf[row]) == {"1", "2"} and all(c["ms"] > 0 for c in erf[row].values()), row
    assert "forward fp16" not in erf and any("fp16" in n for n in r["notes"])   # CUDA only
    assert all("error" in c for c in erf["forward bf16 compiled"].values())
    per_frame = r["tables"]["per frame"]
    assert set(per_frame) == {"sml post-processing", "five scores", "metric update", "metric update + diagnostics",
                              "diagnostics", "statistics update"}
    assert all(c["1"]["ms"] >= 0 for c in per_frame.values())
    ev = r["eval"]["erfnet"]["2"]
    assert ev["frames"] == 2 and set(ev["auroc"]) == set(bench.SCORES) and ev["fps"] > 0
    p = r["precision"]
    assert p["frames"] == 1 and set(p["metrics"]["fp32"]) == set(bench.SCORES)
    for prec in ("fp32", "bf16"):
        for m in p["metrics"][prec].values():
            assert all(0.0 <= v <= 1.0 for v in m.values())
    diffs = [v for d in p["diff_points"].values() for v in d.values()]
    assert p["max_diff_points"] == max(diffs)
    assert p["metrics"]["fp32"] != p["metrics"]["bf16"]   # bf16 ran: the logits moved
    assert r["targets"] and any("SML post-processing" in t for t in r["targets"])


@pytest.mark.slow
def test_budget_skips_rows_and_compiles_with_the_eager_backend(shared: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench()
    out_json = tmp_path / "r.json"
    assert bench.main([*SMALL, "--budget-s", "0", "--json", str(out_json)]) == 0
    r = json.loads(out_json.read_text())
    cells = [c for t in r["tables"].values() for row in t.values() for c in row.values()]
    assert cells and all("skipped" in c for c in cells), cells
    assert r["precision"] is None and r["eval"] == {}
    capsys.readouterr()
    assert bench.main([*SMALL, "--no-precision", "--no-eval", "--json", str(out_json)]) == 0
    erf = json.loads(out_json.read_text())["tables"]["erfnet"]
    assert all(c["ms"] > 0 for c in erf["forward bf16 compiled"].values())   # --small: the eager backend
    assert set(erf["compile seconds bf16"]) == {"1", "2"}


def test_size_parsing() -> None:
    bench = _bench()
    assert bench.parse_size("2048x1024") == (1024, 2048)
    import argparse
    with pytest.raises(argparse.ArgumentTypeError, match="WIDTHxHEIGHT"):
        bench.parse_size("big")
