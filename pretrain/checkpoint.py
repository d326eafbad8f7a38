"""Pretraining checkpoints: atomic writes, keep-last-K, ``--resume auto``, RNG states loadable with weights_only.

File names are ``checkpoint_step<global step, 9 digits>.pth.tar`` (so name order = time order); ``last.pth.tar`` is a
relative symlink to the newest one where the file system allows it. The layout of the dict is fixed by
docs/CONTRACTS.md ("Our pretrainer's checkpoint").
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch

from mopro_bench.engine.seeding import capture_rng, restore_rng
from mopro_bench.engine.state import CheckpointSeries
from mopro_bench.errors import BenchError

SERIES = CheckpointSeries("checkpoint_step", ".pth.tar", last="last.pth.tar")
NAME_RE = SERIES.pattern
LAST = SERIES.last
FORMAT_VERSION = 1
__all__ = ["FILE_SHA256", "FORMAT_VERSION", "LAST", "capture_rng", "check_out_dir", "checkpoint_name", "find_resume",
           "list_checkpoints", "load_file", "restore_rng", "save_checkpoint"]


def checkpoint_name(step: int) -> str:
    return SERIES.name(step)


def list_checkpoints(out: str | os.PathLike) -> list[Path]:
    """Checkpoint files in ``out``, oldest first."""
    return SERIES.list(out)


def save_checkpoint(out: str | os.PathLike, obj: dict[str, Any], keep_last: int) -> Path:
    """Atomic write, ``last.pth.tar`` re-pointed, only the newest ``keep_last`` kept (:mod:`mopro_bench.engine.state`)."""
    return SERIES.save(out, obj, int(obj["step"]), keep_last)


FILE_SHA256 = "_file_sha256"  # key load_file adds: sha256 of the bytes the object was read from


def load_file(path: str | os.PathLike) -> dict[str, Any]:
    """A pretraining checkpoint (``weights_only``), with ``obj[FILE_SHA256]`` = sha256 of the bytes it came from."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"checkpoint {path} does not exist", "pass a checkpoint written by `mopro-bench pretrain`")
    try:
        data = path.read_bytes()  # read once: the digest is of exactly the bytes deserialized (the file may be re-pointed)
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise BenchError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e})",
                         "pass a complete checkpoint written by `mopro-bench pretrain` (an older one in the same folder "
                         "also works)") from None
    meta = obj.get("mopro_bench") if isinstance(obj, dict) else None
    if not isinstance(meta, dict) or "config" not in meta or "state_dict" not in obj:
        raise BenchError(f"{path} is not a mopro-bench pretraining checkpoint",
                         "pass a checkpoint written by `mopro-bench pretrain` (other formats work with eval/inspect)")
    obj[FILE_SHA256] = hashlib.sha256(data).hexdigest()
    return obj


def find_resume(out: str | os.PathLike, resume: str | None) -> Path | None:
    """``auto`` -> newest readable checkpoint in ``out`` (or None: fresh start); a path -> that file."""
    if not resume:
        return None
    if resume != "auto":
        p = Path(resume).expanduser()
        if not p.is_file():
            raise BenchError(f"--resume {resume}: no such checkpoint", "pass a checkpoint file or --resume auto")
        return p
    return SERIES.find_latest(out, load_file, BenchError)  # a damaged file falls back to an older one


# RNG states (capture_rng / restore_rng) live in mopro_bench.engine.seeding; imported above for the trainer.


def check_out_dir(out: str | os.PathLike, what: str = "--out") -> Path:
    """Create the run directory and prove a file can be written in it, before any data or model work."""
    out = Path(out).expanduser()
    blocker = next((p for p in [out, *out.parents] if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise BenchError(f"{what} {out} cannot be created: {blocker} is a file", "pass another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-probe.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise BenchError(f"{what} {out} is not writable ({e.strerror or e})",
                         "pass a directory you can write to, or fix its permissions") from None
    return out
