"""Work spread over ``torchrun`` processes (one machine or many: ``torchrun --nnodes``), CPU-only (gloo).

neurohook never schedules anything itself: torchrun starts the processes and sets ``RANK`` and
``WORLD_SIZE``; extraction gives each rank its share of the shards, the analysis its share of the
tasks (:func:`share`), and :func:`all_gather` brings every rank's results to all of them.

Example::

    rank, world = context()                       # (0, 1) outside torchrun
    mine = share(["GC", "LID", "DID", "CC"])      # this rank's tasks
    everything = all_gather({t: run(t) for t in mine})
"""

from __future__ import annotations

import atexit
import os
from typing import Any, Sequence, TypeVar

__all__ = ["all_gather", "barrier", "context", "share"]

T = TypeVar("T")


def context() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment, (0, 1) outside it."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _group(world_size: int) -> bool:
    """Join torchrun's process group (gloo) when there is more than one process; False when alone.

    A group joined here is destroyed at exit: left to the interpreter's teardown, a rank that exits
    while another still holds the group can abort ("terminate called without an active exception",
    4 of 20 two-rank runs with torch 2.14.1). A group the caller made stays the caller's.
    """
    if world_size <= 1:
        return False
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
        atexit.register(dist.destroy_process_group)
    return True


def barrier(world_size: int | None = None) -> None:
    """Wait for every rank (nothing when alone)."""
    if _group(context()[1] if world_size is None else world_size):
        import torch.distributed as dist

        dist.barrier()


def share(units: Sequence[T], rank: int | None = None, world_size: int | None = None) -> list[T]:
    """This rank's units: every ``world_size``-th, from its rank (whole units, in order)."""
    r, w = context()
    return list(units)[(r if rank is None else rank) :: (w if world_size is None else world_size)]


def all_gather(obj: Any, world_size: int | None = None) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` when alone."""
    world = context()[1] if world_size is None else world_size
    if not _group(world):
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out
