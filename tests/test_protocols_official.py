"""``--protocol smiyc`` and ``--protocol fishyscapes`` against numbers printed by each benchmark's own code.

SegmentMeIfYouCan
-----------------

Expected values were recorded once from the official tool, github
SegmentMeIfYouCan/road-anomaly-benchmark at commit
1c7804e0749686452eb02bbcfb81234e38795f8a ("metrics: fix best-f1 threshold
selection", 2023-08-24), run in a separate venv outside this repository
(Python 3.11, numpy 1.23.5, scipy 1.9.3, h5py, easydict, click, matplotlib
3.6.3, pandas 1.5.3, Jinja2, opencv-python-headless); none of its code is in
sml.

Shared frames (``test_shared_smiyc_frames``):

1. ``python -m sml eval --model erfnet --weights ../shared/models/erfnet_cityscapes.pth
   --data smiyc-anomaly:../shared/data/smiyc/dataset_AnomalyTrack --method max_logit,msp
   --save-maps hdf5 --out RUN_A`` (and ``smiyc-obstacle`` / ``dataset_ObstacleTrack`` -> ``RUN_O``).
2. The tool reads its own release layout, so the shared frames were laid out
   under its names: ``DIR_DATASETS/dataset_AnomalyTrack/images/validation000{i}.jpg``
   and ``labels_masks/validation000{i}_labels_semantic.png`` for shared frame
   ``i`` (plus the 100 ``AnomalyTrack-test`` frame names as 1x1 placeholders,
   because ``AnomalyTrack-all`` insists on 110 images; they are never
   evaluated); ``dataset_ObstacleTrack/images/validation_{k}.webp`` for shared
   frame ``i`` = the ``i``-th of ``validation_1 .. validation_40`` that
   ``ObstacleTrack-validation`` keeps (1-18, 20, 30-40). sml's HDF5 files
   were copied unchanged to ``DIR_OUTPUTS/anomaly_p/<method>/AnomalyTrack-all/validation000{i}.hdf5``
   and ``.../ObstacleTrack-all/validation_{k}.hdf5``.
3. ``DIR_DATASETS=... DIR_OUTPUTS=... python -m road_anomaly_benchmark metric
   PixBinaryClass,SegEval-AnomalyTrack max_logit AnomalyTrack-validation --no-parallel``,
   then the same for ``msp``, and ``PixBinaryClass,SegEval-ObstacleTrack ...
   ObstacleTrack-validation`` for both methods: one method per command, because
   with several methods in one ``--no-parallel`` command the tool reuses the
   first method's best-F1 threshold for the others' SegEval (docs/protocols.md).
4. Values read from ``PixBinaryClass/data/PixClassCurve_<m>_<d>.hdf5``
   (``area_ROC``, ``area_PRC``, ``tpr95_fpr``, ``best_f1``, ``best_f1_threshold``) and
   ``SegEval-*/data/SegEval-*Results_<m>_<d>.hdf5`` (``sIoU_gt``, ``prec_pred``, ``f1_mean``).

Synthetic frames (``test_synthetic_frames``): ``synthetic_frames(seed)`` below,
fed to the tool's ``binary_confusion_matrix(s, y, num_bins=768,
bin_strategy='percentiles')``, ``MetricPixelClassification.aggregate_dynamic_bins``
and ``curves_from_cmats``.

Fishyscapes
-----------
Expected values were recorded once from the official evaluation function
``calculate_metrics_perpixAP``, run unchanged from the official validation
script ``eval.py`` of github hermannsblum/fishyscapes at commit
d78502babbe7cbe635b542604228b748d96b8687 (2023-06-01; ``eval.py`` last changed
in 9529285e0e95d3f5c8dc573cd3e3c06d29ea5138). The function is the same as
``bdlb/fishyscapes/benchmark.py`` of github hermannsblum/bdl-benchmark at
commit 03773d621374ed10122866e64943df77ff8fbf50. It ran in a separate venv
outside this repository (Python 3.11.7, numpy 1.26.4, Pillow 13.0.0: it calls
``np.trapz``, which NumPy 2.4 no longer has); none of its code is in sml. The
driver did what ``eval.py``'s ``main()`` does: ``list_img_from_dir(LABELS,
'_labels.png')``, ``list_img_from_dir(PRED, '_anomaly.npy')`` and
``'_segmentation.npy'`` (each sorted by ``int(name.split('_')[0])``), ``np.load``
every anomaly map, ``calculate_metrics_perpixAP(labels, maps)`` and the
segmentation check ``0 <= pred < 20``; left out were ``settings.json`` (the
folders were given directly), the +-0.01 comparison with
``validation_performance.json`` and the 1024 x 2048 assertion.

Shared frames (``test_shared_road_anomaly_fishyscapes``):

1. ``python -m sml eval --model erfnet --weights ../shared/models/erfnet_cityscapes.pth
   --data road-anomaly:../shared/data/road_anomaly/RoadAnomaly_jpg --method max_logit,msp --limit 5
   --save-maps fishyscapes --protocol fishyscapes --out RUN`` (the first 5 frames, animals01..05).
2. ``sml.protocols.export.export_fishyscapes(RUN, PRED_<m>, method=m, size=(720, 1280))`` (Road Anomaly
   is 1280 x 720): ``0000_anomaly.npy`` .. ``0004_anomaly.npy`` and ``_segmentation.npy``, numbered in
   frame order (``frame_ids.json``); sml's road-anomaly labels (0 / 1) of those frames saved as
   ``LABELS/<number>_labels.png``.
3. The driver above on ``LABELS`` and ``PRED_<m>`` for ``m`` = max_logit, msp: its ``auroc``, ``AP``,
   ``FPR@95%TPR``. It sorted the exported names as 0000 .. 0004.

Synthetic frames (``test_fishyscapes_synthetic_frames``): ``fishyscapes_frames(seed)`` below, saved
as ``<i:04d>_anomaly.npy`` / ``<i:04d>_labels.png`` and read by the same driver.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sml.metrics import AnomalyMetrics
from sml.metrics.components import ComponentMetrics
from sml.protocols import SmiycPixelMetric, headline

TOOL_COMMIT = "1c7804e0749686452eb02bbcfb81234e38795f8a"
FISHYSCAPES_COMMIT = "d78502babbe7cbe635b542604228b748d96b8687"      # hermannsblum/fishyscapes eval.py
BDL_BENCHMARK_COMMIT = "03773d621374ed10122866e64943df77ff8fbf50"    # hermannsblum/bdl-benchmark, same function

# the tool's numbers on sml's maps of the shared frames
SHARED = {
    ("anomaly", "max_logit"): dict(auroc=0.7900551730894673, ap=0.3919301068739869, fpr95=0.5870008432270656,
                                   best_f1=0.43022277414912374, best_f1_threshold=-4.92578125,
                                   siou=0.22707196584253542, ppv=0.1548482094515167, mean_f1=0.06324381798066009),
    ("anomaly", "msp"): dict(auroc=0.7329237923125546, ap=0.29515411149635795, fpr95=0.6304481507726942,
                             best_f1=0.3644984583073328, best_f1_threshold=-0.955078125,
                             siou=0.18576374282751812, ppv=0.1522053825495051, mean_f1=0.058326533258690666),
    ("obstacle", "max_logit"): dict(auroc=0.8872470619247304, ap=0.04624016415700179, fpr95=0.479478042956804,
                                    best_f1=0.10047736392473665, best_f1_threshold=-4.953125,
                                    siou=0.2225758460890326, ppv=0.050362097976600975, mean_f1=0.04115627783608308),
    ("obstacle", "msp"): dict(auroc=0.8060702787966654, ap=0.027009122665371532, fpr95=0.9091864565216368,
                              best_f1=0.06022623811987869, best_f1_threshold=-0.68359375,
                              siou=0.12301473778190775, ppv=0.04165402653011683, mean_f1=0.019292146613260966),
}

SYNTHETIC = {
    0: dict(auroc=0.7914341918200724, ap=0.4005961875217934, fpr95=0.5775061124694376,
            best_f1=0.46694966646452396, best_f1_threshold=1.2316875407963443),
    1: dict(auroc=0.8018335398233323, ap=0.40328666669346297, fpr95=0.5497147514262428,
            best_f1=0.4824996244554604, best_f1_threshold=1.1905036308746737),
}


def synthetic_frames(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Five float16 frames (1-D) with ties, a wide range and a frame without anomaly pixels."""
    rng = np.random.default_rng(seed)
    out = []
    for f in range(5):
        n = 1500 + 700 * f
        y = np.zeros(n, bool)
        y[: n // (3 + f)] = True
        s = rng.normal(size=n) + 1.5 * y
        if f == 1:
            s = np.round(s * 4) / 4
        if f == 3:
            s = s * 300.0
        if f == 4:
            y[:] = False
        out.append((s.astype(np.float16), y))
    return out


@pytest.mark.parametrize("seed", sorted(SYNTHETIC))
def test_synthetic_frames(seed: int) -> None:
    m = SmiycPixelMetric()
    for s, y in synthetic_frames(seed):
        m.update(s[None, :], y[None, :].astype(np.uint8))  # one 1 x n frame each
    r = m.compute()
    for k, v in SYNTHETIC[seed].items():
        assert r[k] == pytest.approx(v, abs=1e-12), k


def _run(shared: Path, out: Path, kind: str) -> Path:
    from sml.cli.main import main

    folder = {"smiyc-anomaly": "dataset_AnomalyTrack", "smiyc-obstacle": "dataset_ObstacleTrack"}[kind]
    assert main(["eval", "--model", "erfnet", "--weights", str(shared / "models/erfnet_cityscapes.pth"),
                 "--data", f"{kind}:{shared / 'data/smiyc' / folder}", "--method", "max_logit,msp",
                 "--save-maps", "hdf5", "--out", str(out)]) in (0, None)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("track", ["anomaly", "obstacle"])
def test_shared_smiyc_frames(shared: Path, tmp_path: Path, track: str) -> None:
    """sml's own HDF5 maps of the shared frames, scored by ``smiyc``, give the tool's numbers to 1e-6."""
    import h5py

    from sml.data.registry import open_dataset

    kind = f"smiyc-{track}"
    run = _run(shared, tmp_path / "run", kind)
    ds = open_dataset(kind, shared / "data/smiyc" / {"anomaly": "dataset_AnomalyTrack",
                                                      "obstacle": "dataset_ObstacleTrack"}[track])
    labels = [ds.load_labels(f) for f in ds.frames]
    for method in ("max_logit", "msp"):
        folder = next(p for p in (run / "anomaly_p" / method).iterdir() if p.is_dir())
        maps = []
        for f in ds.frames:
            with h5py.File(folder / f"{f.id}.hdf5", "r") as h:
                maps.append(h["value"][()])
            assert maps[-1].dtype == np.float16
        pix = SmiycPixelMetric()
        for a, y in zip(maps, labels):
            pix.update(a, y)
        r = pix.compute()
        comp = ComponentMetrics(track, pix.best_f1_threshold())
        for a, y in zip(maps, labels):
            comp.update(a, y)
        c = comp.compute()
        got = {**{k: r[k] for k in ("auroc", "ap", "fpr95", "best_f1", "best_f1_threshold")},
               **{k: c[k] for k in ("siou", "ppv", "mean_f1")}}
        for k, v in SHARED[(track, method)].items():
            assert got[k] == pytest.approx(v, abs=1e-6), (method, k)


# ----------------------------------------------------------------------------- Fishyscapes

# calculate_metrics_perpixAP on sml's exported maps of the first 5 shared Road Anomaly frames
FISHYSCAPES_SHARED = {
    "max_logit": dict(auroc=0.7215629672142504, ap=0.20066304141804592, fpr95=0.6057596244877551),
    "msp": dict(auroc=0.561345145344762, ap=0.11923162525396427, fpr95=0.8238768887291092),
}

FISHYSCAPES_SYNTHETIC = {
    0: dict(auroc=0.7817386156128738, ap=0.37041925295652073, fpr95=0.6468842729970327),
    1: dict(auroc=0.7838775078310402, ap=0.3739438944166099, fpr95=0.6707871104067618),
}


def fishyscapes_frames(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Five float32 40 x 60 frames: ties across classes, a wide range, no anomaly in one, void scored high."""
    rng = np.random.default_rng(seed)
    out = []
    for f in range(5):
        y = (rng.random((40, 60)) < 0.1 + 0.05 * f).astype(np.uint8)
        s = rng.normal(size=y.shape) + 1.3 * y
        if f == 1:
            s = np.round(s * 4) / 4
        if f == 2:
            s = s * 1e3
        if f == 3:
            y[:] = 0
        y[:3, :] = 255
        s[:3, :5] = 50.0
        out.append((s.astype(np.float32), y))
    return out


def _fishyscapes(frames: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    m = AnomalyMetrics()
    for s, y in frames:
        m.update(s, y)
    return headline("fishyscapes", m.compute())


@pytest.mark.parametrize("seed", sorted(FISHYSCAPES_SYNTHETIC))
def test_fishyscapes_synthetic_frames(seed: int) -> None:
    r = _fishyscapes(fishyscapes_frames(seed))
    assert r["protocol"] == "fishyscapes" and r["fpr95_convention"] == "threshold"
    for k, v in FISHYSCAPES_SYNTHETIC[seed].items():
        assert r[k] == pytest.approx(v, abs=1e-12), k
    if seed == 1:  # here the conventions differ: the headline is the official one, not the interpolation
        assert r["fpr95"] > r["fpr95_interpolated"]


@pytest.mark.slow
def test_shared_road_anomaly_fishyscapes(shared: Path, tmp_path: Path) -> None:
    """``sml eval --protocol fishyscapes`` on the shared frames and its exported maps give the official numbers."""
    import json

    from sml.cli.main import main
    from sml.data.registry import open_dataset
    from sml.protocols.export import export_fishyscapes

    run = tmp_path / "run"
    data = shared / "data/road_anomaly/RoadAnomaly_jpg"
    assert main(["eval", "--model", "erfnet", "--weights", str(shared / "models/erfnet_cityscapes.pth"),
                 "--data", f"road-anomaly:{data}", "--method", "max_logit,msp", "--limit", "5",
                 "--save-maps", "fishyscapes", "--protocol", "fishyscapes", "--out", str(run)]) in (0, None)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["protocol"] == "fishyscapes"
    ds = open_dataset(f"road-anomaly:{data}")
    labels = {f.id: ds.load_labels(f) for f in ds.frames[:5]}
    for method, want in FISHYSCAPES_SHARED.items():
        for k, v in want.items():
            assert metrics["methods"][method][k] == pytest.approx(v, abs=1e-6), (method, k)
        # the files the official code read: exported names, sorted by their number, in frame order
        out = tmp_path / method
        assert export_fishyscapes(run, out, method=method, size=(720, 1280)) == 5
        index = json.loads((out / "frame_ids.json").read_text())["frames"]
        numbers = sorted(index, key=int)
        assert [index[n] for n in numbers] == [f.id for f in ds.frames[:5]]
        r = _fishyscapes([(np.load(out / f"{n}_anomaly.npy"), labels[index[n]]) for n in numbers])
        for k, v in want.items():
            assert r[k] == pytest.approx(v, abs=1e-6), (method, k)
