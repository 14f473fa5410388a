"""Restored state checked against the frames it claims, and results checked before they are written.

A resume chunk says which frames it holds; every count in it must be one those
frames can give: a frame's labelled pixels are at most its pixels, each
method's pixel metric counts exactly the pixels the frame records say, the
diagnostics the same pixels again, a statistics partial at most its frame's
pixels. The objects' own ``load_state_dict`` refuse states that are
inconsistent in themselves (NaN means, negative sums of squares, histograms
that do not add up); these checks tie them to the frames. Before
``metrics.json`` or ``stats.json`` is written the totals are checked once more,
so nothing inconsistent is ever written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sml.errors import InputError

__all__ = ["FramePixels", "check_stats_partials", "check_eval_chunk", "check_eval_results", "check_stats_total"]


class FramePixels:
    """Pixels (height x width) of a data set's frames, read from the image headers once (labels and
    logits have the image's size)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self._cache: dict[int, int] = {}

    def __call__(self, i: int) -> int:
        if i not in self._cache:
            from sml.data.io import image_size

            w, h = image_size(self.dataset.frames[i].image_path)
            self._cache[i] = int(w) * int(h)
        return self._cache[i]


def _refuse(path: Path | str, problem: str, fix: str) -> None:
    raise InputError(f"the resume chunk {path} {problem}; it was damaged or edited, so its frames cannot be "
                     f"counted. {fix}")


def _claimed(path: Path | str, indices: set[int], claimed: list[int], fix: str) -> None:
    outside = [i for i in claimed if i not in indices]
    if outside:
        _refuse(path, f"claims frame index {outside[0]}, which is not among this run's "
                      f"{len(indices)} frames", fix)


def check_stats_partials(partials: dict[int, Any], path: Path | str, dataset: Any, indices: set[int],
                         class_names: list[str] | None, pixels: FramePixels, fix: str) -> None:
    """Refuse per-frame statistics that claim frames outside the run, other classes, or more pixels than their frame."""
    _claimed(path, indices, list(partials), fix)
    for i, part in partials.items():
        if class_names is not None and list(part.class_names) != list(class_names):
            _refuse(path, f"holds statistics of other classes for frame {dataset.frames[i].id}", fix)
        if not part.has_counts:
            _refuse(path, f"holds statistics without pixel counts for frame {dataset.frames[i].id}", fix)
        if part.total > pixels(i):
            _refuse(path, f"counts {part.total:.0f} pixels for frame {dataset.frames[i].id}, which has "
                          f"{pixels(i)}", fix)


def metric_counts(metric: Any) -> tuple[int, int, int, int]:
    """``(anomaly, inlier, ignored, frames)`` a pixel metric has counted (exact or the binned protocol's)."""
    for names in (("n_pos", "n_neg", "n_ignored", "images"), ("num_pos", "num_neg", "ignored", "frames")):
        if all(hasattr(metric, n) for n in names):
            return tuple(int(getattr(metric, n)) for n in names)  # type: ignore[return-value]
    r = metric.compute()
    return int(r["pixels"]["anomaly"]), int(r["pixels"]["inlier"]), int(r.get("ignored", 0)), int(r["images"])


def _record(path: Path | str, i: int, rec: Any, frame: Any, methods: list[str], pixels: FramePixels,
            fix: str) -> tuple[int, int] | None:
    """A frame record checked against its frame: its ``(anomaly, inlier)`` pixels, None for an unlabelled frame."""
    if not isinstance(rec, dict) or rec.get("id") != frame.id:
        _refuse(path, f"holds a record for frame index {i} that is not frame {frame.id}", fix)
    if not isinstance(rec.get("methods"), dict) or set(rec["methods"]) != set(methods):
        _refuse(path, f"records other methods than this run's for frame {frame.id}", fix)
    px = rec.get("pixels")
    if (px is None) != (frame.label_path is None):
        _refuse(path, f"records frame {frame.id} as {'un' if px is None else ''}labelled", fix)
    if px is None:
        return None
    a, n = (px.get("anomaly"), px.get("inlier")) if isinstance(px, dict) else (None, None)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (a, n)) or a + n > pixels(i):
        _refuse(path, f"records {a} anomaly and {n} inlier pixels for frame {frame.id}, which has {pixels(i)} "
                      f"pixels", fix)
    return a, n


