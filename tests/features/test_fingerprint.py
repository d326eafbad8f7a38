"""mopro_bench.fingerprint: content fingerprints of file lists and the per-file index behind them."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time

import pytest

from mopro_bench import fingerprint as F
from mopro_bench.errors import BenchError


@pytest.fixture
def files(tmp_path):
    d = tmp_path / "data" / "sub"
    d.mkdir(parents=True)
    paths = []
    for i in range(6):
        p = d / f"{i:03d}.jpg"
        p.write_bytes(os.urandom(300 + i))
        paths.append(p)
    F.clear_memory()
    return paths


def _reference(names, paths) -> str:
    """The documented formula, written plainly: sha256 over (name, size, sha256 of the bytes) lines in list order."""
    h = hashlib.sha256()
    for n, p in zip(names, paths):
        b = p.read_bytes()
        h.update(f"{n}\0{len(b)}\0{hashlib.sha256(b).hexdigest()}\n".encode())
    return h.hexdigest()


def test_fingerprint_matches_the_reference_formula_and_ignores_where_the_files_lie(files, tmp_path):
    names = [p.name for p in files]
    fp = F.fingerprint_files(files, cache_dir=tmp_path / "c", names=names)
    assert fp["sha256"] == _reference(names, files)
    assert fp["n"] == 6 and fp["bytes"] == sum(p.stat().st_size for p in files) and fp["method"] == F.METHOD
    moved = tmp_path / "moved"
    moved.mkdir()
    for p in files:
        (moved / p.name).write_bytes(p.read_bytes())
    assert F.fingerprint_files([moved / p.name for p in files], cache_dir=tmp_path / "c", names=names) == fp
    # default names: relative to the common folder, so a moved copy matches without names too
    assert F.fingerprint_files(files)["sha256"] == F.fingerprint_files([moved / p.name for p in files])["sha256"]
    # order and names count
    assert F.fingerprint_files(files[::-1], names=names[::-1])["sha256"] != fp["sha256"]
    assert F.fingerprint_files(files, names=[f"x/{n}" for n in names])["sha256"] != fp["sha256"]


def test_an_in_place_edit_changes_it_even_with_the_same_size_and_mtime(files, tmp_path, monkeypatch):
    monkeypatch.setattr(F, "RACY_SECONDS", 0.0)  # index entries are trusted at once
    cache = tmp_path / "c"
    before = F.fingerprint_files(files, cache_dir=cache)
    reused = F.STATS["reused"]
    assert F.fingerprint_files(files, cache_dir=cache) == before and F.STATS["reused"] == reused + 6
    time.sleep(0.05)
    p = files[2]
    st = p.stat()
    p.write_bytes(bytes(b ^ 0xFF for b in p.read_bytes()))  # same size, other bytes
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime put back
    assert (p.stat().st_size, p.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    hashed = F.STATS["hashed"]
    after = F.fingerprint_files(files, cache_dir=cache)
    assert after["sha256"] != before["sha256"] and after["sha256"] == _reference([q.name for q in files], files)
    assert F.STATS["hashed"] == hashed + 1  # only the edited file was read again


def test_the_index_persists_on_disk_and_survives_corruption(files, tmp_path, monkeypatch):
    monkeypatch.setattr(F, "RACY_SECONDS", 0.0)
    cache = tmp_path / "c"
    fp = F.fingerprint_files(files, cache_dir=cache)
    shards = list((cache / "fingerprints").glob("*.json"))
    assert len(shards) == 1 and json.loads(shards[0].read_text())["folder"] == str(files[0].parent.resolve())
    F.clear_memory()
    hashed = F.STATS["hashed"]
    assert F.fingerprint_files(files, cache_dir=cache) == fp and F.STATS["hashed"] == hashed  # from the disk index
    shards[0].write_text('{"version": 1, "folder": "x", "fi')  # torn / foreign shard: ignored, files re-hashed
    F.clear_memory()
    assert F.fingerprint_files(files, cache_dir=cache) == fp and F.STATS["hashed"] == hashed + 6
    obj = json.loads(shards[0].read_text())
    obj["files"][files[0].name] = [1, 2, "x", None, "zz", 0]  # a garbled entry: that file is hashed again
    shards[0].write_text(json.dumps(obj))
    F.clear_memory()
    assert F.fingerprint_files(files, cache_dir=cache) == fp and F.STATS["hashed"] == hashed + 7


def test_racily_clean_entries_are_not_trusted(files, tmp_path, monkeypatch):
    monkeypatch.setattr(F, "RACY_SECONDS", 3600.0)  # every file here was written "just now"
    cache = tmp_path / "c"
    F.fingerprint_files(files, cache_dir=cache)
    hashed = F.STATS["hashed"]
    F.fingerprint_files(files, cache_dir=cache)
    assert F.STATS["hashed"] == hashed + 6


def test_concurrent_runs_keep_a_valid_index(files, tmp_path, monkeypatch):
    monkeypatch.setattr(F, "RACY_SECONDS", 0.0)
    cache = tmp_path / "c"
    results, errors = [], []

    def run(part):
        try:
            for _ in range(5):
                results.append(F.fingerprint_files(part, cache_dir=cache)["sha256"])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(files[i::2],)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 2
    shard = json.loads(next((cache / "fingerprints").glob("*.json")).read_text())
    assert sorted(shard["files"]) == sorted(p.name for p in files)  # merged, nothing lost


def test_a_missing_file_is_a_bench_error(files, tmp_path):
    with pytest.raises(BenchError, match="does not exist"):
        F.fingerprint_files([*files, tmp_path / "nope.jpg"])


def test_changed_since_fingerprint(files, tmp_path):
    F.fingerprint_files(files, cache_dir=tmp_path / "c")
    assert F.changed_since_fingerprint(files) == []
    time.sleep(0.02)
    files[1].write_bytes(b"new")
    assert F.changed_since_fingerprint(files) == [str(files[1])]


def test_concurrent_processes_leave_valid_shards_and_agree(tmp_path):
    """4 processes fingerprint overlapping lists into one cache at once: all agree, every shard stays valid JSON."""
    import subprocess
    import sys

    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(400):
        (d / f"{i:04d}.jpg").write_bytes(os.urandom(2000))
    code = ("import sys, json, pathlib; from mopro_bench import fingerprint as F\n"
            "ps = sorted(pathlib.Path(sys.argv[1]).iterdir())\n"
            "fp = [F.fingerprint_files(ps[int(sys.argv[3])::2], cache_dir=sys.argv[2])['sha256'] for _ in range(3)]\n"
            "print(json.dumps(fp))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(d), str(tmp_path / "c"), str(k % 2)], stdout=subprocess.PIPE,
                              text=True) for k in range(4)]
    outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[2] and outs[1] == outs[3] and len(set(outs[0])) == 1 and outs[0][0] != outs[1][0]
    shard = json.loads(next((tmp_path / "c" / "fingerprints").glob("*.json")).read_text())
    assert set(shard["files"]) <= {f"{i:04d}.jpg" for i in range(400)} and len(shard["files"]) >= 200
    F.clear_memory()
    all_files = sorted(d.iterdir())
    assert F.fingerprint_files(all_files[0::2], cache_dir=tmp_path / "c")["sha256"] == outs[0][0]
