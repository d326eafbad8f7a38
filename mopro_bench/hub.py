"""Checkpoints by name (``zoo:NAME``) and by URL (``https://``, ``http://``, ``file://``), cached and pinned.

``resolve_checkpoint(spec, cache_dir=...)`` turns a ``--ckpt`` value into a local file:

* ``zoo:NAME`` (optionally ``zoo:NAME#NETWORK``) -- an entry of :mod:`mopro_bench.zoo`, downloaded on first use;
* ``https://.../file.pth`` (optionally ``#NETWORK``) -- any other checkpoint, downloaded on first use (a URL that is a
  zoo entry's shares that entry's cache file and hashes);
* anything else (a path, ``FILE#NETWORK``, ``random:ARCH``) is returned unchanged, without touching the network.

Downloads go to ``<cache_dir>/checkpoints/`` (zoo entries under their published file name; other URLs under
``url-<first 12 hex of sha256(url)>/<file name>``). A download streams into ``<file>.part`` with a progress bar,
resumes an interrupted ``.part`` with an HTTP ``Range`` request, checks the byte count against the server's length,
then the hashes, and only then renames the ``.part`` onto the file (fsynced): a file in the cache is always complete
and verified. Hashes checked: a full SHA-256 when the publisher gives one, the SHA-256 prefix in torchvision-style file
names (``resnet50-0676ba61.pth``, the check ``torch.hub`` makes), an md5 prefix where the README lists one (MoCo), and
otherwise the SHA-256 recorded at the first download (``<cache_dir>/checkpoints/index.json``): a later file for the
same URL with other content is refused. A cached file is re-hashed when its size or mtime changed since it was recorded.

Every network operation is bounded: connecting by ``$MOPRO_BENCH_CONNECT_TIMEOUT`` seconds (default 30) and every
read by ``$MOPRO_BENCH_READ_TIMEOUT`` (default 60; a server that stalls longer fails the download). An interrupted
download is resumed automatically while attempts make progress (at most ``$MOPRO_BENCH_DOWNLOAD_ATTEMPTS``, default
4). ``$MOPRO_BENCH_OFFLINE=1`` forbids the network: cached files work, a missing one is an error naming the exact path
to place it at. Nothing is ever downloaded implicitly: only a ``zoo:`` or URL ``--ckpt`` (or ``mopro-bench zoo
--download``) fetches.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from mopro_bench import zoo
from mopro_bench.errors import BenchError
from mopro_bench.io import atomic_write_json

URL_SCHEMES = ("http://", "https://", "file://")
CONNECT_TIMEOUT_ENV = "MOPRO_BENCH_CONNECT_TIMEOUT"
READ_TIMEOUT_ENV = "MOPRO_BENCH_READ_TIMEOUT"
ATTEMPTS_ENV = "MOPRO_BENCH_DOWNLOAD_ATTEMPTS"
OFFLINE_ENV = "MOPRO_BENCH_OFFLINE"
DEFAULT_CONNECT_TIMEOUT = 30.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_ATTEMPTS = 4
# torch.hub's convention: "<name>-<first hex digits of the file's sha256>.<ext>" (torchvision weight files)
HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.")
CHUNK = 1 << 16
INDEX_NAME = "index.json"
USER_AGENT = "mopro-bench"


@dataclass
class ResolvedCheckpoint:
    """A ``--ckpt`` value made local. ``path``: the file (or the unchanged spec for paths and ``random:``)."""

    path: str
    name: str | None = None  # display name, e.g. "moco_v2_800ep"
    select: str | None = None  # network to take from two-network files
    source: dict[str, Any] | None = None  # provenance: {"zoo", "url", "sha256", ...}


@dataclass
class Fetched:
    path: Path
    sha256: str
    bytes: int
    downloaded: bool  # False: served from the cache


def is_url(spec: str) -> bool:
    return str(spec).lower().startswith(URL_SCHEMES)


def checkpoints_dir(cache_dir: str | os.PathLike) -> Path:
    return Path(cache_dir).expanduser() / "checkpoints"


def url_filename(url: str) -> str:
    name = unquote(Path(urlsplit(url).path).name)
    return name if name and name not in (".", "..") else "checkpoint"


def cache_path(cache_dir: str | os.PathLike, url: str, entry: zoo.ZooEntry | None = None) -> Path:
    """Where ``url`` lives in the cache: zoo files under their own name, other URLs in a per-URL folder."""
    if entry is not None:
        return checkpoints_dir(cache_dir) / entry.filename
    tag = hashlib.sha256(url.encode("utf-8")).hexdigest()[:12]
    return checkpoints_dir(cache_dir) / f"url-{tag}" / url_filename(url)


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        v = float(raw)
    except ValueError:
        raise BenchError(f"${name}={raw!r} is not a number of seconds", f"e.g. {name}={default:g}") from None
    if v <= 0:
        raise BenchError(f"${name}={raw!r} must be positive", f"e.g. {name}={default:g}")
    return v


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


# ------------------------------------------------------------------------------------------------ the index

def _index_path(cache_dir: str | os.PathLike) -> Path:
    return checkpoints_dir(cache_dir) / INDEX_NAME


def read_index(cache_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``{url: {"sha256", "bytes", "file", "mtime_ns", "md5", "recorded"}}``; a damaged index is refused."""
    import json

    p = _index_path(cache_dir)
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as e:
        raise BenchError(f"checkpoint cache index {p} is damaged ({e})",
                         f"delete {p} (the SHA-256 pins of earlier downloads are lost; files are re-hashed)") from None
    return data if isinstance(data, dict) else {}


