"""Content fingerprints of image lists: what the feature cache and the result record know about the pixels read.

A dataset is identified by the bytes of its files, not by their names: ``fingerprint_files(paths)`` hashes every
file's bytes (sha256 of the whole file -- evaluation images are small, and hashing all of a file costs little more than
reading it, see ``benchmarks/bench_fingerprint.py``) and combines, in list order, each file's *relative* name, size and
hash into one sha256. Consequences:

- an image edited, re-encoded or replaced in place changes the fingerprint (also when its size and mtime are put
  back with ``os.utime``: the per-file index below also keys on the inode change time, which ``utime`` cannot set);
- a regenerated or resized dataset with the same file names has another fingerprint;
- a copy of the same bytes under another root (moved, rsync'ed, another machine) has the *same* fingerprint.

Per-file hashes are kept in a small index so that only new or changed files are read again: one JSON shard per
image folder, ``<cache_dir>/fingerprints/<sha256(resolved folder)[:24]>.json``, mapping a file name to
``[size, mtime_ns, ctime_ns, inode, sha256]``. An entry is reused only when all four stat fields still match; an
entry for a file modified less than :data:`RACY_SECONDS` before it was hashed is not trusted (a change within the
same mtime tick would be invisible -- git's "racily clean" problem) and the file is hashed again. Shards are written
atomically (temporary file + rename) after merging with what another run may have written meanwhile; an unreadable
shard is treated as empty. The index is only a cache: deleting it costs one re-hash. Within a process the loaded
shards are kept in memory (:data:`_INDEX`), so a second list in the same folders costs one ``stat`` per file. Files
the index does not know are hashed by :data:`HASH_THREADS` threads (hashlib and file reads release the GIL; network
file systems serve parallel reads faster).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mopro_bench.errors import BenchError

INDEX_VERSION = 1
METHOD = "sha256 per file (whole file); sha256 over (relative name, size, file sha256) in list order"
HASH_THREADS = min(8, os.cpu_count() or 1)  # files hashed at once when the index does not know them
RACY_SECONDS = 2.0  # an entry hashed within this time of the file's mtime is re-hashed on the next use

# resolved folder -> {file name: [size, mtime_ns, ctime_ns, ino, hexdigest, hashed_at_ns]}
_INDEX: dict[str, dict[str, list]] = {}
_LOCK = threading.Lock()

STATS = {"hashed": 0, "reused": 0}  # process-wide counters (tests and the benchmark read them)


def _shard_path(cache_dir: Path, folder: str) -> Path:
    return cache_dir / "fingerprints" / f"{hashlib.sha256(folder.encode('utf-8', 'surrogateescape')).hexdigest()[:24]}.json"


def _read_shard(path: Path, folder: str) -> dict[str, list]:
    try:
        obj = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    if not isinstance(obj, dict) or obj.get("version") != INDEX_VERSION or obj.get("folder") != folder:
        return {}
    files = obj.get("files")
    if not isinstance(files, dict):
        return {}
    return {k: v for k, v in files.items() if _valid_entry(v)}


def _valid_entry(v: Any) -> bool:
    return (isinstance(v, list) and len(v) == 6 and all(type(x) is int for x in (*v[:4], v[5]))
            and isinstance(v[4], str) and len(v[4]) == 64)


def _write_shard(path: Path, folder: str, entries: dict[str, list]) -> None:
    from mopro_bench.io import atomic_write_bytes

    merged = {**_read_shard(path, folder), **entries}  # keep what a concurrent run added meanwhile
    data = json.dumps({"version": INDEX_VERSION, "folder": folder, "files": merged}, separators=(",", ":"))
    try:
        atomic_write_bytes(path, data.encode("utf-8", "surrogateescape"))
    except OSError:
        pass  # a read-only cache only costs re-hashing next time


def _hash_file(path: str) -> tuple[str, os.stat_result]:
    """sha256 of the file's bytes and the fstat of the descriptor they were read from."""
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    return digest, st


def _hash_or_error(path: str) -> tuple[str, os.stat_result]:
    try:
        return _hash_file(path)
    except FileNotFoundError:
        raise BenchError(f"image {path} does not exist", "run `mopro-bench data check` on the dataset root") from None
    except OSError as e:
        raise BenchError(f"image {path} cannot be read ({e.strerror})", "check the file's permissions") from None


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _split(p: str, real: dict[str, str]) -> tuple[str, str]:
    """(resolved folder, file name) of ``p``; the file itself may be a symlink (its target's stat is what counts).
    Folders are resolved once each (``real`` memoises them): per-file path arithmetic would dominate a warm call."""
    folder, base = os.path.split(p)
    r = real.get(folder)
    if r is None:
        r = real[folder] = os.path.realpath(folder or ".")
    return r, base


