"""``sml predict``: anomaly maps and colour overlays for your own images, folders and videos.

For each input image ``NAME`` and each method ``M`` it writes
``OUT/M/NAME.npy`` (float32 score, higher = more anomalous, at the image's
size), ``OUT/M/NAME_heatmap.png`` and ``OUT/M/NAME_overlay.png``. A video
``CLIP.mp4`` gives ``OUT/M/CLIP/000000.npy`` ... per processed frame plus
``OUT/M/CLIP_overlay.mp4`` (needs OpenCV: ``pip install opencv-python-headless``).

Colours: each image is coloured over its own 1st-99th percentile range unless
``vmin``/``vmax`` fix one range for every frame (use that to compare frames).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from sml.errors import InputError
from sml.pipelines import common
from sml.scores.scorers import build_scorers
from sml.utils import atomic, distributed
from sml.utils.device import to_host
from sml.utils.progress import progress
from sml.utils.run_folder import RunFolder

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass
class PredictItem:
    """One unit of work: an image file, or a video file."""

    path: Path
    name: str
    video: bool = False


@dataclass
class PredictRun:
    """What :func:`predict_files` wrote."""

    images: int = 0
    video_frames: int = 0
    files: list[Path] = field(default_factory=list)


def collect_inputs(inputs: Sequence[str | os.PathLike]) -> list[PredictItem]:
    """Expand files and folders (images and videos inside, recursively, sorted) into work items."""
    items: list[PredictItem] = []
    for raw in inputs:
        p = Path(raw).expanduser()
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith(".")
                           and q.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
            if not found:
                raise InputError(f"folder {p} holds no images ({', '.join(IMAGE_EXTENSIONS)}) or videos")
            for q in found:
                rel = q.relative_to(p).with_suffix("")
                items.append(PredictItem(q, "__".join(rel.parts), q.suffix.lower() in VIDEO_EXTENSIONS))
        elif p.is_file():
            suffix = p.suffix.lower()
            if suffix not in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS:
                raise InputError(f"{p}: unknown file type {suffix!r}; give images ({', '.join(IMAGE_EXTENSIONS)}) "
                                 f"or videos ({', '.join(VIDEO_EXTENSIONS)})")
            items.append(PredictItem(p, p.stem, suffix in VIDEO_EXTENSIONS))
        else:
            raise InputError(f"input {p} does not exist; give image files, folders or videos")
    names = [i.name for i in items]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"several inputs give the output name(s) {', '.join(dup[:5])}; rename them or "
                         f"predict them in separate runs")
    return items


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise InputError("video input needs OpenCV, which is not installed: pip install "
                         "opencv-python-headless (or 'standardized-max-logits[video]'), or extract the "
                         "frames as images first (e.g. ffmpeg -i clip.mp4 frames/%06d.png)") from None
    return cv2


def _video_frames(path: Path, every: int) -> Iterator[tuple[int, np.ndarray, float]]:
    cv2 = _cv2()
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise InputError(f"cannot open video {path} (unsupported codec or not a video)")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 25.0)
    try:
        i = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if i % every == 0:
                yield i, np.ascontiguousarray(bgr[:, :, ::-1]), fps
            i += 1
    finally:
        cap.release()


def _colour(image: np.ndarray, anomaly: np.ndarray, vmin: float | None, vmax: float | None,
            alpha: float, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Heatmap and overlay, each with a colour bar of the score range and the method's name below it."""
    from sml.report import heatmap, overlay

    return (heatmap(anomaly, vmin, vmax, colour_bar=True, label=method),
            overlay(image, anomaly, alpha=alpha, vmin=vmin, vmax=vmax, colour_bar=True, label=method))


def _save_png(path: Path, rgb: np.ndarray) -> None:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    atomic.write_bytes(path, buf.getvalue())


def predict_files(
    model: Any,
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    methods: Sequence[str] = ("sml",),
    *,
    stats: Any = None,
    sml_settings: dict[str, Any] | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    alpha: float = 0.6,
    every: int = 1,
    save_npy: bool = True,
    show_progress: bool = True,
    stats_path: str | os.PathLike | None = None,
    stats_from_other_network: bool = False,
    method_settings: dict[str, dict[str, Any]] | None = None,
) -> PredictRun:
    """Score images / folders / videos with ``methods`` and write maps and overlays under ``out``.

    ``method_settings``: other methods' settings by name (``{"gen": {"gamma": 0.2}}``, see
    :func:`sml.scores.build_scorers`); every method's map of an image comes from one forward pass.

    ``stats`` must belong to ``model`` (:func:`sml.pipelines.pairing.check_pairing`, before any image is
    read); with statistics, ``out/predict.json`` records the network, the statistics and their pairing.
    """
    from sml.data import read_image
    from sml.pipelines.pairing import check_pairing

    if every < 1:
        raise InputError(f"--every must be at least 1 (got {every})")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"--alpha must be between 0 (image only) and 1 (heatmap only), got {alpha}")
    items = collect_inputs(inputs)
    scorers = build_scorers(list(methods), stats, sml_settings or {}, model_kind=getattr(model, "kind", "logits"),
                            settings=method_settings, num_classes=getattr(model, "num_classes", None))
    job = _Job(model, scorers, Path(out), vmin, vmax, alpha, save_npy)
    pairing = check_pairing(model, stats, stats_path, stats_from_other_network)
    images = [it for it in items if not it.video]
    videos = [it for it in items if it.video]
    if videos:
        _cv2()  # fail before any work when OpenCV is missing
    planned = [f"{m}/{it.name}{suffix}" for it in images for m in job.scorers
               for suffix in ((".npy",) if save_npy else ()) + ("_heatmap.png", "_overlay.png")]
    planned += [RECORD] if pairing is not None else []
    with RunFolder(out, "predict", expected=planned):  # only files that sml wrote there are ever replaced
        if pairing is not None:
            _write_record(Path(out), model, methods, stats_path, pairing)
        for it in progress(distributed.shard(images), total=len(images), desc="predict", unit="image",
                           disable=None if show_progress else True):
            job.process(read_image(it.path), Path(it.name))
            job.run.images += 1
        for it in distributed.shard(videos):
            _predict_video(job, it, every, show_progress)
    return job.run


