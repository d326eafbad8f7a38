"""Pretraining checkpoints: atomic writes, keep-last-K, ``--resume auto``, RNG states loadable with weights_only.

File names are ``checkpoint_step<global step, 9 digits>.pth.tar`` (so name order = time order); ``last.pth.tar`` is a
relative symlink to the newest one where the file system allows it. The layout of the dict is fixed by
docs/CONTRACTS.md ("Our pretrainer's checkpoint").
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mopro_bench.errors import BenchError
from mopro_bench.io import atomic_torch_save

NAME_RE = re.compile(r"^checkpoint_step(\d{9,})\.pth\.tar$")
LAST = "last.pth.tar"
FORMAT_VERSION = 1


def checkpoint_name(step: int) -> str:
    return f"checkpoint_step{step:09d}.pth.tar"


def list_checkpoints(out: str | os.PathLike) -> list[Path]:
    """Checkpoint files in ``out``, oldest first."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out.iterdir() if (m := NAME_RE.match(p.name)) and p.is_file()]
    return [p for _, p in sorted(found)]


def save_checkpoint(out: str | os.PathLike, obj: dict[str, Any], keep_last: int) -> Path:
    out = Path(out)
    path = atomic_torch_save(out / checkpoint_name(int(obj["step"])), obj)
    link = out / LAST
    tmp = out / f".{LAST}.tmp"
    with contextlib.suppress(OSError):
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(path.name, tmp)
        os.replace(tmp, link)
    for old in list_checkpoints(out)[:-keep_last]:
        with contextlib.suppress(FileNotFoundError):
            old.unlink()
    return path


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
    for p in reversed(list_checkpoints(out)):
        try:
            load_file(p)
            return p
        except BenchError:  # a damaged file (atomic writes make this unlikely): fall back to an older one
            continue
    return None


# ------------------------------------------------------------------------------------------------------------ RNG
def capture_rng() -> dict[str, Any]:
    """Every RNG state as tensors and plain types (loadable with ``torch.load(weights_only=True)``)."""
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
    if not state:
        return
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


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
