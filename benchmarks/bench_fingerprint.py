"""Cost of the dataset content fingerprint (``mopro_bench.fingerprint.fingerprint_files``) on many small files.

Writes ``--files`` files of ``--size-kb`` random bytes (JPEG-sized; ImageNet val averages ~110 KB, VOC07 ~100 KB,
the default 50,000 x 110 KB = 5.5 GB) in folders of ``--per-folder`` files, then times:

    stat       os.stat of every file (the floor of any check)
    read       reading every file's bytes, no hashing (the I/O floor of a content hash)
    blake2b    read + hashlib.blake2b per file (the alternative to sha256, for comparison)
    cold-1     fingerprint_files with an empty index, one hashing thread: every file read and sha256-hashed
    cold       the same with the default HASH_THREADS threads (what a run does), another empty index
    warm-disk  a new process's first call (in-memory index cleared): shards read from disk, one stat per file
    warm       the same process again: in-memory index, one stat per file

The files were just written, so they are in the page cache: "cold" measures hashing, not the disk. The first
fingerprint of a dataset on a cold disk costs about what reading the dataset once costs (the ``read`` row with the
cache dropped), which the first feature extraction pays anyway.

    python benchmarks/bench_fingerprint.py                        # 50,000 x 110 KB
    python benchmarks/bench_fingerprint.py --files 5000 --size-kb 20
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import torch  # noqa: E402

from mopro_bench import fingerprint as F  # noqa: E402


def make_files(root: Path, n: int, size: int, per_folder: int) -> list[str]:
    rng = os.urandom(size + 4096)
    paths = []
    for i in range(n):
        d = root / f"d{i // per_folder:04d}"
        if i % per_folder == 0:
            d.mkdir(parents=True, exist_ok=True)
        p = d / f"{i:08d}.jpg"
        off = i % 4096
        p.write_bytes(rng[off:off + size])
        paths.append(str(p))
    # a dataset is written well before it is evaluated: wait out the "racily clean" window of the index
    time.sleep(F.RACY_SECONDS + 0.5)
    return paths


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=50_000)
    ap.add_argument("--size-kb", type=float, default=110)
    ap.add_argument("--per-folder", type=int, default=1000, help="files per folder (ImageNet: 50 val / 1300 train)")
    ap.add_argument("--dir", type=Path, help="where to write the files (default: a temporary folder, removed after)")
    a = ap.parse_args()
    size = int(a.size_kb * 1024)
    C.header("dataset content fingerprint", torch.device("cpu"), files=a.files, size_kb=a.size_kb, per_folder=a.per_folder)
    tmp = Path(tempfile.mkdtemp(prefix="bench_fp_", dir=a.dir))
    try:
        t0 = time.perf_counter()
        paths = make_files(tmp / "data", a.files, size, a.per_folder)
        t_make = time.perf_counter() - t0 - F.RACY_SECONDS - 0.5
        print(f"wrote {a.files} files x {size} bytes ({a.files * size / 1e9:.2f} GB) in {t_make:.1f} s")
        cache = tmp / "cache"
        rows = []

        def read_all():
            for p in paths:
                with open(p, "rb") as fh:
                    while fh.read(1 << 20):
                        pass

        def blake_all():
            for p in paths:
                with open(p, "rb") as fh:
                    hashlib.blake2b(fh.read()).hexdigest()

        rows.append({"row": "stat", "s": timed(lambda: [os.stat(p) for p in paths])})
        rows.append({"row": "read", "s": timed(read_all)})
        rows.append({"row": "blake2b", "s": timed(blake_all)})
        fp = {}
        F.clear_memory()
        threads, F.HASH_THREADS = F.HASH_THREADS, 1
        run = lambda key, where: timed(lambda: fp.setdefault(key, F.fingerprint_files(paths, cache_dir=where)))  # noqa: E731
        rows.append({"row": "cold-1", "s": run("cold1", tmp / "c1")})
        F.HASH_THREADS = threads
        F.clear_memory()
        F.STATS["hashed"] = 0
        rows.append({"row": f"cold ({threads} threads)", "s": run("cold", cache)})
        hashed_cold = F.STATS["hashed"]
        F.clear_memory()
        rows.append({"row": "warm-disk", "s": run("disk", cache)})
        rows.append({"row": "warm", "s": run("warm", cache)})
        assert fp["cold1"] == fp["cold"] == fp["disk"] == fp["warm"], "fingerprints differ between cold and warm"
        assert F.STATS["hashed"] == hashed_cold == a.files, F.STATS
        index_bytes = sum(p.stat().st_size for p in (cache / "fingerprints").glob("*.json"))
        for r in rows:
            r["per_file"] = r["s"] / a.files * 1e6
            r["gbps"] = a.files * size / r["s"] / 1e9 if r["row"].startswith(("read", "blake2b", "cold")) else None
        C.table(rows, [("row", "row", ""), ("s", "seconds", ".3f"), ("per_file", "us / file", ".1f"),
                       ("gbps", "GB/s", ".2f")])
        print(f"index: {index_bytes / 1e6:.1f} MB in {len(list((cache / 'fingerprints').glob('*.json')))} shards; "
              f"fingerprint {fp['cold']['sha256'][:16]} of {fp['cold']['n']} files, {fp['cold']['bytes']} bytes")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    C.run_main(main)
