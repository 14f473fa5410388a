"""Frames for the forward pass: decoded ahead (worker processes), in order, in batches of one image size.

``sml eval`` and ``sml stats`` read their frames through :func:`batches`. Consecutive frames whose
images have the same size go through the network together, up to ``batch_size`` of them; a frame
of another size closes the batch early. The frames thus keep their order, one by one, whatever
the batch size: per-frame records, resume chunks and ``torchrun`` shards are those of batch size 1.

With ``workers`` > 0 a :class:`torch.utils.data.DataLoader` decodes the frames in that many
processes, ahead of the loop (``2 x workers`` frames at most), into pinned memory when the model is
on CUDA, so the device does not wait on decoding where the CPUs keep up. A frame that cannot be
decoded (corrupt, wrong labels) is refused with the same error, naming the file, at that frame:
the frames before it are scored and saved first, as without workers.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from sml.data.base import Sample
from sml.errors import InputError, SMLError

__all__ = ["Loading", "Batch", "batches", "default_workers", "check_loading"]

#: most decoding processes chosen by default (each holds a few decoded frames)
MAX_DEFAULT_WORKERS = 8


def check_loading(batch_size: int, workers: int | None) -> None:
    """Refuse a batch size below 1 or a negative worker count (before anything is loaded)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"--batch-size must be a whole number of frames, at least 1 (got {batch_size!r}); "
                         f"1 runs the network frame by frame")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer))
                                or workers < 0):
        raise InputError(f"--workers must be a whole number of decoding processes, 0 or more (got {workers!r}); "
                         f"0 decodes in the main process")


def default_workers(device: str | torch.device) -> int:
    """Decoding processes when none are asked for: none on the CPU, where the network already takes every
    core (measured with benchmarks/bench_eval.py, see docs), and on CUDA one per core left to this
    process (``torchrun``'s processes on one machine share the cores), at most :data:`MAX_DEFAULT_WORKERS`."""
    if torch.device(device).type != "cuda":
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    per_process = cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(MAX_DEFAULT_WORKERS, per_process - 1))


@dataclass(frozen=True)
class Loading:
    """How frames reach the network: ``batch_size`` frames of one size at a time, decoded by ``workers``
    processes (None: :func:`default_workers` for the model's device)."""

    batch_size: int = 1
    workers: int | None = None

    def __post_init__(self) -> None:
        check_loading(self.batch_size, self.workers)

    def resolve(self, device: str | torch.device) -> "Loading":
        """These settings with the worker count filled in for ``device``."""
        return self if self.workers is not None else Loading(self.batch_size, default_workers(device))


@dataclass
class Batch:
    """Consecutive frames of one image size: their indices in the data set, the decoded samples and
    the images as the forward pass takes them (the samples' arrays, or tensors from a worker)."""

    indices: list[int]
    samples: list[Sample]
    images: list[Any]

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def output_size(self) -> tuple[int, int]:
        """Where the logits go: the labels' size (the image's, which loading checked), or the image's."""
        s = self.samples[0]
        return tuple(s.labels.shape) if s.labels is not None else tuple(s.image.shape[:2])  # type: ignore[return-value]


@dataclass
class _Decoded:
    """One frame as decoding left it: arrays (in this process) or tensors (from a worker), or the error."""

    index: int
    image: Any = None
    labels: Any = None
    error: SMLError | None = None

    def pin_memory(self) -> "_Decoded":
        """The image in pinned memory (called by the DataLoader on CUDA), for an asynchronous copy."""
        return _Decoded(self.index, None if self.image is None else self.image.pin_memory(), self.labels, self.error)


class _Frames(torch.utils.data.Dataset):
    """The frames to decode, by position: ``dataset.load`` of ``indices[k]``; errors kept as values."""

    def __init__(self, dataset: Any, indices: list[int], labels: bool, tensors: bool) -> None:
        self.dataset, self.indices, self.labels, self.tensors = dataset, list(indices), labels, tensors

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> _Decoded:
        i = self.indices[k]
        try:
            s = self.dataset.load(self.dataset.frames[i], labels=self.labels)
        except SMLError as exc:  # raised by the loop at this frame: a worker's error would lose its type
            return _Decoded(i, error=exc)
        if not self.tensors:
            return _Decoded(i, s.image, s.labels)
        # tensors travel between processes through shared memory instead of a pickled copy
        return _Decoded(i, torch.from_numpy(s.image), None if s.labels is None else torch.from_numpy(s.labels))


def _first(batch: list[Any]) -> Any:
    return batch[0]


def _decoded(dataset: Any, indices: list[int], labels: bool, workers: int, pin: bool) -> Iterator[_Decoded]:
    """Every frame of ``indices`` decoded, in order: here, or by ``workers`` processes."""
    frames = _Frames(dataset, indices, labels, tensors=workers > 0)
    if workers == 0:
        yield from (frames[k] for k in range(len(frames)))
        return
    yield from torch.utils.data.DataLoader(frames, batch_size=1, collate_fn=_first, shuffle=False,
                                           num_workers=min(workers, len(frames)), pin_memory=pin)


def _sample(dataset: Any, d: _Decoded) -> Sample:
    f = dataset.frames[d.index]
    image = d.image.numpy() if isinstance(d.image, torch.Tensor) else d.image
    labels = d.labels.numpy() if isinstance(d.labels, torch.Tensor) else d.labels
    return Sample(f.id, image, labels, f.image_path, f.label_path)


def _grouped(dataset: Any, decoded: Iterable[_Decoded], batch_size: int) -> Iterator[Batch]:
    """Consecutive frames of one image size, ``batch_size`` at most; the batch before a failed frame first."""
    pending: list[_Decoded] = []

    def flush() -> Batch:
        b = Batch([d.index for d in pending], [_sample(dataset, d) for d in pending], [d.image for d in pending])
        pending.clear()
        return b

    for d in decoded:
        if d.error is not None:
            if pending:
                yield flush()
            raise d.error
        if pending and tuple(d.image.shape) != tuple(pending[0].image.shape):
            yield flush()
        pending.append(d)
        if len(pending) == batch_size:
            yield flush()
    if pending:
        yield flush()


def batches(dataset: Any, indices: list[int], loading: Loading, device: str | torch.device = "cpu", *,
            labels: bool = True, timer: Any = None) -> Iterator[Batch]:
    """The frames ``indices`` of ``dataset`` (in this order), decoded and grouped into :class:`Batch` es.

    ``loading.workers`` None takes :func:`default_workers` of ``device``; on CUDA the workers' images
    arrive in pinned memory. ``timer`` (a :class:`~sml.pipelines.common.Timer`) counts the time the
    loop waits for each batch as stage ``decode``. Close the iterator (``contextlib.closing``) to stop
    the workers early.
    """
    loading = loading.resolve(device)
    workers = min(int(loading.workers or 0), len(indices))
    pin = workers > 0 and torch.device(device).type == "cuda"
    it = _grouped(dataset, _decoded(dataset, list(indices), labels, workers, pin), loading.batch_size)
    try:
        while True:
            t0 = time.perf_counter()
            batch = next(it, None)
            if timer is not None:
                timer.add("decode", time.perf_counter() - t0)
            if batch is None:
                return
            yield batch
    finally:
        it.close()  # the DataLoader's workers stop with it
