"""torchrun support: who this process is, and the few collectives the pipeline needs.

Under ``torchrun`` (RANK, WORLD_SIZE, LOCAL_RANK set by it) the process group is
initialised with NCCL on CUDA and Gloo on the CPU; without torchrun everything
here is a no-op for a single process, so ``python train.py`` is unchanged.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from .errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self) -> torch.device:
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


def init() -> Dist:
    """Join the process group when launched by torchrun (idempotent); a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    info = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return info


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard(items: Sequence[T], info: Dist, pad: bool = False) -> list[T]:
    """This rank's share, ``items[rank::world]``; ``pad`` repeats items so every rank gets as many."""
    mine = list(items[info.rank :: info.world_size])
    if pad and info.enabled and items:
        per_rank = -(-len(items) // info.world_size)
        mine += [items[i % len(items)] for i in range(len(mine), per_rank)]
    return mine


def broadcast(value: Any, info: Dist) -> Any:
    """Rank 0's ``value`` on every rank (any picklable object made by this program)."""
    if not info.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(values: list, info: Dist) -> list:
    """All ranks' lists concatenated, in rank order, on every rank."""
    if not info.enabled:
        return values
    parts: list = [None] * info.world_size
    dist.all_gather_object(parts, values)
    return [v for part in parts for v in part]


def any_rank(flag: bool, info: Dist) -> bool:
    """True on every rank when any rank says True (ranks must stop at the same step)."""
    if not info.enabled:
        return flag
    tensor = torch.tensor([int(flag)], device=info.device() if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def barrier(info: Dist) -> None:
    if info.enabled:
        dist.barrier()


def on_main(work: Callable[[], T], info: Dist) -> T:
    """Run ``work`` on rank 0 alone and return its result on every rank.

    A UserError raised there is raised again on rank 0 (which reports it) and
    ends the other ranks quietly with exit status 2.
    """
    outcome: tuple = ("error", "")
    if info.is_main:
        try:
            outcome = ("ok", work())
        except UserError as err:
            outcome = ("error", str(err))
    outcome = broadcast(outcome, info)
    if outcome[0] == "error":
        if info.is_main:
            raise UserError(outcome[1])
        raise SystemExit(2)
    return outcome[1]


def on_every_rank(work: Callable[[], T], info: Dist) -> T:
    """Run ``work`` on every rank and wait for all of them; a UserError on any rank stops them all.

    The rank that failed raises its error (and reports it); the others end quietly with exit
    status 2, so no rank waits forever at a later collective.
    """
    try:
        outcome: tuple = ("ok", work())
    except UserError as err:
        outcome = ("error", err)
    failed = any_rank(outcome[0] == "error", info)
    if outcome[0] == "error":
        raise outcome[1]
    if failed:
        raise SystemExit(2)
    return outcome[1]


def slice_share(size: int, info: Dist) -> tuple[int, int]:
    """This rank's contiguous range (start, stop) of ``size`` slices, the ranges in rank order."""
    return size * info.rank // info.world_size, size * (info.rank + 1) // info.world_size
