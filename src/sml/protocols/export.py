"""Pack a run directory's maps the way each benchmark's submission takes them.

SegmentMeIfYouCan: the tool stores and reads ``anomaly_p/<method>/<split
folder>/<frame-id>.hdf5`` (key ``value``, float16) under its ``DIR_OUTPUTS``;
the zip holds exactly that tree, so unpacking it into ``DIR_OUTPUTS`` lets the
tool's ``metric`` command read it. A split folder must hold the release's
complete frame list.

Fishyscapes: the official validation script (github hermannsblum/fishyscapes,
``eval.py``) lists ``*_anomaly.npy`` and ``*_segmentation.npy``, sorts each list
by ``int(name.split('_')[0])`` and pairs them with the ``<n>_labels.png`` files
in that order. The export writes ``<DDDD>_anomaly.npy`` (float32) and
``<DDDD>_segmentation.npy`` (uint8 Cityscapes train ids 0..18), 1024 x 2048,
numbered by the release's own four-digit numbers where the frame names carry
them and else 0000, 0001, ... in sml's frame order, plus ``frame_ids.json``
(number -> the run's frame name).

Maps are read without pickle and refused (:class:`DataError`, naming the file)
when damaged, of the wrong dtype or shape, or not finite. Every export is built
under a temporary name and renamed into place once complete; an existing output
is replaced only with ``overwrite`` and only when ``sml export`` wrote it.
"""
from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from sml.errors import DataError, InputError, OutputError
from sml.data.releases import ANOMALY_SPLITS, OBSTACLE_SCENES, OBSTACLE_SPLITS, obstacle_scene, select_split
from sml.utils import atomic
from sml.utils.run_layout import MAP_FOLDERS

__all__ = ["SMIYC_FOLDERS", "FISHYSCAPES_INDEX", "smiyc_folders", "check_smiyc_frames", "export_smiyc",
           "export_fishyscapes", "fishyscapes_numbers"]

#: folder names a run may use -> the tool's folder (sml's older kind names and the tool's own names)
SMIYC_FOLDERS = {
    "smiyc-anomaly": "AnomalyTrack-all", "AnomalyTrack-all": "AnomalyTrack-all",
    "smiyc-obstacle": "ObstacleTrack-all", "ObstacleTrack-all": "ObstacleTrack-all",
    "lost-and-found": "LostAndFound-test", "LostAndFound-test": "LostAndFound-test",
}
#: the Fishyscapes export's file of number -> frame name (also what marks a folder as sml's export)
FISHYSCAPES_INDEX = "frame_ids.json"
_SMIYC_COMMENT = b"sml export smiyc"          # the zip comment that marks a zip as sml's export
_FISHY_WRITER = "sml export fishyscapes"
_FISHY_FILE = re.compile(r"^[0-9]+_(anomaly|segmentation)\.npy$")
_RELEASE_NUMBER = re.compile(r"^([0-9]{4})_")  # the release's names: 0000_04_Maurener_Weg_8_000000_000030
_LAF_ID = re.compile(r"^[0-9]{2}_.+_[0-9]{6}_[0-9]{6}$")
_LISTED = 8


def _listing(ids: Iterable[str]) -> str:
    ids = sorted(ids)
    more = f" ... and {len(ids) - _LISTED} more" if len(ids) > _LISTED else ""
    return ", ".join(ids[:_LISTED]) + more


# ----------------------------------------------------------------------------- SegmentMeIfYouCan frame lists

def _anomaly_track_problem(got: set[str]) -> str | None:
    want = set(ANOMALY_SPLITS["all"])
    missing, extra = want - got, got - want
    if not (missing or extra):
        return None
    parts = [f"{len(missing)} missing ({_listing(missing)})" if missing else "",
             f"{len(extra)} not in the release ({_listing(extra)})" if extra else ""]
    return (f"AnomalyTrack-all needs the 110 frames of RoadAnomaly21 by their published names; "
            f"this run has {len(got)}: {'; '.join(p for p in parts if p)}. Evaluate the complete "
            "release (--data smiyc-anomaly:dataset_AnomalyTrack --split all) and export again.")


