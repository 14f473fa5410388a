"""`sml eval --report` wires the evaluation's run directory into the HTML report."""
from __future__ import annotations

import json
import re
import shutil
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
    # the per-class diagnostics of the same forward pass, listed in run.json and drawn in the report
    assert "diagnostics.json" in json.loads((out / "run.json").read_text())["files"]
    assert 'id="sec-diagnostics"' in html and "img/diagnostics.png" in refs
    # `sml report` rebuilds the same page from the run directory alone
    page.unlink()
    assert main(["report", str(out)]) == 0 and page.is_file()

    # a map that is not this run's (left by an earlier run, copied in) is never drawn
    stale = tmp_path / "run2"
    assert main(["eval", "--model", str(model), "--stats", str(tmp_path / "s.json"), "--data",
                 f"smiyc-anomaly:{smiyc}", "--out", str(stale), "--method", "sml,max_logit"]) == 0
    shutil.copytree(out / "maps", stale / "maps")
    assert main(["report", str(stale)]) == 0
    assert 'id="legend"' not in (stale / "report" / "index.html").read_text()  # no heatmap: no colour legend
    (stale / "run.json").unlink()  # a folder of an older sml (no run.json): every map is taken
    # its report files are no longer known to be sml's: not replaced (run.json listed them) until moved away
    assert main(["report", str(stale)]) == 2
    shutil.rmtree(stale / "report")
    assert main(["report", str(stale)]) == 0
    assert 'id="legend"' in (stale / "report" / "index.html").read_text()





def test_folder_with_label_mapping_evaluates_and_reports(tmp_path: Path) -> None:
    """A `folder` set whose masks use 0 / 10 / 99 is evaluated and drawn through --label-mapping."""
    from PIL import Image
    from sklearn.metrics import roc_auc_score

    model, cs = make_model(tmp_path), make_cityscapes(tmp_path / "cs", n=2)
    smiyc = make_smiyc(tmp_path / "sm", n=2)
    root = tmp_path / "folder"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    raw_by_id = {}
    for img in sorted((smiyc / "images").glob("*.png")):
        lab = np.asarray(Image.open(smiyc / "labels_masks" / f"{img.stem}_labels_semantic.png"))
        raw = np.choose(np.searchsorted([0, 1, 255], lab), [0, 10, 99]).astype(np.uint8)
        Image.fromarray(np.asarray(Image.open(img))).save(root / "images" / img.name)
        Image.fromarray(raw).save(root / "labels" / img.name)
        raw_by_id[img.stem] = lab
    assert main(["stats", "--model", str(model), "--data", f"cityscapes:{cs}", "-o", str(tmp_path / "s.json")]) == 0
    out = tmp_path / "run"
    args = ["eval", "--model", str(model), "--data", f"folder:{root}", "--out", str(out), "--method", "max_logit"]
    assert main(args) == 2                                   # 10 and 99 are not 0/1/255 without a mapping
    assert main([*args, "--label-mapping", "0:0,10:1,99:255", "--report", "--save-maps", "npy"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["label_mapping"] == "0:0,10:1,99:255"
    scores, labels = [], []
    for fid, lab in raw_by_id.items():
        amap = np.load(out / "npy" / "max_logit" / f"{fid}.npy")
        keep = lab != 255
        scores.append(amap[keep])
        labels.append(lab[keep])
    ref = roc_auc_score(np.concatenate(labels), np.concatenate(scores))
    assert abs(m["methods"]["max_logit"]["auroc"] - ref) < 1e-9
    assert 'class="warn"' not in (out / "report" / "index.html").read_text()  # labels mapped, maps read
