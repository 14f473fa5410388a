"""Pack a run directory's maps the way each benchmark's submission takes them.

SegmentMeIfYouCan: the tool stores and reads ``anomaly_p/<method>/<split
folder>/<frame-id>.hdf5`` (key ``value``, float16) under its ``DIR_OUTPUTS``;
the zip holds exactly that tree, so unpacking it into ``DIR_OUTPUTS`` lets the
tool's ``metric`` command read it. A split folder must hold the release's
complete frame list. Fishyscapes: ``<id>_anomaly.npy`` (float32, 1024 x 2048)
and ``<id>_segmentation.npy`` (uint8 Cityscapes train ids 0..18) per frame.
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Iterable

import numpy as np

from sml.errors import DataError, InputError
from sml.protocols.releases import ANOMALY_SPLITS, OBSTACLE_SCENES, OBSTACLE_SPLITS, obstacle_scene, select_split

__all__ = ["SMIYC_FOLDERS", "smiyc_folders", "check_smiyc_frames", "export_smiyc", "export_fishyscapes"]

#: folder names a run may use -> the tool's folder (sml's older kind names and the tool's own names)
SMIYC_FOLDERS = {
    "smiyc-anomaly": "AnomalyTrack-all", "AnomalyTrack-all": "AnomalyTrack-all",
    "smiyc-obstacle": "ObstacleTrack-all", "ObstacleTrack-all": "ObstacleTrack-all",
    "lost-and-found": "LostAndFound-test", "LostAndFound-test": "LostAndFound-test",
}
_LAF_ID = re.compile(r"^[0-9]{2}_.+_[0-9]{6}_[0-9]{6}$")
_LISTED = 8


def _listing(ids: Iterable[str]) -> str:
    ids = sorted(ids)
    more = f" ... and {len(ids) - _LISTED} more" if len(ids) > _LISTED else ""
    return ", ".join(ids[:_LISTED]) + more


def check_smiyc_frames(folder: str, ids: Iterable[str]) -> None:
    """Refuse (DataError) a frame list that is not the official one of the tool's ``folder``."""
    got = set(ids)
    if folder == "AnomalyTrack-all":
        want = set(ANOMALY_SPLITS["all"])
        missing, extra = want - got, got - want
        if missing or extra:
            parts = [f"{len(missing)} missing ({_listing(missing)})" if missing else "",
                     f"{len(extra)} not in the release ({_listing(extra)})" if extra else ""]
            raise DataError(f"AnomalyTrack-all needs the 110 frames of RoadAnomaly21 by their published names; "
                            f"this run has {len(got)}: {'; '.join(p for p in parts if p)}. Evaluate the complete "
                            "release (--data smiyc-anomaly:dataset_AnomalyTrack --split all) and export again.")
    elif folder == "ObstacleTrack-all":
        extra = {i for i in got if obstacle_scene(i) not in OBSTACLE_SCENES}
        short = []
        for split in ("test", "night", "snowstorm", "validation"):
            n = len(select_split("smiyc-obstacle", split, sorted(got))[0])
            if n != OBSTACLE_SPLITS[split][2]:
                short.append(f"{split} has {n} of {OBSTACLE_SPLITS[split][2]}")
        if extra or short:
            parts = ([f"{len(extra)} frames of no RoadObstacle21 scene ({_listing(extra)})"] if extra else []) + short
            raise DataError(f"ObstacleTrack-all needs every RoadObstacle21 frame by its published name; this run's "
                            f"{len(got)} frames do not match: {'; '.join(parts)}. Evaluate the complete release "
                            "(--data smiyc-obstacle:dataset_ObstacleTrack --split all) and export again.")
    elif folder == "LostAndFound-test":
        bad = {i for i in got if not _LAF_ID.match(i)}
        if bad or len(got) != 1203:
            raise DataError(f"LostAndFound-test needs the 1203 frames of the Lost and Found test split by their "
                            f"published ids; this run has {len(got)}"
                            + (f", {len(bad)} of them not Lost and Found ids ({_listing(bad)})" if bad else "")
                            + ". Evaluate --data lost-and-found:PATH --split test on the complete release.")
    else:
        raise InputError(f"no SegmentMeIfYouCan frame list for folder {folder!r}")


def smiyc_folders(run_dir: Path) -> dict[str, dict[str, Path]]:
    """``{method: {tool folder: path in the run}}`` for every HDF5 map folder under ``run_dir/anomaly_p``."""
    root = Path(run_dir) / "anomaly_p"
    if not root.is_dir():
        raise InputError(f"{run_dir} has no anomaly_p/ folder: run `sml eval ... --save-maps hdf5 --out "
                         f"{run_dir}` first (SegmentMeIfYouCan submissions are its HDF5 maps)")
    out: dict[str, dict[str, Path]] = {}
    for mdir in sorted(p for p in root.iterdir() if p.is_dir()):
        for ddir in sorted(p for p in mdir.iterdir() if p.is_dir()):
            name = SMIYC_FOLDERS.get(ddir.name)
            if name is None:
                continue
            if name in out.get(mdir.name, {}):
                raise DataError(f"{mdir} holds both {out[mdir.name][name].name}/ and {ddir.name}/ for {name}; "
                                "keep one of them")
            out.setdefault(mdir.name, {})[name] = ddir
    if not out:
        raise InputError(f"no SegmentMeIfYouCan map folder under {root} (expected anomaly_p/<method>/"
                         f"{{{', '.join(sorted(set(SMIYC_FOLDERS.values())))}}}/)")
    return out