def _default_names(paths: list[str]) -> list[str]:
    """Names relative to the files' common folder, so that a moved copy of the same bytes gets the same fingerprint."""
    if not paths:
        return []
    absf: dict[str, str] = {}
    split = []
    for p in paths:
        folder, base = os.path.split(p)
        if folder not in absf:
            absf[folder] = os.path.abspath(folder or ".")
        split.append((absf[folder], base))
    common = os.path.commonpath(list(set(absf.values())))
    rel = {f: os.path.relpath(f, common) for f in set(absf.values())}
    return [base if rel[f] == "." else f"{rel[f]}/{base}" for f, base in split]


def fingerprint_files(paths: Sequence[str | os.PathLike], *, cache_dir: str | os.PathLike | None = None,
                      names: Sequence[str] | None = None) -> dict[str, Any]:
    """Content fingerprint of the files ``paths`` (in this order).

    Returns ``{"sha256": hex, "n": number of files, "bytes": total size, "method": how}``. ``names`` are the names
    hashed with each file's content (default: the paths relative to their common folder); pass the dataset-relative
    names so that the fingerprint does not depend on where the dataset lies. ``cache_dir`` keeps the per-file index
    under ``<cache_dir>/fingerprints/`` (None: only this process's memory). A missing or unreadable file is a
    :class:`BenchError`."""
    plist = [os.fspath(p) for p in paths]
    nlist = [str(n) for n in names] if names is not None else _default_names(plist)
    if len(nlist) != len(plist):
        raise ValueError("paths and names differ in length")
    cdir = Path(cache_dir) if cache_dir is not None else None
    now_ns = time.time_ns()  # taken before any file is read: an entry's hash time is never overstated
    real: dict[str, str] = {}  # folder as given -> resolved folder (one realpath per folder, not per file)
    sizes: list[int] = [0] * len(plist)
    digests: list[str | None] = [None] * len(plist)
    todo: list[int] = []
    places: list[tuple[str, str]] = []
    with _LOCK:
        for i, p in enumerate(plist):
            folder, base = _split(p, real)
            places.append((folder, base))
            shard = _INDEX.get(folder)
            if shard is None:
                shard = _read_shard(_shard_path(cdir, folder), folder) if cdir is not None else {}
                _INDEX[folder] = shard
            try:
                st = os.stat(p)
            except FileNotFoundError:
                raise BenchError(f"image {p} does not exist", "run `mopro-bench data check` on the dataset root") from None
            except OSError as e:
                raise BenchError(f"image {p} cannot be read ({e.strerror})", "check the file's permissions") from None
            entry = shard.get(base)
            if entry is not None and entry[:4] == _stat_key(st) and entry[5] - max(entry[1], entry[2]) > RACY_SECONDS * 1e9:
                digests[i], sizes[i] = entry[4], st.st_size
                STATS["reused"] += 1
            else:
                todo.append(i)
        # files not in the index are read in parallel: hashlib releases the GIL, and network file systems
        # serve several reads at once much faster than one after the other
        workers = min(HASH_THREADS, len(todo))
        if workers > 1 and len(todo) >= 64:
            with ThreadPoolExecutor(workers) as pool:
                hashed = list(pool.map(_hash_or_error, (plist[i] for i in todo), chunksize=32))
        else:
            hashed = [_hash_or_error(plist[i]) for i in todo]
        dirty: dict[str, dict[str, list]] = {}
        for i, (digest, st) in zip(todo, hashed):
            folder, base = places[i]
            entry = [*_stat_key(st), digest, now_ns]
            _INDEX[folder][base] = entry
            dirty.setdefault(folder, {})[base] = entry
            digests[i], sizes[i] = digest, st.st_size
        STATS["hashed"] += len(todo)
        if cdir is not None:
            for folder, entries in dirty.items():
                _write_shard(_shard_path(cdir, folder), folder, entries)
    total = hashlib.sha256()
    for name, size, digest in zip(nlist, sizes, digests):
        total.update(f"{name}\0{size}\0{digest}\n".encode("utf-8", "surrogateescape"))
    nbytes = sum(sizes)
    return {"sha256": total.hexdigest(), "n": len(plist), "bytes": nbytes, "method": METHOD}


def changed_since_fingerprint(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Files of ``paths`` whose (size, mtime, ctime, inode) differ from their index entry (or that vanished).

    After reading images that were fingerprinted in this process, an empty answer means the bytes read were the
    bytes fingerprinted (short of a change that keeps all four stat fields, which the OS does not allow)."""
    changed = []
    with _LOCK:
        real: dict[str, str] = {}
        for p in map(os.fspath, paths):
            folder, base = _split(p, real)
            entry = _INDEX.get(folder, {}).get(base)
            try:
                st = os.stat(p)
            except OSError:
                changed.append(p)
                continue
            if entry is None or entry[:4] != _stat_key(st):
                changed.append(p)
    return changed


def clear_memory() -> None:
    """Forget the in-process index (tests; the on-disk shards stay)."""
    with _LOCK:
        _INDEX.clear()
