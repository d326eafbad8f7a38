"""Seeding: every generator from one seed, per-(seed, epoch, rank) seeds, and the RNG states of a process as
tensors and plain types (loadable with ``torch.load(weights_only=True)``) for exact resume."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from mopro_bench.runtime import seed_everything

__all__ = ["capture_rng", "epoch_seed", "restore_rng", "seed_everything"]


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A 32-bit seed that is a function of ``(seed, epoch, rank)`` only (finetuning's data order and augmentation)."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(rank), 0x5EED]).generate_state(1)[0])


def capture_rng() -> dict[str, Any]:
    """Every RNG state (torch CPU, numpy's legacy global, Python's, CUDA's when initialised)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, pstate, pgauss = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(pstate, dtype=torch.int64),
                   "gauss": None if pgauss is None else float(pgauss)},
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return out


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng` (an empty state is a no-op)."""
    if not state:
        return
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
