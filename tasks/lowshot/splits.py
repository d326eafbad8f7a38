"""Low-shot training samples: drawn from a seed, saved as JSON, read back and checked.

A split file is exactly::

    {"task": "voc_lowshot", "protocol": "voc_lowshot@mopro", "seed": 0,
     "k": {"1": [[id, ...], ... 5 samples], "2": [...], ...}}

Ids are VOC image ids ("000005") or Places205 relative paths. Inside a sample the ids are class-major: the block of
class 0, then class 1, ... (see each sampler for what a block holds). A file given with ``--splits`` decides which k
values run and how many samples each has.

Same seed -> same splits on any machine: every (k, sample) gets its own ``PCG64(SeedSequence([seed, k, sample]))``
(NumPy guarantees the bit streams of SeedSequence and PCG64 across versions and platforms), and the draw uses only
its raw 64-bit output -- an unbiased bounded integer by rejection, then a partial Fisher-Yates shuffle -- never
``Generator.choice`` (whose algorithm NumPy may change). Candidates are sorted by id before drawing, so the order of
lines in the dataset's files does not matter either.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mopro_bench.errors import BenchError
from mopro_bench.io import atomic_write_text, sha256_file, sha256_json

_U64 = 1 << 64


class StableRNG:
    """Bounded integers from PCG64's raw stream (stable across NumPy versions and platforms)."""

    def __init__(self, *key: int):
        self._bg = np.random.PCG64(np.random.SeedSequence([int(k) for k in key]))

    def below(self, n: int) -> int:
        """Uniform integer in ``[0, n)`` (rejection sampling, no modulo bias)."""
        if n <= 0:
            raise ValueError("n must be positive")
        limit = _U64 - (_U64 % n)
        while True:
            u = int(self._bg.random_raw())
            if u < limit:
                return u % n

    def sample(self, population: Sequence[Any], size: int) -> list[Any]:
        """``size`` distinct items of ``population`` in drawn order (partial Fisher-Yates)."""
        pool = list(population)
        if size > len(pool):
            raise ValueError(f"cannot draw {size} of {len(pool)}")
        for i in range(size):
            j = i + self.below(len(pool) - i)
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:size]


def sample_rng(seed: int, k: int, sample: int) -> StableRNG:
    return StableRNG(seed, k, sample)


# ------------------------------------------------------------------------------------------------------------ samplers
def _too_few(k: int, have: int, what: str, cls: str, per_k: int = 1) -> BenchError:
    """``per_k`` images of that kind are needed per shot (19 negatives per positive for goyal19)."""
    return BenchError(f"k={k} needs {per_k * k} {what} for class {cls!r} but the training split has {have}",
                      f"use k <= {have // per_k} for this dataset (--set ks=[...]; the record is then marked modified) or "
                      "the complete dataset")


def voc_union_sample(ids: Sequence[str], labels: np.ndarray, classes: Sequence[str], k: int, rng: StableRNG) -> list[str]:
    """``voc_lowshot@mopro``: per class, ``k`` images whose label is positive (1); the sample is the concatenation
    (class-major, an image may appear more than once)."""
    out: list[str] = []
    for c, cls in enumerate(classes):
        cand = sorted(ids[i] for i in np.flatnonzero(labels[:, c] == 1))
        if len(cand) < k:
            raise _too_few(k, len(cand), "positive images", cls)
        out.extend(rng.sample(cand, k))
    return out


def voc_pos_neg_sample(ids: Sequence[str], labels: np.ndarray, classes: Sequence[str], k: int, rng: StableRNG,
                       negatives_per_positive: int) -> list[str]:
    """``voc_lowshot@goyal19``: per class a block of ``k`` positives followed by ``negatives_per_positive * k``
    negatives (label -1; difficult images are neither)."""
    out: list[str] = []
    nn = negatives_per_positive * k
    for c, cls in enumerate(classes):
        pos = sorted(ids[i] for i in np.flatnonzero(labels[:, c] == 1))
        neg = sorted(ids[i] for i in np.flatnonzero(labels[:, c] == -1))
        if len(pos) < k:
            raise _too_few(k, len(pos), "positive images", cls)
        if len(neg) < nn:
            raise _too_few(k, len(neg), f"negative images ({negatives_per_positive} per positive)", cls, negatives_per_positive)
        out.extend(rng.sample(pos, k))
        out.extend(rng.sample(neg, nn))
    return out


