"""Distributed helpers for training loops: rank/world, main-process test, barrier, gradient averaging, and the
process-group set-up and tear-down (the primitives live in :mod:`mopro_bench.runtime`, the base layer, because
feature extraction uses them too; training code imports them from here)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from mopro_bench.runtime import (
    DistInfo,
    all_gather_cat,
    barrier,
    cleanup_distributed,
    env_is_distributed,
    init_distributed,
    rank,
    world_size,
)

__all__ = ["DistInfo", "all_gather_cat", "all_reduce_mean_grads", "barrier", "cleanup_distributed", "env_is_distributed",
           "init_distributed", "is_main", "rank", "rank_world", "world_size"]


def rank_world() -> tuple[int, int]:
    """``(rank, world size)`` of the default process group; ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_world()[0] == 0


def all_reduce_mean_grads(params, world: int) -> None:
    """Average the gradients of ``params`` over ``world`` processes (sum, then divide) -- a no-op for one."""
    if world <= 1:
        return
    for p in params:
        dist.all_reduce(p.grad)
        p.grad.div_(world)


def all_reduce_(t: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(t)
    return t
