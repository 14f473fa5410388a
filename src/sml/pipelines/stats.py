"""``sml stats``: per-class max-logit statistics over every frame of a split (spec section 2).

Each frame gives its own partial :class:`sml.stats.ClassStatistics`; the
partials are merged in frame order. With ``torchrun`` each rank computes the
partials of ``frames[rank::world]``, every rank gathers all of them and merges
them in the same global order, so the result is bit-identical to one process
(and to a resumed run, which reloads the partials it had saved).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from sml.errors import InputError
from sml.pipelines import common, loader
from sml.pipelines.consistency import FramePixels, check_stats_partials, check_stats_total
from sml.pipelines.pairing import network_identity
from sml.pipelines.resume import ResumeStore, SavePolicy, dataset_identity, frame_files
from sml.utils import distributed
from sml.utils.progress import progress

@dataclass
class StatsRun:
    """What :func:`compute_statistics` returns: the statistics and how they were made."""

    stats: Any
    frames: int
    seconds: dict[str, float]


def _merge(a: Any, b: Any) -> Any:
    """``a`` merged with ``b`` (tolerates an in-place ``merge`` that returns None)."""
    out = a.merge(b)
    return a if out is None else out


def _restore(chunk: Any, folder: Path, dataset: Any, indices: list[int], model: Any,
             pixels: FramePixels) -> dict[int, Any]:
    """A chunk's per-frame statistics, each checked in itself and against the frame it claims."""
    from sml.stats import ClassStatistics

    fix = f"Delete {folder} and run again without --resume."
    try:
        partials = {int(i): ClassStatistics.from_state_dict(st) for i, st in chunk["partials"].items()}
    except (InputError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"the resume chunk {chunk.path} holds no valid statistics ({exc}). {fix}") from None
    check_stats_partials(partials, chunk.path, dataset, set(indices), _new_stats(model).class_names, pixels, fix)
    return partials


def _new_stats(model: Any) -> Any:
    from sml.stats import ClassStatistics

    return ClassStatistics(common.num_classes(model), common.class_names(model))


def compute_statistics(
    model: Any,
    dataset: Any,
    *,
    valid_only: bool = False,
    limit: int | None = None,
    state_dir: str | os.PathLike | None = None,
    resume: bool = False,
    save_every: int | None = None,
    save_interval: float = 300.0,
    meta: dict[str, Any] | None = None,
    show_progress: bool = True,
    on_frame: Callable[[int], None] | None = None,
    out: str | os.PathLike | None = None,
    identity: dict[str, str] | None = None,
    batch_size: int = 1,
    workers: int | None = None,
) -> StatsRun:
    """Statistics of ``model``'s max logits over ``dataset`` (all frames, or the first ``limit``).

    ``valid_only`` restricts them to pixels with a non-ignore label. With
    ``state_dir`` the per-frame partials are saved there atomically (every
    ``save_every`` frames, or by default every ``save_interval`` seconds, and after
    the last frame) and ``resume=True`` continues from them; the state is removed
    once the statistics are complete, and with ``out`` only after they are
    written there (:func:`save_statistics`, with ``identity``: ``data``, ``inference``; the
    network's identity, ``model.identity``, is recorded in ``stats.model``).
    ``batch_size`` frames of one size go through the network together, decoded by ``workers`` processes
    (:mod:`sml.pipelines.loader`; None: none on the CPU, several on CUDA); the result does not depend on
    either. Runs on one process or on every rank of a ``torchrun`` job (collective call).
    """
    indices = common.frame_indices(len(dataset), limit)
    policy = SavePolicy(save_every, save_interval)
    loading = loader.Loading(batch_size, workers)
    store = None
    partials: dict[int, Any] = {}
    pixels = FramePixels(dataset)
    if state_dir is not None:
        store = ResumeStore(state_dir, {"kind": "stats", "dataset": dataset_identity(dataset),
                                        "frame_files": frame_files(dataset, indices), "valid_only": bool(valid_only),
                                        "network": network_identity(model), **(meta or {})})
        for chunk in store.start(resume):
            restored = _restore(chunk, store.folder, dataset, indices, model, pixels)
            if set(restored) & set(partials):
                raise InputError(f"the partial state in {store.folder} counts a frame twice; delete {store.folder} "
                                 f"and run again without --resume")
            partials.update(restored)
    # rank 0 carries the frames loaded from the state; every rank adds what it computes
    own: dict[int, Any] = dict(partials) if distributed.is_main() else {}
    timer = common.Timer()
    todo = [i for i in indices if i not in partials]
    _frame_statistics(model, dataset, todo, valid_only, own, store, policy, timer, show_progress, on_frame,
                      loading)
    stats = _merge_in_frame_order(model, own, indices, state_dir)
    stats.model = network_identity(model)
    check_stats_total(stats, indices, pixels, out or "the statistics",
                      f"Delete {state_dir} and run again without --resume." if state_dir else "")
    if out is not None and distributed.is_main():
        save_statistics(stats, out, **(identity or {}))
    if store is not None:
        store.clear()  # collective; after the file is written, so a failed write can still --resume
    return StatsRun(stats, len(indices), timer.seconds)