def _obstacle_track_problem(got: set[str]) -> str | None:
    extra = {i for i in got if obstacle_scene(i) not in OBSTACLE_SCENES}
    short = []
    for split in ("test", "night", "snowstorm", "validation"):
        n = len(select_split("smiyc-obstacle", split, sorted(got))[0])
        if n != OBSTACLE_SPLITS[split][2]:
            short.append(f"{split} has {n} of {OBSTACLE_SPLITS[split][2]}")
    if not (extra or short):
        return None
    parts = ([f"{len(extra)} frames of no RoadObstacle21 scene ({_listing(extra)})"] if extra else []) + short
    return (f"ObstacleTrack-all needs every RoadObstacle21 frame by its published name; this run's "
            f"{len(got)} frames do not match: {'; '.join(parts)}. Evaluate the complete release "
            "(--data smiyc-obstacle:dataset_ObstacleTrack --split all) and export again.")


def _laf_test_problem(got: set[str]) -> str | None:
    bad = {i for i in got if not _LAF_ID.match(i)}
    if not bad and len(got) == 1203:
        return None
    return (f"LostAndFound-test needs the 1203 frames of the Lost and Found test split by their "
            f"published ids; this run has {len(got)}"
            + (f", {len(bad)} of them not Lost and Found ids ({_listing(bad)})" if bad else "")
            + ". Evaluate --data lost-and-found:PATH --split test on the complete release.")


_FRAME_CHECKS: dict[str, Callable[[set[str]], str | None]] = {
    "AnomalyTrack-all": _anomaly_track_problem,
    "ObstacleTrack-all": _obstacle_track_problem,
    "LostAndFound-test": _laf_test_problem,
}


def check_smiyc_frames(folder: str, ids: Iterable[str]) -> None:
    """Refuse (DataError) a frame list that is not the official one of the tool's ``folder``."""
    check = _FRAME_CHECKS.get(folder)
    if check is None:
        raise InputError(f"no SegmentMeIfYouCan frame list for folder {folder!r}")
    problem = check(set(ids))
    if problem:
        raise DataError(problem)


def smiyc_folders(run_dir: Path) -> dict[str, dict[str, Path]]:
    """``{method: {tool folder: path in the run}}`` for every HDF5 map folder under ``run_dir/anomaly_p``."""
    root = Path(run_dir) / MAP_FOLDERS["hdf5"]
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


# ----------------------------------------------------------------------------- reading maps

def _refuse_non_finite(a: np.ndarray, path: Path, fix: str) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        nan = int(np.isnan(a).sum())
        raise DataError(f"{path}: the map has {nan} NaN and {int(bad.sum()) - nan} infinite score(s); a "
                        f"submission takes finite scores only. {fix}")


def _hdf5_value(path: Path) -> np.ndarray | str:
    """The float16 H x W map in ``path`` (key ``value``), or why it is not one."""
    import h5py

    try:
        with h5py.File(path, "r") as h:
            v = h.get("value")
            if not isinstance(v, h5py.Dataset):
                return "it holds no dataset 'value'"
            if v.dtype != np.float16 or v.ndim != 2 or v.size == 0:
                return f"'value' is {v.dtype} of shape {v.shape}; the benchmark takes float16 H x W maps"
            return v[()]
    except (OSError, ValueError, TypeError, RuntimeError) as exc:  # truncated, not HDF5, unreadable chunks
        return f"it cannot be read as HDF5 ({exc})"


def _check_smiyc_map(path: Path) -> None:
    fix = "Write the map again with `sml eval ... --save-maps hdf5`, then export."
    value = _hdf5_value(path)
    if isinstance(value, str):
        raise DataError(f"{path} is not a usable SegmentMeIfYouCan map: {value}. {fix}")
    # float16 overflows to inf above 65504: such a map is refused as well
    _refuse_non_finite(value, path, fix)


def _load_npy(path: Path) -> np.ndarray:
    """A plain ``.npy`` array, read without pickle; :class:`DataError` naming the file otherwise."""
    fix = "Write the run's maps again with `sml eval ... --save-maps fishyscapes`, then export."
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:  # object arrays, truncated data or header, not .npy
        raise DataError(f"{path} is not a readable plain .npy array ({exc}). {fix}") from None
    if not isinstance(a, np.ndarray):  # an .npz archive under an .npy name
        a.close()
        raise DataError(f"{path} is an .npz archive, not one .npy array. {fix}")
    return a


