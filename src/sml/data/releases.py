"""The public releases' names, frame lists and splits as the SegmentMeIfYouCan tool defines them.

Facts read from github SegmentMeIfYouCan/road-anomaly-benchmark (commit
1c7804e0, ``datasets/tracks.py``, ``tracks_extra.py``): which frames form each
split, the folder name under which the tool stores and reads each split's
maps (its ``name_for_persistence``), and the frame counts it insists on.
"""
from __future__ import annotations

from typing import Callable, Sequence

__all__ = [
    "ANOMALY_TEST", "ANOMALY_VALIDATION", "ANOMALY_SPLITS", "OBSTACLE_SCENES", "OBSTACLE_SPLITS",
    "LAF_SPLITS", "LAF_INVALID_TEST_INDICES", "LAF_INVALID_TRAIN_INDICES", "LAF_KNOWN_PREFIXES",
    "SMIYC_FOLDER", "select_split", "obstacle_scene",
]

_COUNTS = {
    "airplane": 2, "bear": 1, "boat_trailer": 5, "camel": 2, "caravan": 8, "carriage": 8, "cock": 1, "coffin": 1,
    "cones": 7, "cow": 14, "deer": 2, "donkey": 2, "elephant": 12, "goose": 1, "hay": 1, "horse": 5, "leopard": 1,
    "lion": 1, "piano": 1, "pig": 2, "rhino": 2, "scooter": 1, "sheep": 11, "tent": 1, "tractor": 6, "zebra": 2,
}
#: RoadAnomaly21's 100 (unlabelled) test frames, ``<object><4 digits>``
ANOMALY_TEST: tuple[str, ...] = tuple(sorted(f"{k}{i:04d}" for k, n in _COUNTS.items() for i in range(n)))
#: RoadAnomaly21's 10 labelled validation frames
ANOMALY_VALIDATION: tuple[str, ...] = tuple(f"validation{i:04d}" for i in range(10))
#: split -> frame ids; ``all`` is the 110-frame release (the tool's ``AnomalyTrack-all``)
ANOMALY_SPLITS: dict[str, tuple[str, ...]] = {
    "all": tuple(sorted(ANOMALY_TEST + ANOMALY_VALIDATION)),
    "validation": ANOMALY_VALIDATION,
    "test": ANOMALY_TEST,
}

#: RoadObstacle21 scenes: a frame's scene is its id up to the first ``_``
OBSTACLE_SCENES = frozenset({
    "curvy-street", "one-way-street", "gravel", "greyasphalt", "motorway", "paving", "darkasphalt",
    "darkasphalt2", "snowstorm1", "snowstorm2", "driveway", "validation",
})
_VALIDATION_EXCLUDED = ("validation_19", *(f"validation_{k}" for k in range(21, 30)))
_SCENE_SPLITS = {
    "curvy": {"curvy-street"}, "darkasphalt": {"darkasphalt"}, "darkasphaltDog": {"darkasphalt2"},
    "darkasphaltAll": {"darkasphalt", "darkasphalt2"}, "gravel": {"gravel"}, "greyasphalt": {"greyasphalt"},
    "motorway": {"motorway"}, "shiny": {"one-way-street"}, "paving": {"paving"}, "night": {"driveway"},
    "snowstorm": {"snowstorm1", "snowstorm2"}, "validation": {"validation"},
}


def obstacle_scene(frame_id: str) -> str:
    """The RoadObstacle21 scene of a frame id (``validation_12`` -> ``validation``)."""
    return frame_id.split("_")[0]


#: split -> (scenes, excluded id prefixes, frame count the tool checks or None)
OBSTACLE_SPLITS: dict[str, tuple[frozenset, tuple[str, ...], int | None]] = {
    "all": (OBSTACLE_SCENES, (), None),
    "test": (OBSTACLE_SCENES - {"snowstorm1", "snowstorm2", "driveway", "validation"}, (), 327),
    # the tool expects 382 here, a count from before the 40 validation frames joined the release
    # (327 + 55); with them its own check fails, so sml checks no count for this split
    "noNight": (OBSTACLE_SCENES - {"driveway"}, (), None),
    "night": (frozenset({"driveway"}), (), 30),
    "snowstorm": (frozenset({"snowstorm1", "snowstorm2"}), (), 55),
    "validation": (frozenset({"validation"}), _VALIDATION_EXCLUDED, 30),
    **{f"scene-{k}": (frozenset(v), (), None) for k, v in _SCENE_SPLITS.items()},
}

#: Lost and Found: positions (in the split's frames sorted by id) of frames whose labels are all 0
LAF_INVALID_TEST_INDICES = (17, 37, 55, 72, 91, 110, 129, 153, 174, 197, 218, 353, 490, 618, 686, 792, 793)
LAF_INVALID_TRAIN_INDICES = (44, 67, 88, 109, 131, 614)
#: testNoKnown drops frames showing known classes (children, bicycles)
LAF_KNOWN_PREFIXES = ("15_Rechbergstr_Deckenpfronn", "01_Hanns_Klemm_Str_45_000006",
                      "01_Hanns_Klemm_Str_45_000007", "10_Schlossberg_9_000004")
#: split -> (folder split, invalid indices, known-class prefixes, frame count)
LAF_SPLITS: dict[str, tuple[str, tuple[int, ...], tuple[str, ...], int]] = {
    "test": ("test", (), (), 1203),
    "testValid": ("test", LAF_INVALID_TEST_INDICES, (), 1186),
    "testNoKnown": ("test", LAF_INVALID_TEST_INDICES, LAF_KNOWN_PREFIXES, 1043),
    "train": ("train", (), (), 1036),
    "trainValid": ("train", LAF_INVALID_TRAIN_INDICES, (), 1030),
}

#: data-set kind -> split -> the folder the tool stores that split's maps under (``anomaly_p/<method>/<here>/``)
SMIYC_FOLDER: dict[str, Callable[[str | None], str | None]] = {
    "smiyc-anomaly": lambda split: "AnomalyTrack-all",
    "smiyc-obstacle": lambda split: "ObstacleTrack-all",
    "lost-and-found": lambda split: "LostAndFound-train" if (split or "test").startswith("train") else "LostAndFound-test",
    # the tool's Fishyscapes relabelling of Lost and Found (validation, 100 frames) has no persistence alias
    "fishyscapes-laf": lambda split: "FishyLAFAnomaly-val",
}


def select_split(kind: str, split: str, ids: Sequence[str]) -> tuple[list[str], int | None]:
    """The ids of ``ids`` in ``split`` of ``kind`` (tool's rules) and the count the tool expects (None: any)."""
    if kind == "smiyc-anomaly":
        want = set(ANOMALY_SPLITS[split])
        return [i for i in ids if i in want], len(want)
    if kind == "smiyc-obstacle":
        scenes, excluded, n = OBSTACLE_SPLITS[split]
        return [i for i in ids if obstacle_scene(i) in scenes and not i.startswith(excluded or ("\0",))], n
    if kind == "lost-and-found":
        _, invalid, prefixes, n = LAF_SPLITS[split]
        order = sorted(ids)  # the tool's positions are in plain string order of the ids
        bad = {order[i] for i in invalid if i < len(order)}
        return [i for i in ids if i not in bad and not i.startswith(prefixes or ("\0",))], n
    raise KeyError(kind)
