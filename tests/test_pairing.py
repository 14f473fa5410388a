"""Statistics and networks that belong together are used, and what was paired is recorded (issue 19).

The refusals (other classes, another or an unnamed network, resume state of
another run or of changed frames, impossible counts) are cases of
tests/test_bad_inputs.py; here: the identities themselves, and the runs that
are accepted, with what they record.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import sml
from sml.cli.main import main
from sml.errors import InputError
from sml.pipelines.pairing import check_pairing
from test_pipeline_fixtures import TinyNet, make_cityscapes, make_model, make_smiyc


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("pairing")
    s = {"base": base, "card0": make_model(base, 0), "card1": make_model(base, 1),
         "cs": make_cityscapes(base / "cs", n=3), "smiyc": make_smiyc(base / "smiyc", n=3)}
    assert main(["stats", "--model", str(s["card0"]), "--data", f"cityscapes:{s['cs']}",
                 "-o", str(base / "stats0.json")]) == 0
    s["stats0"] = base / "stats0.json"
    return s


def _eval(s: dict[str, Path], card: Path, stats: Path, out: str, *extra: str) -> int:
    return main(["eval", "--model", str(card), "--stats", str(stats), "--data", f"smiyc-anomaly:{s['smiyc']}",
                 "--out", str(s["base"] / out), "--method", "sml,max_logit", *extra])


def test_identity_is_the_file_or_the_tensors(tmp_path: Path, erfnet_weights: Path) -> None:
    erf = sml.models.load("erfnet", weights=erfnet_weights)
    assert erf.identity == {"name": "erfnet", "sha256": sml.models.get_config("erfnet").sha256,
                            "file": "erfnet_cityscapes.pth"}
    card = make_model(tmp_path)
    assert sml.models.load(str(card)).identity == {"name": "tiny0", "sha256": _sha(tmp_path / "tiny0.pt"),
                                                   "file": "tiny0.pt"}
    assert sml.models.wrap(tmp_path / "tiny0.pt", num_classes=19).identity["sha256"] == _sha(tmp_path / "tiny0.pt")
    # a module built in memory: its tensors, stable, and another weight gives another identity
    net = TinyNet(0)
    a, b = sml.models.wrap(net, num_classes=19).identity, sml.models.wrap(TinyNet(0), num_classes=19).identity
    assert a == b and a["file"] is None and len(a["sha256"]) == 64
    with torch.no_grad():
        net.c1.bias[0] += 1e-3
    assert sml.models.wrap(net, num_classes=19).identity["sha256"] != a["sha256"]


def test_stats_record_the_network_and_eval_records_the_pairing(tiny: dict[str, Path]) -> None:
    recorded = json.loads(tiny["stats0"].read_text())["model"]
    assert recorded == {"name": "tiny0", "sha256": _sha(tiny["base"] / "tiny0.pt"), "file": "tiny0.pt"}
    assert _eval(tiny, tiny["card0"], tiny["stats0"], "same") == 0
    m = json.loads((tiny["base"] / "same" / "metrics.json").read_text())
    assert m["network"] == recorded
    assert m["stats_pairing"] == {"network": recorded, "stats_network": recorded, "verdict": "same-network"}


def test_other_network_is_used_only_when_asked_and_recorded(tiny: dict[str, Path],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert _eval(tiny, tiny["card1"], tiny["stats0"], "refused") == 2
    assert "come from another network" in " ".join(capsys.readouterr().err.split())
    assert not (tiny["base"] / "refused" / "metrics.json").exists()
    assert _eval(tiny, tiny["card1"], tiny["stats0"], "other", "--stats-from-other-network") == 0
    assert "are used with the network 'tiny1'" in " ".join(capsys.readouterr().err.split())
    pairing = json.loads((tiny["base"] / "other" / "metrics.json").read_text())["stats_pairing"]
    assert pairing["verdict"] == "other-network" and pairing["override"] == "--stats-from-other-network"
    assert pairing["network"]["name"] == "tiny1" and pairing["stats_network"]["name"] == "tiny0"
    # sml predict: the same refusal, and the record beside the maps
    image = tiny["base"] / "smiyc" / "images" / "frame00.png"
    args = ["predict", "--model", str(tiny["card1"]), "--stats", str(tiny["stats0"]), str(image)]
    assert main([*args, "--out", str(tiny["base"] / "p_refused")]) == 2
    assert not (tiny["base"] / "p_refused").exists()
    assert main([*args, "--out", str(tiny["base"] / "p"), "--stats-from-other-network"]) == 0
    assert "--stats-from-other-network asks" in " ".join(capsys.readouterr().err.split())
    record = json.loads((tiny["base"] / "p" / "predict.json").read_text())
    assert record["stats_pairing"]["verdict"] == "other-network" and record["network"]["name"] == "tiny1"
    assert (tiny["base"] / "p" / "sml" / "frame00.npy").is_file()


def test_predict_record_never_replaces_a_foreign_file(tiny: dict[str, Path]) -> None:
    out = tiny["base"] / "p_foreign"
    out.mkdir()
    (out / "predict.json").write_text('{"mine": true}')
    image = tiny["base"] / "smiyc" / "images" / "frame00.png"
    assert main(["predict", "--model", str(tiny["card0"]), "--stats", str(tiny["stats0"]), str(image),
                 "--out", str(out)]) == 2
    assert (out / "predict.json").read_text() == '{"mine": true}' and not (out / "sml").exists()


def test_unnamed_statistics_are_recorded_as_unverified(tiny: dict[str, Path],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from sml.pipelines.evaluate import EvalConfig, evaluate

    said: list[str] = []   # the warning, whichever way an earlier CLI call routes warnings
    monkeypatch.setattr(warnings, "warn", lambda msg, *a, **k: said.append(str(msg)))

    model = sml.models.load(str(tiny["card0"]))
    stats = sml.ClassStatistics.load(tiny["stats0"])
    stats.model = "tiny0"   # what older stats.json files say: a name only
    ds = sml.data.open_dataset(f"smiyc-anomaly:{tiny['smiyc']}", allow_subset=True)
    with pytest.raises(InputError, match=r"do not say which network.*they name only 'tiny0'"):
        evaluate(model, ds, tiny["base"] / "unnamed", EvalConfig(methods=["sml"]), stats=stats, show_progress=False)
    config = EvalConfig(methods=["sml"], stats_from_other_network=True)
    run = evaluate(model, ds, tiny["base"] / "unnamed", config, stats=stats, show_progress=False)
    assert any("a network they do not name" in m for m in said)
    assert run.metrics["stats_pairing"]["verdict"] == "unverified"
    assert run.metrics["stats_pairing"]["stats_model"] == "tiny0"


class _Net:
    """A stand-in with a network's identity and classes (no weights needed to check a pairing)."""

    def __init__(self, name: str, file: str) -> None:
        self.identity = {"name": name, "sha256": "0" * 64, "file": file}
        self.class_names = list(sml.stats.CITYSCAPES_CLASSES)
        self.num_classes = 19