def per_class_sample(samples: Sequence[tuple[str, int]], num_classes: int, k: int, rng: StableRNG,
                     class_names: Sequence[str] | None = None) -> list[str]:
    """Places205: ``k`` images of every class (class-major)."""
    by_class: list[list[str]] = [[] for _ in range(num_classes)]
    for rel, label in samples:
        by_class[label].append(rel)
    out: list[str] = []
    for c in range(num_classes):
        cand = sorted(by_class[c])
        if len(cand) < k:
            raise _too_few(k, len(cand), "images", class_names[c] if class_names else str(c))
        out.extend(rng.sample(cand, k))
    return out


def draw_splits(task: str, protocol: str, seed: int, ks: Sequence[int], num_samples: int, draw) -> dict[str, Any]:
    """``draw(k, rng) -> [ids]`` for every k and sample, each with its own :func:`sample_rng`."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= int(seed) < _U64:
        raise BenchError(f"seed {seed!r} cannot draw low-shot samples: it must be an integer in [0, 2**64)",
                         "pass --seed with a non-negative integer (default 0)")
    return {
        "task": task,
        "protocol": protocol,
        "seed": int(seed),
        "k": {str(int(k)): [draw(int(k), sample_rng(seed, int(k), s)) for s in range(num_samples)] for k in ks},
    }


# ------------------------------------------------------------------------------------------------------------ files
def dumps_splits(splits: dict[str, Any]) -> str:
    """JSON text with one line per sample (readable and diff-able; any JSON reader reads it)."""
    head = {k: splits[k] for k in ("task", "protocol", "seed")}
    lines = ["{"] + [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()] + ['  "k": {']
    ks = list(splits["k"])
    for a, k in enumerate(ks):
        runs = splits["k"][k]
        lines.append(f"    {json.dumps(k)}: [")
        lines += [f"      {json.dumps(ids)}{',' if b < len(runs) - 1 else ''}" for b, ids in enumerate(runs)]
        lines.append("    ]" + ("," if a < len(ks) - 1 else ""))
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def save_splits(path: str | Path, splits: dict[str, Any]) -> Path:
    return atomic_write_text(path, dumps_splits(splits))


def splits_sha256(splits: dict[str, Any]) -> str:
    """Content hash (canonical JSON): equal for a drawn split and the same split read back from a file."""
    return sha256_json(splits)


def load_splits(path: str | Path, task: str) -> tuple[dict[str, Any], str]:
    """Read and check a split file's structure; returns ``(splits, sha256 of the file)``."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"splits file {path} does not exist", "pass a file written by --save-splits")
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BenchError(f"splits file {path} is not valid JSON ({e})", "pass a file written by --save-splits") from None
    fix = 'the format is {"task", "protocol", "seed", "k": {"1": [[id, ...], ...], ...}} (see --save-splits)'
    if not isinstance(obj, dict) or set(obj) != {"task", "protocol", "seed", "k"}:
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise BenchError(f"splits file {path} has keys {keys}, expected task, protocol, seed, k", fix)
    if obj["task"] != task:
        raise BenchError(f"splits file {path} is for task {obj['task']!r}, not {task!r}", f"pass a {task} splits file")
    if not isinstance(obj["seed"], int) or not isinstance(obj["protocol"], str):
        raise BenchError(f"splits file {path}: seed must be an integer and protocol a string", fix)
    ks = obj["k"]
    if not isinstance(ks, dict) or not ks:
        raise BenchError(f"splits file {path}: 'k' must be a non-empty object", fix)
    for key, runs in ks.items():
        if not key.isdigit() or int(key) < 1 or str(int(key)) != key:
            raise BenchError(f"splits file {path}: k {key!r} is not a positive integer", fix)
        if not isinstance(runs, list) or not runs:
            raise BenchError(f"splits file {path}: k={key} must hold a non-empty list of samples", fix)
        for s, ids in enumerate(runs):
            if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
                raise BenchError(f"splits file {path}: k={key} sample {s} must be a non-empty list of id strings", fix)
    obj["k"] = {str(k): ks[str(k)] for k in sorted(int(k) for k in ks)}
    return obj, sha256_file(path)


def check_known(splits: dict[str, Any], known: set[str] | dict[str, Any], what: str, source: str) -> None:
    """Every id of every sample must be in ``known`` (the training split); else one BenchError naming the first."""
    for k, runs in splits["k"].items():
        for s, ids in enumerate(runs):
            unknown = [i for i in ids if i not in known]
            if unknown:
                more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
                raise BenchError(f"splits file {source}: k={k} sample {s} names {unknown[0]!r}{more}, not in {what}",
                                 "use a splits file written for this dataset (--save-splits), or drop --splits")
