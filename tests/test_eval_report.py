"""`sml eval --report` wires the evaluation's run directory into the HTML report."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from sml.cli.main import main
from test_pipeline_fixtures import make_cityscapes, make_model, make_smiyc


def test_eval_with_report_writes_a_complete_page(tmp_path: Path) -> None:
    model, cs, smiyc = make_model(tmp_path), make_cityscapes(tmp_path / "cs", n=3), make_smiyc(tmp_path / "sm", n=3)
    assert main(["stats", "--model", str(model), "--data", f"cityscapes:{cs}", "-o", str(tmp_path / "s.json")]) == 0
    out = tmp_path / "run"
    assert main(["eval", "--model", str(model), "--stats", str(tmp_path / "s.json"), "--data",
                 f"smiyc-anomaly:{smiyc}", "--out", str(out), "--method", "sml,max_logit", "--report"]) == 0
    page = out / "report" / "index.html"
    html = page.read_text()
    # every method in the table, every frame in the gallery, and every referenced file exists
    assert "sml" in html and "max_logit" in html
    frames = json.loads((out / "frames.json").read_text())
    assert len(frames) == 3 and all(np.isfinite(f["methods"]["sml"]["fp_area"]) for f in frames)
    refs = set(re.findall(r'(?:src|href)="(img/[^"]+)"', html))
    assert refs and all((page.parent / r).is_file() for r in refs)
    assert len([r for r in refs if "/thumbs/" in r]) == 3
    assert "http://" not in html and "https://" not in html      # offline: no CDN
    # `sml report` rebuilds the same page from the run directory alone
    page.unlink()
    assert main(["report", str(out)]) == 0 and page.is_file()