def _fishy_frame(src: Path, name: str, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One frame's (float32 anomaly, uint8 train ids), checked as the submission takes them."""
    a_path, s_path = src / f"{name}_anomaly.npy", src / f"{name}_segmentation.npy"
    a, s = _load_npy(a_path), _load_npy(s_path)
    want = f"{size[0]} x {size[1]} (H x W, the Cityscapes resolution)"
    if a.dtype.kind != "f" or a.shape != size:
        raise DataError(f"{a_path} holds {a.dtype} of shape {a.shape}; the submission takes float scores of "
                        f"{want}. Export the maps `sml eval --save-maps fishyscapes` wrote for this data set.")
    if s.dtype.kind not in "iu" or s.shape != size:
        raise DataError(f"{s_path} holds {s.dtype} of shape {s.shape}; the submission takes integer train ids "
                        f"of {want}. Export the maps `sml eval --save-maps fishyscapes` wrote for this data set.")
    with np.errstate(over="ignore"):
        a32 = a.astype(np.float32)
    _refuse_non_finite(a32, a_path, f"Frame {name} cannot be submitted: evaluate again (sml eval refuses NaN "
                                    "logits) or find what wrote this map.")
    if s.size and (s.min() < 0 or s.max() > 18):
        raise DataError(f"{s_path}: segmentation values {int(s.min())}..{int(s.max())}; the submission takes "
                        "Cityscapes train ids 0..18 (a 19-class Cityscapes network's prediction)")
    return a32, s.astype(np.uint8)


# ----------------------------------------------------------------------------- existing outputs

def _refuse_existing(out: Path, ours: bool, overwrite: bool, benchmark: str) -> None:
    """Refuse to replace ``out`` unless asked to (``overwrite``) and ``sml export`` wrote it (``ours``)."""
    if not overwrite:
        raise OutputError(f"{out} exists; pass --overwrite to replace a previous `sml export {benchmark}` "
                          "there, or choose another name")
    if not ours:
        raise OutputError(f"{out} exists and was not written by `sml export {benchmark}`; sml replaces only "
                          "its own exports. Move it away or choose another name.")


def _is_smiyc_export(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return z.comment.startswith(_SMIYC_COMMENT)
    except (zipfile.BadZipFile, OSError):
        return False


def _check_out_zip(out_zip: Path, overwrite: bool) -> None:
    if out_zip.suffix.lower() != ".zip":
        raise InputError(f"{out_zip}: the submission is a .zip file; name it OUT.zip")
    if out_zip.is_dir():
        raise OutputError(f"{out_zip} is a folder; the submission is a .zip file: choose another name")
    if out_zip.exists():
        _refuse_existing(out_zip, _is_smiyc_export(out_zip), overwrite, "smiyc")


def _is_fishy_export(folder: Path) -> bool:
    """Whether ``folder`` holds a Fishyscapes export of sml and nothing else."""
    try:
        index = json.loads((folder / FISHYSCAPES_INDEX).read_text(encoding="utf-8"))
        entries = list(folder.iterdir())
    except (OSError, ValueError):
        return False
    return (isinstance(index, dict) and index.get("written_by") == _FISHY_WRITER
            and all(p.name == FISHYSCAPES_INDEX or (_FISHY_FILE.match(p.name) and p.is_file()) for p in entries))


def _check_out_folder(out_dir: Path, overwrite: bool) -> bool:
    """Whether an existing ``out_dir`` is to be replaced (refused unless allowed); an empty one is just used."""
    if not out_dir.exists():
        return False
    if not out_dir.is_dir():
        raise OutputError(f"{out_dir} is a file; the Fishyscapes submission is a folder: choose another name")
    if not any(out_dir.iterdir()):
        return False
    _refuse_existing(out_dir, _is_fishy_export(out_dir), overwrite, "fishyscapes")
    return True


# ----------------------------------------------------------------------------- exports

def _smiyc_choice(run_dir: Path, method: str | None, folders: Iterable[str] | None) -> tuple[str, dict[str, Path]]:
    """The method to export and its ``{tool folder: path}``."""
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
    return method, chosen


def export_smiyc(run_dir: str | Path, out_zip: str | Path, method: str | None = None,
                 folders: Iterable[str] | None = None, overwrite: bool = False) -> dict[str, int]:
    """Zip ``anomaly_p/<method>/<tool folder>/<id>.hdf5`` of a run; returns frames per folder.

    ``method`` may be omitted when the run has one; ``folders`` limits the export
    to some of the tool's folders (default: every one present). An existing
    ``out_zip`` is replaced only with ``overwrite`` and only if sml wrote it.
    """
    run_dir, out_zip = Path(run_dir), Path(out_zip)
    method, chosen = _smiyc_choice(run_dir, method, folders)
    _check_out_zip(out_zip, overwrite)
    files: dict[str, list[Path]] = {}
    for name, d in chosen.items():
        maps = sorted(d.glob("*.hdf5"))
        check_smiyc_frames(name, [p.stem for p in maps])
        files[name] = maps
    # built in a temporary file, renamed to out_zip once every map has passed; the maps are gzip-compressed
    # HDF5 already: stored, not deflated again
    with atomic.atomic_write(out_zip, "wb") as fh, zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as z:
        z.comment = _SMIYC_COMMENT
        for name, maps in files.items():
            for p in maps:
                _check_smiyc_map(p)
                z.write(p, f"anomaly_p/{method}/{name}/{p.name}")
    return {name: len(maps) for name, maps in files.items()}


def fishyscapes_numbers(names: Iterable[str]) -> dict[str, str]:
    """``{frame name: file number}`` in frame order: the release's own ``DDDD_`` prefixes where every name
    has one (and they differ), else ``0000``, ``0001``, ... in sml's frame order (natural sort)."""
    from sml.data.base import natural_key  # the order sml's loaders list frames in

    ordered = sorted(names, key=natural_key)
    own = [m.group(1) if (m := _RELEASE_NUMBER.match(n)) else None for n in ordered]
    if own and all(own) and len({int(x) for x in own}) == len(own):  # type: ignore[arg-type]
        return dict(zip(ordered, own))  # type: ignore[arg-type]
    return {n: f"{i:04d}" for i, n in enumerate(ordered)}


def _fishy_source(run_dir: Path, method: str | None) -> tuple[str, Path, list[str]]:
    """The method, its map folder and its frame names (each with both files, else refused)."""
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
    names = [p.name[: -len("_anomaly.npy")] for p in src.glob("*_anomaly.npy")]
    if not names:
        raise DataError(f"{src} holds no <id>_anomaly.npy files")
    no_seg = [n for n in names if not (src / f"{n}_segmentation.npy").is_file()]
    if no_seg:
        raise DataError(f"the run has no segmentation for {len(no_seg)} of {len(names)} frames "
                        f"({_listing(no_seg)}): a Fishyscapes submission "
                        "needs <id>_segmentation.npy (train ids) beside every <id>_anomaly.npy. Re-run sml eval with "
                        "--save-maps fishyscapes, which saves the network's prediction.")
    return method, src, names


def export_fishyscapes(run_dir: str | Path, out_dir: str | Path, method: str | None = None,
                       size: tuple[int, int] = (1024, 2048), overwrite: bool = False) -> int:
    """Write a run's Fishyscapes maps to folder ``out_dir`` as the submission expects; returns the frame count.

    Reads ``fishyscapes/<method>/<id>_anomaly.npy`` and ``<id>_segmentation.npy``
    (written by ``sml eval --save-maps fishyscapes``); checks ``size`` (H, W),
    float scores (finite) and train ids 0..18. Files are named
    :func:`fishyscapes_numbers`; ``frame_ids.json`` maps each number back to its frame.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    method, src, names = _fishy_source(run_dir, method)
    replace = _check_out_folder(out_dir, overwrite)
    numbers = fishyscapes_numbers(names)
    own = all(name.startswith(f"{number}_") for name, number in numbers.items())
    with atomic.atomic_folder(out_dir, replace=replace) as tmp:
        for name, number in numbers.items():
            a, s = _fishy_frame(src, name, size)
            atomic.save_npy(tmp / f"{number}_anomaly.npy", a)
            atomic.save_npy(tmp / f"{number}_segmentation.npy", s)
        atomic.write_json(tmp / FISHYSCAPES_INDEX, {
            "written_by": _FISHY_WRITER, "run": str(run_dir), "method": method,
            "numbering": "the release's own numbers (frame names start with them)" if own
            else "sml's frame order (natural sort of the frame names)",
            "frames": {number: name for name, number in numbers.items()}})
    return len(numbers)