def _record(cache_dir: str | os.PathLike, url: str, info: dict[str, Any]) -> None:
    with _lock(_index_path(cache_dir)):  # read-modify-write: two processes fetching two files keep both entries
        idx = read_index(cache_dir)
        idx[url] = info
        atomic_write_json(_index_path(cache_dir), dict(sorted(idx.items())))


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive lock per cache file, so two processes (e.g. DDP ranks) do not write one ``.part`` together."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _hash_file(path: Path, md5: bool = False) -> tuple[str, str | None]:
    h, m = hashlib.sha256(), (hashlib.md5(usedforsecurity=False) if md5 else None)
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
            if m is not None:
                m.update(block)
    return h.hexdigest(), (m.hexdigest() if m is not None else None)


def _expected(url: str, entry: zoo.ZooEntry | None) -> dict[str, str]:
    """Published hashes for ``url``: {"sha256": full} / {"sha256_prefix": hex} / {"md5_prefix": hex}."""
    exp: dict[str, str] = {}
    if entry is not None and entry.sha256:
        exp["sha256"] = entry.sha256.lower()
    m = HASH_IN_NAME.search(url_filename(url))
    if m and "sha256" not in exp:
        exp["sha256_prefix"] = m.group(1)
    if entry is not None and entry.md5_prefix:
        exp["md5_prefix"] = entry.md5_prefix.lower()
    return exp


def _check(url: str, where: Path, sha: str, md5: str | None, exp: dict[str, str], pinned: str | None,
           index: Path, cached: bool) -> None:
    """Refuse content that disagrees with a published hash or with the SHA-256 pinned at the first download."""
    what = f"cached file {where}" if cached else f"download of {url}"
    fix_cached = f"delete {where} and run again to download it afresh"
    problems = []
    if "sha256" in exp and sha != exp["sha256"]:
        problems.append(f"sha256 {sha[:16]}... is not the published {exp['sha256'][:16]}...")
    if "sha256_prefix" in exp and not sha.startswith(exp["sha256_prefix"]):
        problems.append(f"sha256 {sha[:16]}... does not start with {exp['sha256_prefix']} (the hash in its file name)")
    if "md5_prefix" in exp and md5 is not None and not md5.startswith(exp["md5_prefix"]):
        problems.append(f"md5 {md5[:16]}... does not start with the published {exp['md5_prefix']}")
    if problems:
        fix = fix_cached if cached else "run again to retry (a corrupted transfer); if it persists the file was replaced " \
                                        "upstream -- do not use it"
        raise BenchError(f"{what}: {'; '.join(problems)}", fix)
    if pinned and sha != pinned:
        fix = (fix_cached if cached else "run again to retry") + \
            f"; if the publisher replaced the file on purpose, remove the entry for {url} from {index} to accept the new one"
        raise BenchError(f"{what}: sha256 {sha[:16]}... differs from {pinned[:16]}... recorded at its first download", fix)


# ------------------------------------------------------------------------------------------------ download

class _Stalled(Exception):
    pass


def _open(url: str, offset: int, connect_timeout: float, read_timeout: float):
    """Open ``url`` (from byte ``offset``); the response's socket reads are bounded by ``read_timeout``."""
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset and not url.lower().startswith("file://"):
        req.add_header("Range", f"bytes={offset}-")
    resp = urllib.request.urlopen(req, timeout=connect_timeout)  # noqa: S310 - http(s)/file only (checked by caller)
    with contextlib.suppress(AttributeError, OSError):  # http.client: bound every read of the body, not only connect
        resp.fp.raw._sock.settimeout(read_timeout)
    return resp


def _total_and_start(resp, url: str, offset: int) -> tuple[int | None, int]:
    """(total size or None, byte the body starts at) for a response to a request from ``offset``; -1: unusable range."""
    length = resp.headers.get("Content-Length")
    if getattr(resp, "status", None) == 206:
        m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", ""))
        if m and int(m.group(1)) == offset:
            return (int(m.group(3)) if m.group(3) != "*" else None), offset
        return None, -1
    return (int(length) if length and length.isdigit() else None), 0  # whole file (file://, or no Range support)


