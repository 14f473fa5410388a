"""Thin wrappers around ``torch.distributed`` so that code runs unchanged on one process or many.

``torchrun`` sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; :func:`init_from_env`
starts the process group from them (gloo on CPU, nccl on CUDA). Without them
every function degrades to the single-process answer.
"""
from __future__ import annotations

import os
from typing import Any, Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(device: str | torch.device = "cpu") -> bool:
    """Initialise the default process group if launched by torchrun; return True if distributed."""
    if dist.is_available() and dist.is_initialized():
        return True
    if env_world_size() <= 1 or not dist.is_available():
        return False
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_gather_object(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order (a one-element list without distribution)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: T, src: int = 0) -> T:
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of ``items``: every ``world_size``-th item starting at ``rank`` (keeps order)."""
    return list(items[rank():: world_size()])


def shard_indices(n: int) -> range:
    """Indices ``rank, rank + world, ...`` of ``n`` items."""
    return range(rank(), n, world_size())