RECORD = "predict.json"
RECORD_FORMAT = "sml-predict/1"


def _write_record(out: Path, model: Any, methods: Sequence[str], stats_path: Any, pairing: dict[str, Any]) -> None:
    """``out/predict.json``: which network and statistics made the maps, and how they were paired (rank 0)."""
    if distributed.is_main():  # inside the run folder, which replaces only a record sml wrote
        atomic.write_json(out / RECORD, {"format": RECORD_FORMAT, "model": common.model_name(model),
                                 "network": pairing["network"], "stats": None if stats_path is None else
                                 str(stats_path), "methods": list(methods), "stats_pairing": pairing})


@dataclass
class _Job:
    """What every image of a :func:`predict_files` call shares, and what it wrote so far."""

    model: Any
    scorers: dict[str, Any]
    out: Path
    vmin: float | None
    vmax: float | None
    alpha: float
    save_npy: bool
    run: PredictRun = field(default_factory=PredictRun)

    def process(self, image: np.ndarray, stem: Path) -> dict[str, np.ndarray]:
        """Maps, heatmaps and overlays of one image for every method; returns the overlays."""
        from sml.scores import context_for

        output = common.forward(self.model, image, image.shape[:2], whole=True)
        overlays = {}
        with torch.inference_mode():
            ctx = context_for(output)  # one forward pass, what the methods share computed once
            for m, scorer in self.scorers.items():
                amap = to_host(scorer.score_context(ctx)[0].float())  # written: the map crosses whole
                target = self.out / m / stem
                if self.save_npy:
                    atomic.save_npy(target.with_name(target.name + ".npy"), amap)
                    self.run.files.append(target.with_name(target.name + ".npy"))
                hm, ov = _colour(image, amap, self.vmin, self.vmax, self.alpha, m)
                _save_png(target.with_name(target.name + "_heatmap.png"), hm)
                _save_png(target.with_name(target.name + "_overlay.png"), ov)
                self.run.files += [target.with_name(target.name + "_heatmap.png"),
                                   target.with_name(target.name + "_overlay.png")]
                overlays[m] = ov
        return overlays


def _predict_video(job: _Job, it: PredictItem, every: int, show_progress: bool) -> None:
    """Every ``every``-th frame of a video through ``job``, plus one overlay video per method."""
    writers: dict[str, Any] = {}
    tmp: dict[str, Path] = {}
    cv2 = _cv2()
    done = False
    try:
        for idx, frame, fps in progress(_video_frames(it.path, every), desc=it.path.name, unit="frame",
                                        disable=None if show_progress else True):
            overlays = job.process(frame, Path(it.name) / f"{idx:06d}")
            job.run.video_frames += 1
            for m, ov in overlays.items():
                if m not in writers:
                    final = job.out / m / f"{it.name}_overlay.mp4"
                    atomic.check_guards(final)  # the encoder writes itself: the run folder checks the name first
                    atomic.make_dirs(final.parent)
                    tmp[m] = final.with_name(f".{final.stem}.tmp.mp4")
                    # the frame size is the overlay's: taller than the video by the colour bar
                    writers[m] = cv2.VideoWriter(str(tmp[m]), cv2.VideoWriter_fourcc(*"mp4v"),
                                                 fps / every, (ov.shape[1], ov.shape[0]))
                writers[m].write(np.ascontiguousarray(ov[:, :, ::-1]))
        done = True
    finally:
        for w in writers.values():
            w.release()
        if not done:  # nothing half-written is left behind
            for t in tmp.values():
                t.unlink(missing_ok=True)
    for m, t in tmp.items():  # the video appears complete or not at all
        final = job.out / m / f"{it.name}_overlay.mp4"
        try:
            os.replace(t, final)
        except OSError as exc:
            t.unlink(missing_ok=True)
            raise atomic.output_error(final, exc) from None
        job.run.files.append(final)