def _frame_statistics(model: Any, dataset: Any, todo: list[int], valid_only: bool, own: dict[int, Any],
                      store: ResumeStore | None, policy: SavePolicy, timer: common.Timer, show_progress: bool,
                      on_frame: Callable[[int], None] | None, loading: loader.Loading) -> None:
    """This process's share of ``todo``: one partial per frame into ``own``, saved to ``store`` now and then."""
    mine = distributed.shard(todo)
    fresh: dict[int, Any] = {}
    partials = _partials(model, dataset, mine, valid_only, loading, timer)
    with contextlib.closing(partials):  # on an error, the loader's workers stop at once
        bar = progress(partials, total=len(todo), desc="stats", disable=None if show_progress else True)
        for n, (i, part) in enumerate(bar, 1):
            own[i] = fresh[i] = part
            if on_frame is not None:
                on_frame(i)
            if store is not None and (policy.due(n) or n == len(mine)):
                store.save({"partials": {str(k): p.state_dict() for k, p in fresh.items()}})
                policy.saved()
                fresh = {}


def _partials(model: Any, dataset: Any, indices: list[int], valid_only: bool, loading: loader.Loading,
              timer: common.Timer) -> Iterator[tuple[int, Any]]:
    """``(index, that frame's statistics)`` of each frame of ``indices``, in order, a batch at a time."""
    device = torch.device(getattr(model, "device", "cpu"))
    with contextlib.closing(loader.batches(dataset, indices, loading, device, labels=valid_only,
                                           timer=timer)) as batches:
        for batch in batches:
            with timer("forward"):
                logits = common.forward(model, batch.images, batch.output_size)
            parts = []
            with timer("statistics"):
                for sample, lg in zip(batch.samples, common.split_frames(logits, len(batch))):
                    part = _new_stats(model)
                    if valid_only and sample.labels is not None:
                        part.update(lg, valid=torch.from_numpy(sample.labels != 255).to(lg.device)[None])
                    else:
                        part.update(lg)
                    parts.append(part)
            del logits, lg  # 160 MB a frame at 2048x1024: freed before the next batch's forward allocates its own
            yield from zip(batch.indices, parts)


def _merge_in_frame_order(model: Any, own: dict[int, Any], indices: list[int], state_dir: Any) -> Any:
    """Every process's partials, merged in frame order (bit-identical for any process count or resume)."""
    gathered: dict[int, Any] = {}
    for d in distributed.all_gather_object(own):
        gathered.update(d)
    missing = [i for i in indices if i not in gathered]
    if missing:  # cannot happen unless a state file was edited by hand
        raise InputError(f"statistics are missing {len(missing)} frames after the run; delete {state_dir} "
                         f"and run again without --resume")
    total = _new_stats(model)
    for i in indices:
        total = _merge(total, gathered[i])
    return total


def save_statistics(stats: Any, path: str | os.PathLike, *, model: Any = None,
                    data: str | None = None, inference: str | None = None) -> None:
    """Write ``stats.json`` (atomically) with the model, data and inference settings beside the numbers.

    ``model`` replaces the network identity :func:`compute_statistics` recorded (``model.identity``,
    which `sml eval` and `sml predict` check); leave it out to keep that.

    An existing file is replaced only when it is sml's statistics (``sml.utils.run_folder.check_replace``).
    """
    from sml.utils.run_folder import check_replace

    check_replace(path, "statistics file")
    if model is not None:
        stats.model = model
    if data is not None:
        stats.data = data
    if inference is not None:
        stats.inference = inference
    stats.save(path)