def _record_pixels(path: Path | str, recs: dict[int, dict[str, Any]], dataset: Any, methods: list[str],
                   pixels: FramePixels, fix: str) -> tuple[int, int, int, int]:
    """Each record checked against its frame; the totals ``(anomaly, inlier, ignored, labelled frames)``."""
    tot = [0, 0, 0, 0]
    for i, rec in recs.items():
        px = _record(path, i, rec, dataset.frames[i], methods, pixels, fix)
        if px is not None:
            a, n = px
            tot = [tot[0] + a, tot[1] + n, tot[2] + pixels(i) - a - n, tot[3] + 1]
    return tot[0], tot[1], tot[2], tot[3]


def check_eval_chunk(path: Path | str, recs: dict[int, dict[str, Any]], period: Any, dataset: Any,
                     indices: set[int], methods: list[str], fresh_diagnostics: Any, pixels: FramePixels,
                     fix: str) -> None:
    """Refuse an eval chunk whose records, pixel metrics or diagnostics do not count exactly its frames' pixels."""
    _claimed(path, indices, list(recs), fix)
    want = _record_pixels(path, recs, dataset, methods, pixels, fix)
    for m, metric in period.metrics.items():
        got = metric_counts(metric)
        if got != want:
            _refuse(path, f"counts (anomaly, inlier, ignored pixels, frames) = {got} for method {m}, but its "
                          f"frames have {want}", fix)
    diag = period.diagnostics
    if diag is None:
        return
    got = (int(diag.anomaly_pixels.sum()), int(diag.inlier_pixels.sum()), int(diag.ignored), int(diag.frames))
    if got != want:
        _refuse(path, f"holds diagnostics of (anomaly, inlier, ignored pixels, frames) = {got}, but its frames "
                      f"have {want}", fix)
    same = (diag.class_names == fresh_diagnostics.class_names and diag.sml == fresh_diagnostics.sml
            and all(np.array_equal(getattr(diag, k), getattr(fresh_diagnostics, k), equal_nan=True)
                    for k in ("train_mean", "train_std", "train_count")))
    if not same:
        _refuse(path, "holds diagnostics of other classes or other training statistics than this run's", fix)


def check_eval_results(results: dict[str, dict[str, Any]], frames: list[dict[str, Any]], dataset: Any,
                       indices: list[int], pixels: FramePixels, out: Path, fix: str) -> None:
    """Before metrics.json is written: the frame records, every method's counts and the frames agree."""
    labelled = [(i, f) for i, f in zip(indices, frames) if f.get("pixels")]
    anomaly = sum(f["pixels"]["anomaly"] for _, f in labelled)
    inlier = sum(f["pixels"]["inlier"] for _, f in labelled)
    total = sum(pixels(i) for i, _ in labelled)
    problems = []
    if anomaly + inlier > total:
        problems.append(f"the frames record {anomaly} anomaly and {inlier} inlier pixels, more than the "
                        f"{total} pixels of the {len(labelled)} labelled frames")
    for m, r in results.items():
        px = r.get("pixels") or {}
        got = (px.get("anomaly"), px.get("inlier"), r.get("images", len(labelled)))
        if got != (anomaly, inlier, len(labelled)):
            problems.append(f"method {m} counted (anomaly, inlier pixels, frames) = {got}, the frames "
                            f"{(anomaly, inlier, len(labelled))}")
    if problems:
        raise InputError(f"refusing to write {out / 'metrics.json'}: {'; '.join(problems[:3])}. The restored "
                         f"partial state was inconsistent. {fix}")


def check_stats_total(stats: Any, indices: list[int], pixels: FramePixels, out: Any, fix: str) -> None:
    """Before stats.json is written: the statistics count at most the frames' pixels."""
    total = sum(pixels(i) for i in indices)
    if stats.has_counts and stats.total > total:
        raise InputError(f"refusing to write {out}: the statistics count {stats.total:.0f} pixels, more than the "
                         f"{total} pixels of their {len(indices)} frames. The restored partial state was "
                         f"inconsistent. {fix}")
