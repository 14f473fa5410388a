"""`sml models` lists architectures and zoo entries with the weights' cache status."""
from __future__ import annotations

import json

from sml.cli.main import main


def test_table_lists_everything_and_cache_status(tmp_path, monkeypatch, capsys, erfnet_weights):
    monkeypatch.setenv("SML_CACHE", str(tmp_path))
    monkeypatch.delenv("SML_MIRROR", raising=False)
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["NAME", "KIND"]
    for name in ("deeplabv3plus_r50_os8", "deeplabv3plus_r50_os16", "deeplabv3plus_r101_os8",
                 "deeplabv3plus_r101_os16", "erfnet"):
        assert any(ln.split()[:2] == [name, "architecture"] for ln in lines), name
    zoo = {ln.split()[0]: ln for ln in lines if ln.split()[1:2] == ["pretrained"]}
    assert "512x1024" in zoo["erfnet.cityscapes"] and zoo["erfnet.cityscapes"].endswith("manual download")
    assert zoo["deeplabv3plus_r101_os8.cityscapes"].endswith("manual download")
    assert zoo["deeplabv3plus_r50_os16.cityscapes"].endswith("--weights PATH")
    monkeypatch.setenv("SML_MIRROR", str(erfnet_weights.parent))
    assert main(["models", "--json"]) == 0
    rows = {(r["name"], r["kind"]): r for r in json.loads(capsys.readouterr().out)}
    assert rows[("erfnet.cityscapes", "pretrained")]["weights"].startswith("cached")
    assert rows[("deeplabv3plus_r101_os8.cityscapes", "pretrained")]["reference_statistics"] is True
    assert main(["models", "-v"]) == 0
    assert "621544dfdc7d" in capsys.readouterr().out


def test_check_refuses_data_without_class_labels_and_bad_options(shared, capsys):
    ra = shared / "data" / "road_anomaly" / "RoadAnomaly_jpg"
    assert main(["models", "check", "--model", "erfnet", "--data", f"road-anomaly:{ra}"]) == 2
    assert "anomaly labels, not classes" in " ".join(capsys.readouterr().err.split())
    assert main(["models", "check", "--model", "erfnet", "--data", f"road-anomaly:{ra}", "--max-frames", "0"]) == 2
    assert "--max-frames must be >= 1" in capsys.readouterr().err