def _network_error(url: str, dest: Path, reason: str) -> BenchError:
    return BenchError(f"cannot download {url} ({reason})",
                      f"check the network (or proxy) and run again, or download the file elsewhere and place it at "
                      f"{dest} exactly; it is verified on first use")


def _attempt(url: str, part: Path, *, connect_timeout: float, read_timeout: float, progress: bool,
             label: str) -> tuple[int, int | None]:
    """One transfer into ``part`` (resuming from its size). Returns (bytes in part, total or None)."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(url, offset, connect_timeout, read_timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # the .part is not a prefix the server recognises: start over
            part.unlink()
            return _attempt(url, part, connect_timeout=connect_timeout, read_timeout=read_timeout, progress=progress,
                            label=label)
        raise
    with resp:
        total, start = _total_and_start(resp, url, offset)
        if start != offset:  # the server sent the whole file (no Range support) or another range
            if start < 0:
                resp.close()
                part.unlink(missing_ok=True)
                return _attempt(url, part, connect_timeout=connect_timeout, read_timeout=read_timeout,
                                progress=progress, label=label)
            offset = 0
        from tqdm import tqdm

        mode = "ab" if offset else "wb"
        with open(part, mode) as fh, tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                                          desc=label, disable=None if progress else True, file=sys.stderr,
                                          leave=False) as bar:  # None: no bar when stderr is not a terminal
            if offset == 0:
                fh.truncate(0)
            while True:
                try:
                    block = resp.read(CHUNK)
                except TimeoutError as e:
                    raise _Stalled(f"no data for {read_timeout:g} s") from e
                if not block:
                    break
                fh.write(block)
                bar.update(len(block))
            fh.flush()
            os.fsync(fh.fileno())
    return part.stat().st_size, total


def download(url: str, dest: Path, *, progress: bool = True, connect_timeout: float | None = None,
             read_timeout: float | None = None, attempts: int | None = None) -> tuple[Path, int]:
    """Stream ``url`` into ``dest.part`` (resuming), check its length; returns (the .part path, its size).

    Raises BenchError naming the fix on a network failure, a stall, or a transfer that stays short of the length the
    server announced (the ``.part`` is kept, so the next run resumes)."""
    connect_timeout = connect_timeout or _env_float(CONNECT_TIMEOUT_ENV, DEFAULT_CONNECT_TIMEOUT)
    read_timeout = read_timeout or _env_float(READ_TIMEOUT_ENV, DEFAULT_READ_TIMEOUT)
    attempts = attempts or int(_env_float(ATTEMPTS_ENV, DEFAULT_ATTEMPTS))
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    why = ""
    for _ in range(attempts):
        before = part.stat().st_size if part.exists() else 0
        try:
            size, total = _attempt(url, part, connect_timeout=connect_timeout, read_timeout=read_timeout,
                                   progress=progress, label=dest.name)
            if total is None or size == total:
                if size == 0:
                    raise BenchError(f"{url} is empty (0 bytes)", "check the URL")
                return part, size
            if size > total:
                part.unlink()
                why = f"got {size} bytes, more than the {total} announced"
            else:
                why = f"the transfer stopped at {size} of {total} bytes"
        except urllib.error.HTTPError as e:
            if e.code in (401, 403, 404, 410):
                raise BenchError(f"cannot download {url} (HTTP {e.code} {e.reason})",
                                 f"check the URL, or download the file elsewhere and place it at {dest} exactly") from None
            why = f"HTTP {e.code} {e.reason}"
        except _Stalled as e:
            why = str(e)
        except http.client.HTTPException as e:  # IncompleteRead of a chunked body, a malformed response
            why = f"{type(e).__name__} from the server"
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, (socket.timeout, TimeoutError)):
                reason = f"no connection within {connect_timeout:g} s"
            if not part.exists():
                raise _network_error(url, dest, str(reason)) from None
            why = str(reason)
        except TimeoutError:
            why = f"no response within {connect_timeout:g} s"
        except OSError as e:  # connection reset mid-transfer, ...
            why = f"{type(e).__name__}: {e}"
        if (part.stat().st_size if part.exists() else 0) <= before:
            break  # this attempt added nothing: another one would not either
        time.sleep(0.2)
    have = part.stat().st_size if part.exists() else 0
    kept = f"; {have} bytes are kept in {part} and the next run resumes from there" if have else ""
    raise BenchError(f"download of {url} failed: {why}{kept}",
                     f"run the same command again (or place the complete file at {dest} exactly)")


def fetch(url: str, cache_dir: str | os.PathLike, *, entry: zoo.ZooEntry | None = None, progress: bool = True,
          connect_timeout: float | None = None, read_timeout: float | None = None, attempts: int | None = None) -> Fetched:
    """The verified local copy of ``url`` in the cache, downloading it first when needed."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise BenchError(f"unsupported URL scheme in {url!r}", "use https://, http:// or file://")
    entry = entry or zoo.by_url(url)
    dest = cache_path(cache_dir, url, entry)
    if scheme == "file" and not dest.is_file():
        src = Path(urllib.request.url2pathname(urlsplit(url).path))
        if not src.is_file():
            raise BenchError(f"{url}: there is no file {src}", "check the path (file:///absolute/path/to/file.pth)")
    exp = _expected(url, entry)
    with _lock(dest):
        index = read_index(cache_dir)
        rec = index.get(url) or {}
        pinned = rec.get("sha256")
        if dest.is_file():
            st = dest.stat()
            same = rec.get("file") == str(dest) and rec.get("bytes") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns
            if same and pinned and ("md5_prefix" not in exp or rec.get("md5")):
                sha, md5 = pinned, rec.get("md5")
            else:
                sha, md5 = _hash_file(dest, md5="md5_prefix" in exp)
            _check(url, dest, sha, md5, exp, pinned, _index_path(cache_dir), cached=True)
            if not same:
                _record(cache_dir, url, {"file": str(dest), "sha256": sha, "md5": md5, "bytes": st.st_size,
                                         "mtime_ns": st.st_mtime_ns, "recorded": rec.get("recorded") or _now(),
                                         "how": rec.get("how") or "placed in the cache by hand"})
            return Fetched(dest, sha, st.st_size, downloaded=False)
        if _offline():
            raise BenchError(f"{url} is not in the cache and ${OFFLINE_ENV} forbids the network",
                             f"download it elsewhere and place it at {dest} exactly, or unset {OFFLINE_ENV}")
        part, size = download(url, dest, progress=progress, connect_timeout=connect_timeout, read_timeout=read_timeout,
                              attempts=attempts)
        sha, md5 = _hash_file(part, md5="md5_prefix" in exp)
        try:
            _check(url, dest, sha, md5, exp, pinned, _index_path(cache_dir), cached=False)
        except BenchError:
            part.unlink(missing_ok=True)  # complete but wrong: never resume from it
            raise
        os.replace(part, dest)
        with contextlib.suppress(OSError):
            dfd = os.open(dest.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        st = dest.stat()
        _record(cache_dir, url, {"file": str(dest), "sha256": sha, "md5": md5, "bytes": st.st_size,
                                 "mtime_ns": st.st_mtime_ns, "recorded": rec.get("recorded") or _now(), "how": "downloaded"})
        return Fetched(dest, sha, st.st_size, downloaded=True)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def is_cached(entry: zoo.ZooEntry, cache_dir: str | os.PathLike) -> bool:
    return cache_path(cache_dir, entry.url, entry).is_file()


# ------------------------------------------------------------------------------------------------ resolve

def _zoo_source(entry: zoo.ZooEntry, fetched: Fetched) -> dict[str, Any]:
    return {"zoo": entry.name, "url": entry.url, "sha256": fetched.sha256, "url_source": entry.url_source,
            "method": entry.method, "pretrain_data": entry.pretrain_data, "epochs": entry.epochs,
            "citation": entry.citation, "published": entry.published}


def resolve_checkpoint(spec: str, *, cache_dir: str | os.PathLike, progress: bool = True,
                       connect_timeout: float | None = None, read_timeout: float | None = None) -> ResolvedCheckpoint:
    """A ``--ckpt`` value -> a local file (see the module docstring). Paths and ``random:`` pass through untouched."""
    spec = str(spec)
    kw = {"progress": progress, "connect_timeout": connect_timeout, "read_timeout": read_timeout}
    if spec.startswith("zoo:"):
        name, _, sel = spec[len("zoo:"):].partition("#")
        entry = zoo.get(name.strip())
        got = fetch(entry.url, cache_dir, entry=entry, **kw)
        select = sel or entry.select
        shown = entry.name + (f"#{sel}" if sel and sel != entry.select else "")
        return ResolvedCheckpoint(str(got.path), shown, select, _zoo_source(entry, got))
    if is_url(spec):
        parts = urlsplit(spec)
        url = urlunsplit(parts._replace(fragment=""))
        sel = parts.fragment or None
        entry = zoo.by_url(url)
        got = fetch(url, cache_dir, entry=entry, **kw)
        if entry is not None:
            shown = entry.name + (f"#{sel}" if sel and sel != entry.select else "")
            return ResolvedCheckpoint(str(got.path), shown, sel or entry.select, _zoo_source(entry, got))
        shown = url_filename(url) + (f"#{sel}" if sel else "")
        return ResolvedCheckpoint(str(got.path), shown, sel, {"url": url, "sha256": got.sha256})
    return ResolvedCheckpoint(spec)
