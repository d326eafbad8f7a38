"""Devices, seeding and the distributed process group -- one code path for CPU, one GPU and torchrun.

Under ``torchrun`` (env:// rendezvous: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT set) every process
calls :func:`init_distributed` and gets its own device (``cuda:LOCAL_RANK``, or CPU with the gloo backend). Without
those variables it is a world of one and nothing is initialised.
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from mopro_bench.errors import BenchError

DEVICE_SPEC = re.compile(r"^(?:auto|cpu|cuda(?::\d+)?)$")
SEED_MAX = 2**32 - 1  # numpy's legacy global seed (np.random.seed) takes 0..2**32-1; torch and SeedSequence take more


def check_device_spec(spec: str | None) -> str:
    """The spelling of a ``--device`` value (``auto``, ``cpu``, ``cuda``, ``cuda:N``); whether it exists is
    :func:`resolve_device`'s business, when the device is used."""
    s = "auto" if spec is None else str(spec).strip().lower()
    if not DEVICE_SPEC.match(s):
        raise BenchError(f"--device {spec!r} is not a device", "use auto, cpu, cuda or cuda:N")
    return s


def check_seed(seed: int) -> int:
    """``--seed`` must be an integer that fits every generator it seeds (numpy's legacy seed is the narrowest:
    0..2**32-1)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise BenchError(f"seed {seed!r} is not an integer", f"use a seed in 0..{SEED_MAX}")
    if seed < 0:
        raise BenchError(f"--seed {seed} is negative", f"use a seed in 0..{SEED_MAX}")
    if seed > SEED_MAX:
        raise BenchError(f"--seed {seed} is larger than {SEED_MAX}", f"use a seed in 0..{SEED_MAX}")
    return seed


def resolve_device(spec: str | None = "auto") -> torch.device:
    """``auto`` -> first CUDA device if present else CPU; ``cpu``; ``cuda``; ``cuda:N``."""
    spec = check_device_spec(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BenchError(f"--device {spec}: no CUDA device is visible", "use --device cpu or --device auto")
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BenchError(
                f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) visible",
                f"use cuda:0..cuda:{torch.cuda.device_count() - 1}",
            )
        return dev
    raise AssertionError(spec)  # pragma: no cover - check_device_spec admits nothing else


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or self.backend is not None


def env_is_distributed() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device_spec: str | None = "auto") -> tuple[DistInfo, torch.device]:
    """Initialise the default process group from torchrun's environment (idempotent).

    Returns the process's rank info and its device. NCCL on CUDA, gloo on CPU.
    """
    if not env_is_distributed():
        return DistInfo(), resolve_device(device_spec)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", 0))
    base = resolve_device(device_spec)
    if base.type == "cuda":
        device = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
    return DistInfo(rank, world, local, backend), device


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


@torch.no_grad()
def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate equal-shaped tensors from every rank along dim 0 (no gradient). Identity in a world of one."""
    if world_size() == 1:
        return t
    out = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(out, t.contiguous())
    return torch.cat(out, dim=0)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
