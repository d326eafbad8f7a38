"""Atomic file writes and content hashes.

Every result, checkpoint, cache entry and split file goes through :func:`atomic_write`: the bytes are written to a
temporary file in the destination directory, flushed and fsynced, then renamed over the destination. A crash at any
point leaves either the old file or the new one, never a partial one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process umask, read without changing it where the platform allows (``/proc/self/status`` on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # pragma: no cover - non-Linux fallback (not thread-safe for a moment)
    os.umask(mask)  # pragma: no cover
    return mask  # pragma: no cover


def file_mode() -> int:
    """Mode of every file the suite writes: ``0o666 & ~umask`` (what ``open(path, "w")`` would give)."""
    return 0o666 & ~current_umask()


def write_destination(path: str | os.PathLike) -> tuple[Path, bool]:
    """Where a write to ``path`` really goes, and whether it can be atomic (temporary file + rename).

    A symlink is followed (the link itself is never replaced): onto a regular file or a missing file the write is an
    atomic replace of the *target*; onto something that is not a regular file (``/dev/stdout``, a FIFO, a device)
    the bytes are written straight into it. A destination that is a directory is refused by the caller.
    """
    path = Path(path)
    try:
        st = os.stat(path)  # follows links: /proc/self/fd/1 onto a pipe stats as a FIFO
    except OSError:
        st = None
    if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return path, False  # a device, a FIFO, a socket: open() writes into it (through the link, if any)
    if not path.is_symlink():
        return path, True
    target = Path(os.path.realpath(path))
    return target, True  # an existing file, or a link to a file yet to be made: replace/create the target


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file next to ``path``; on clean exit fsync it and rename it onto ``path``.

    The file gets ``0o666 & ~umask`` (not ``mkstemp``'s 0600), so colleagues can read shared results, caches and
    checkpoints. ``path`` may be a symlink: its target is replaced, never the link. A non-regular destination (a
    device such as ``/dev/stdout``, a FIFO) is written directly.
    """
    path, atomic = write_destination(path)
    if not atomic:
        with open(path, mode) as fh:
            yield fh
            fh.flush()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with contextlib.suppress(OSError):  # e.g. filesystems without modes
            os.fchmod(fd, file_mode())
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable where the platform allows it
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def check_writable_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """Refuse (``BenchError``) an output file that cannot be written, *before* any work is done.

    Checks that ``path`` is not a directory, that its folder exists or can be created (no file in the way), and that
    a file can be created in it. Creates the missing folders; writes nothing else (a probe file is removed).
    """
    from mopro_bench.errors import BenchError

    path = Path(path).expanduser()
    dest, atomic = write_destination(path)
    if dest.is_dir():
        raise BenchError(f"{what} {path} is a directory", "pass a file name (e.g. DIR/result.json)")
    if not atomic:
        if not os.access(dest, os.W_OK):
            raise BenchError(f"{what} {path} ({dest}) is not writable", "pass another path")
        return path
    check_writable_dir(dest.parent, f"the folder of {what} {path}")
    if dest.exists() and not os.access(dest, os.W_OK) and not os.access(dest.parent, os.W_OK):
        raise BenchError(f"{what} {path} is not writable", "pass another path or fix its permissions")
    return path


def check_dir_creatable(path: str | os.PathLike, what: str = "output directory") -> Path:
    """Like :func:`check_writable_dir` but creates nothing: ``path`` (or, when missing, its nearest existing parent)
    must be a directory in which a file can be created (proved with a probe file that is removed again)."""
    from mopro_bench.errors import BenchError

    path = Path(path).expanduser()
    blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise BenchError(f"{what} {path} cannot be created: {blocker} is a file, not a directory",
                         "pass another directory")
    existing = next((p for p in [path, *path.parents] if p.is_dir()), Path("."))
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        where = "" if existing == path else f" (in {existing})"
        raise BenchError(f"{what} {path} is not writable{where} ({e.strerror or e})",
                         "pass a directory you can write to, or fix its permissions") from None
    return path


def check_writable_dir(path: str | os.PathLike, what: str = "output directory") -> Path:
    """Create ``path`` (with parents) and prove a file can be written in it; ``BenchError`` (one line) when not."""
    from mopro_bench.errors import BenchError

    path = Path(path).expanduser()
    blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise BenchError(f"{what} {path} cannot be created: {blocker} is a file, not a directory",
                         "pass another directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise BenchError(f"{what} {path} is not writable ({e.strerror or e})",
                         "pass a directory you can write to, or fix its permissions") from None
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


_SCALAR_LIST = re.compile(r"\[\s*\n[-+0-9.eEtruefalsn,\s]*?\]")


def dumps_json(obj: Any) -> str:
    """Indented JSON whose lists of plain numbers/booleans stay on one line (per-image vectors stay compact)."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default)
    return _SCALAR_LIST.sub(lambda m: re.sub(r"\s+", "", m.group(0)).replace(",", ", "), text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, dumps_json(obj) + "\n")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` through a temporary file and rename."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_save_with(path: str | os.PathLike, writer: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call ``writer(fh)`` on a temporary file, then rename it onto ``path`` (for savefig, np.save, ...)."""
    with atomic_open(path, mode) as fh:
        writer(fh)
    return Path(path)


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_json(obj: Any) -> str:
    """Hash of a JSON-serialisable object in canonical form (sorted keys, no whitespace)."""
    return sha256_bytes(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default).encode())


def sha256_lines(lines: list[str]) -> str:
    """Hash of a list of strings (file lists, split ids) independent of the platform's newline."""
    return sha256_bytes("\n".join(lines).encode("utf-8"))