def _check_hdf5(path: Path) -> None:
    import h5py

    try:
        with h5py.File(path, "r") as h:
            v = h["value"]
            if v.dtype != np.float16 or v.ndim != 2:
                raise DataError(f"{path}: 'value' is {v.dtype} of shape {v.shape}; the benchmark takes float16 "
                                "H x W maps (write them with sml eval --save-maps hdf5)")
    except (OSError, KeyError) as exc:
        raise DataError(f"{path} is not a readable SegmentMeIfYouCan map ({exc}); re-run the evaluation") from None


def export_smiyc(run_dir: str | Path, out_zip: str | Path, method: str | None = None,
                 folders: Iterable[str] | None = None) -> dict[str, int]:
    """Zip ``anomaly_p/<method>/<tool folder>/<id>.hdf5`` of a run; returns frames per folder.

    ``method`` may be omitted when the run has one; ``folders`` limits the export
    to some of the tool's folders (default: every one present).
    """
    run_dir, out_zip = Path(run_dir), Path(out_zip)
    found = smiyc_folders(run_dir)
    if method is None:
        if len(found) != 1:
            raise InputError(f"{run_dir} has maps of several methods ({', '.join(found)}); a submission is one "
                             "method: choose it with --method")
        method = next(iter(found))
    if method not in found:
        raise InputError(f"no SegmentMeIfYouCan maps of method {method!r} in {run_dir} (found: {', '.join(found)})")
    chosen = found[method]
    if folders is not None:
        wanted = list(folders)
        unknown = [f for f in wanted if f not in chosen]
        if unknown:
            raise InputError(f"{run_dir} has no maps for {', '.join(unknown)} (found: {', '.join(chosen)})")
        chosen = {f: chosen[f] for f in wanted}
    files: dict[str, list[Path]] = {}
    for name, d in chosen.items():
        maps = sorted(d.glob("*.hdf5"))
        check_smiyc_frames(name, [p.stem for p in maps])
        for p in maps:
            _check_hdf5(p)
        files[name] = maps
    if out_zip.suffix.lower() != ".zip":
        raise InputError(f"{out_zip}: the submission is a .zip file; name it OUT.zip")
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_zip.with_name(out_zip.name + ".part")
    # the maps are gzip-compressed HDF5 already: stored, not deflated again
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
        for name, maps in files.items():
            for p in maps:
                z.write(p, f"anomaly_p/{method}/{name}/{p.name}")
    tmp.replace(out_zip)
    return {name: len(maps) for name, maps in files.items()}


def export_fishyscapes(run_dir: str | Path, out_dir: str | Path, method: str | None = None,
                       size: tuple[int, int] = (1024, 2048)) -> int:
    """Copy a run's Fishyscapes maps to ``out_dir`` as the submission expects; returns the frame count.

    Reads ``fishyscapes/<method>/<id>_anomaly.npy`` and ``<id>_segmentation.npy``
    (written by ``sml eval --save-maps fishyscapes``); checks ``size`` (H, W),
    float32 scores and train ids 0..18.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    root = run_dir / "fishyscapes"
    if not root.is_dir():
        raise InputError(f"{run_dir} has no fishyscapes/ folder: run `sml eval ... --save-maps fishyscapes --out "
                         f"{run_dir}` (it writes <id>_anomaly.npy and the network's <id>_segmentation.npy)")
    methods = sorted(p.name for p in root.iterdir() if p.is_dir())
    if method is None:
        if len(methods) != 1:
            raise InputError(f"{root} has maps of several methods ({', '.join(methods)}); choose one with --method")
        method = methods[0]
    src = root / method
    if not src.is_dir():
        raise InputError(f"no Fishyscapes maps of method {method!r} in {root} (found: {', '.join(methods)})")
    anomaly = sorted(src.glob("*_anomaly.npy"))
    if not anomaly:
        raise DataError(f"{src} holds no <id>_anomaly.npy files")
    no_seg = [p for p in anomaly if not p.with_name(p.name[: -len("_anomaly.npy")] + "_segmentation.npy").is_file()]
    if no_seg:
        raise DataError(f"the run has no segmentation for {len(no_seg)} of {len(anomaly)} frames "
                        f"({_listing(p.name[: -len('_anomaly.npy')] for p in no_seg)}): a Fishyscapes submission "
                        "needs <id>_segmentation.npy (train ids) beside every <id>_anomaly.npy. Re-run sml eval with "
                        "--save-maps fishyscapes, which saves the network's prediction.")
    from sml.utils import atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    for p in anomaly:
        fid = p.name[: -len("_anomaly.npy")]
        a = np.load(p)
        s = np.load(p.with_name(f"{fid}_segmentation.npy"))
        if a.shape != size or s.shape != size:
            raise DataError(f"frame {fid}: anomaly {a.shape} / segmentation {s.shape}, the submission expects "
                            f"{size[0]} x {size[1]} (H x W, the Cityscapes resolution) for both")
        if not np.isfinite(a).all():
            raise DataError(f"frame {fid}: the anomaly map has NaN or infinite values")
        if s.size and (s.min() < 0 or s.max() > 18):
            raise DataError(f"frame {fid}: segmentation values {int(s.min())}..{int(s.max())}; the submission takes "
                            "Cityscapes train ids 0..18")
        atomic.save_npy(out_dir / f"{fid}_anomaly.npy", a.astype(np.float32))
        atomic.save_npy(out_dir / f"{fid}_segmentation.npy", s.astype(np.uint8))
    return len(anomaly)
