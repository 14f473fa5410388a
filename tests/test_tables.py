"""The console tables (sml.utils.tables): the layouts the commands have always printed, character for character."""
from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np

from sml.utils.tables import (class_diagnostics_table, format_table, metrics_table, model_check_table, models_listing,
                              print_stats, stats_table)


def test_format_table_aligns_and_rules():
    assert format_table(["method", "AP %"], [["sml", "7.97"], ["max_logit", "21.65"]]) == (
        "method      AP %\n---------  -----\nsml         7.97\nmax_logit  21.65")
    assert format_table(["A", "B"], [["xx", "y"]], align="ll", rule=False) == "A   B\nxx  y"


def test_metrics_table_in_percent_with_the_frame_counts():
    metrics = {"dataset": "road-anomaly", "frames": 2, "frames_scored": 3, "model": "erfnet",
               "pixels": {"anomaly": 1234, "inlier": 5678},
               "methods": {"sml": {"auroc": 0.5, "ap": float("nan"), "fpr95": None}}}
    assert metrics_table(metrics) == (
        "road-anomaly: 2 labelled frames of 3, 1,234 anomaly / 5,678 inlier pixels, model erfnet\n"
        "method  AUROC %  AP %  FPR@95 %\n------  -------  ----  --------\nsml       50.00     -         -")


def test_stats_table_flags_empty_rare_and_unusable_classes():
    stats = SimpleNamespace(count=np.array([0.0, 5.0, 1.0, 5000.0]), mean=np.array([np.nan, 1.0, 2.0, 3.0]),
                            std=np.array([np.nan, 0.5, np.nan, 1.0]), class_names=["a", "b", "c", "d"],
                            usable=np.array([False, True, False, True]))
    table, warnings = stats_table(stats)
    assert table == ("id  class  pixels      %    mean     std\n--  -----  ------  -----  ------  ------  --------\n"
                     "0   a           0   0.00       -       -  EMPTY\n1   b           5   0.10  1.0000  0.5000  rare\n"
                     "2   c           1   0.02  2.0000       -  UNUSABLE\n3   d       5,000  99.88  3.0000  1.0000")
    assert [w.split(")")[0] for w in warnings] == ["class 0 (a", "class 1 (b", "class 2 (c"]
    out = io.StringIO()
    print_stats(stats, 4, "s.json", file=out)
    assert out.getvalue().endswith("statistics of 4 frames written to s.json\n")


def _box(median: float, pixels: int = 10) -> dict:
    return {"pixels": pixels, "median": median, "q1": median - 1, "q3": median + 1}


def test_class_diagnostics_table_rows():
    person = {"name": "person", "anomaly_share": 0.826, "anomaly_pixels": 753261, "inlier_pixels": 303184,
              "train_mean": 2.23, "train_std": 0.55,
              "max_logit": {"inlier": _box(4.4), "anomaly": _box(5.7)}}
    assert class_diagnostics_table([person]) == (   # no rule under the header
        "class   anomaly %  anomaly px  inlier px  train mean±std  inlier median [q1,q3]  anomaly median [q1,q3]  "
        "z(anomaly)\nperson       82.6     753,261    303,184       2.23±0.55          4.4 [3.4,5.4]           "
        "5.7 [4.7,6.7]       +6.31")


def test_models_listing_and_check():
    rows = [{"name": "erfnet", "kind": "architecture", "input_size": None, "classes": 19, "normalization": "none",
             "weights": "cached (/c/e.pth)"}]
    assert models_listing(rows) == ("NAME    KIND          INPUT (HxW)  CLASSES  NORM  WEIGHTS\n"
                                    "erfnet  architecture  native       19       none  cached")
    result = SimpleNamespace(frames=2, pixels=10, pixel_accuracy=0.5, miou=0.25, chance_accuracy=0.1,
                             chance_miou=0.05, swapped_miou=None, nonfinite_frames=0, swapped_nonfinite_frames=0,
                             per_class_iou={"road": 0.9}, miou_definition="mIoU is ...")
    assert model_check_table(SimpleNamespace(name="net", mean=None), "cityscapes:x", result).splitlines() == [
        "net on 2 labelled frames of cityscapes:x (10 pixels):",
        "  pixel accuracy 50.0%   mIoU 25.0%   (chance: 10.0% / 5.0%)",
        "    road           IoU 90.0%", "  (mIoU is ...)"]