def test_published_statistics_pair_with_the_zoo_network(shared: Path) -> None:
    ref = shared / "reference"
    npy = sml.ClassStatistics.from_reference_npy(ref / "cityscapes_mean.npy", ref / "cityscapes_var.npy")
    zoo = sml.ClassStatistics.from_dict(sml.models.get_config("deeplabv3plus_r101_os8").reference_statistics())
    for stats in (npy, zoo):
        r = check_pairing(_Net("deeplabv3plus_r101_os8", "r101_os8_base_cty.pth"), stats, "cityscapes_mean.npy")
        assert r["verdict"] == "published"
        assert r["stats_network"]["published"] == "deeplabv3plus_r101_os8.cityscapes"
        with pytest.raises(InputError, match="belong to its weights file r101_os8_base_cty.pth.*my_r101.pth"):
            check_pairing(_Net("deeplabv3plus_r101_os8", "my_r101.pth"), stats, "cityscapes_mean.npy")
    # the same numbers changed a little are not the published statistics: nothing to check them against
    edited = sml.ClassStatistics.from_dict({**npy.to_dict(), "mean": [float(x) + 1e-6 for x in npy.mean]})
    with pytest.raises(InputError, match="do not say which network"):
        check_pairing(_Net("deeplabv3plus_r101_os8", "r101_os8_base_cty.pth"), edited, "edited.json")


def test_restored_statistics_states_are_range_checked() -> None:
    s = sml.ClassStatistics(3).update_from_predictions(np.array([0, 0, 1]), np.array([1.0, 2.0, 3.0]))
    assert sml.ClassStatistics.from_state_dict(s.state_dict()).digest() == s.digest()
    for key, index, value, match in [("n", 2, -1.0, "count -1"), ("n", 0, 2.5, "count 2.5"),
                                     ("mean", 0, np.inf, "mean inf"), ("m2", 0, -0.1, "m2"),
                                     ("m2", 1, 0.5, "1 pixel.* m2 0.5"), ("m2", 0, np.nan, "m2")]:
        state = s.state_dict()
        state[key][index] = value
        with pytest.raises(InputError, match=match):
            sml.ClassStatistics.from_state_dict(state)
