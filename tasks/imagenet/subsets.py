"""Labelled subsets of ImageNet train for semi-supervised finetuning (1% / 10%).

Two sources:

* **A SimCLR-format list** (``--subset-file 1percent.txt``): one bare file name per line, e.g.
  ``n01440764_10026.JPEG`` -- the standard lists have 12,811 (1%) and 128,116 (10%) lines. Every name must exist
  in the train split; the list is used exactly (no image added or dropped).
* **A seeded class-balanced draw**: every class keeps the same fraction of its images (its quota is
  ``fraction * n_class`` rounded by the largest-remainder rule so the total is ``round(fraction * N)``, at least one
  image per class), the images drawn uniformly without replacement with ``numpy.random.default_rng(seed)``. The drawn
  list is written in the SimCLR format, so ``--subset-file`` reproduces it anywhere.

Either way the subset is identified by ``sha256`` of its sorted file names (independent of order and newlines),
which goes into the result record.

A third source reproduces what MoPro's released ``finetune_imagenet.py`` actually trained on (**"as released"**): it
shuffles ``ImageFolder(train).samples`` with Python's ``random`` and keeps the first ``int(fraction * N)`` -- inside
each process that ``mp.spawn`` starts, where the parent's ``--seed`` (default None) is never applied -- and then a
``DistributedSampler`` gives every process ``1/W`` of *its own* list each epoch. So on ``W`` GPUs the model sees ``W``
independent random (not class-balanced) subsets, ``N (1 - (1 - f)^W)`` distinct images in expectation: about 7.7% of
ImageNet for "1%" and 57% for "10%" on 8 GPUs. :func:`draw_as_released` draws those ``W`` subsets from a seed
(``numpy`` generator per rank, independent of how many processes this run uses) and :func:`as_released_epoch_order`
lays out each epoch as the ``W`` samplers would.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mopro_bench.data.common import read_text_file
from mopro_bench.errors import BenchError
from mopro_bench.io import atomic_write_text, sha256_file, sha256_lines

# sizes of the standard SimCLR lists (for a warning when a list looks like the other fraction's)
SIMCLR_LIST_SIZES = {0.01: 12811, 0.1: 128116}
IMAGENET_TRAIN_SIZE = 1281167


def read_simclr_list(path: str | Path) -> list[str]:
    """File names of a SimCLR-format subset list (blank lines and ``#`` comments ignored; a ``wnid/`` prefix is tolerated)."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"subset file {path} does not exist",
                         "pass a SimCLR list (e.g. 1percent.txt from google-research/simclr imagenet_subsets) "
                         "or leave --subset-file out to draw a seeded class-balanced subset")
    text = read_text_file(path, "subset file")  # UTF-8 (BOM dropped); bad bytes or an unreadable file: one line
    names = []
    for i, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if len(line.split()) != 1:
            raise BenchError(f"subset file {path} line {i} is not a single file name: {line[:80]!r}",
                             "use the SimCLR format: one bare file name per line, e.g. n01440764_10026.JPEG")
        names.append(line.replace("\\", "/").rsplit("/", 1)[-1])
    if not names:
        raise BenchError(f"subset file {path} lists no images", "pass a SimCLR list with one file name per line")
    dup = [n for n, c in Counter(names).items() if c > 1]
    if dup:
        raise BenchError(f"subset file {path} lists {len(dup)} name(s) twice (e.g. {dup[0]})", "remove the duplicate lines")
    return names


def subset_sha256(names: Sequence[str]) -> str:
    """Identity of a subset: sha256 of its sorted file names joined by newlines."""
    return sha256_lines(sorted(names))


def write_subset_file(path: str | Path, names: Sequence[str]) -> Path:
    """Write ``names`` sorted, one per line (SimCLR format), atomically."""
    return atomic_write_text(path, "".join(n + "\n" for n in sorted(names)))


def _basename(p: str | Path) -> str:
    return str(p).replace("\\", "/").rsplit("/", 1)[-1]


def index_by_name(samples: Sequence[tuple[Any, int]]) -> dict[str, int]:
    """File name -> position in ``samples``; a name that occurs twice in the train split is an error."""
    out: dict[str, int] = {}
    for i, (p, _) in enumerate(samples):
        name = _basename(p)
        if name in out:
            raise BenchError(f"file name {name} occurs twice in the train split",
                             "subset lists name files by their bare name; make train file names unique")
        out[name] = i
    return out


def select_listed(samples: Sequence[tuple[Any, int]], names: Sequence[str], source: str = "subset file") -> list[int]:
    """Positions in ``samples`` of the listed names (sorted); every name must be present."""
    by_name = index_by_name(samples)
    missing = [n for n in names if n not in by_name]
    if missing:
        raise BenchError(
            f"{len(missing)} of {len(names)} images in {source} are not in the train split (e.g. {', '.join(missing[:3])})",
            "check that --data is the ImageNet root whose train/ the list was made for",
        )
    return sorted(by_name[n] for n in names)


def balanced_quotas(class_counts: dict[int, int], fraction: float, seed: int = 0) -> dict[int, int]:
    """Per-class sample counts for a class-balanced ``fraction``: floor(f * n_c) plus the largest remainders.

    The total is ``round(f * N)`` (more only if the one-image minimum per class needs it); each quota is the floor or
    the ceiling of ``f * n_c``. Ties between equal remainders are broken by a seeded shuffle, not by class index.
    """
    if not 0 < fraction <= 1:
        raise BenchError(f"subset fraction {fraction} is not in (0, 1]", "use e.g. --set fraction=0.01")
    labels = sorted(class_counts)
    exact = {c: fraction * class_counts[c] for c in labels}
    quota = {c: int(np.floor(exact[c] + 1e-9)) for c in labels}
    total = int(round(fraction * sum(class_counts.values())))
    rng = np.random.default_rng([seed, 7])
    tie = dict(zip(labels, rng.permutation(len(labels)).tolist()))
    order = sorted(labels, key=lambda c: (-(exact[c] - quota[c]), tie[c]))
    for c in order[: max(0, total - sum(quota.values()))]:
        quota[c] += 1
    for c in labels:
        quota[c] = min(class_counts[c], max(1, quota[c]))
    return quota


def draw_balanced(samples: Sequence[tuple[Any, int]], fraction: float, seed: int) -> list[int]:
    """Positions (sorted) of a seeded class-balanced draw of ``fraction`` of ``samples``.

    Within a class the candidates are ordered by file name first, so the draw depends only on the files and the
    seed, not on the order a directory listing returned them in.
    """
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, (_, label) in enumerate(samples):
        by_class[int(label)].append(i)
    quotas = balanced_quotas({c: len(v) for c, v in by_class.items()}, fraction, seed)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for c in sorted(by_class):
        idx = sorted(by_class[c], key=lambda i: _basename(samples[i][0]))
        pick = rng.choice(len(idx), size=quotas[c], replace=False)
        chosen.extend(idx[j] for j in pick)
    return sorted(chosen)


@dataclass
class LabelledSubset:
    """The subset a semi-supervised run trains on, and where it came from."""

    indices: list[int]  # positions in the train samples
    names: list[str]  # file names (SimCLR format)
    source: str  # "file" | "seeded"
    sha256: str  # subset_sha256(names)
    file: str | None = None  # the list given or written
    file_sha256: str | None = None  # sha256 of that file's bytes
    seed: int | None = None
    per_class: dict[int, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # source-specific record fields (as-released: ranks, union)

    def record(self) -> dict[str, Any]:
        counts = list(self.per_class.values())
        return {
            "subset_source": self.source,
            "subset_sha256": self.sha256,
            # the list given; a drawn list is written next to the result and listed among the record's artifacts
            # (its path there is final; a path here could go stale when the record is renamed)
            "subset_file": self.file if self.source == "file" else None,
            "subset_file_sha256": self.file_sha256,
            "subset_seed": self.seed,
            "subset_size": len(self.indices),
            "subset_classes": len(self.per_class),
            "subset_per_class_min": min(counts) if counts else 0,
            "subset_per_class_max": max(counts) if counts else 0,
            **self.extra,
        }


def resolve_subset(samples: Sequence[tuple[Any, int]], fraction: float, *, subset_file: str | Path | None = None,
                   seed: int = 0, save_to: str | Path | None = None) -> LabelledSubset:
    """The subset from ``subset_file`` if given, else a seeded class-balanced draw (written to ``save_to``)."""
    warnings: list[str] = []
    if subset_file:
        names = read_simclr_list(subset_file)
        indices = select_listed(samples, names, source=str(subset_file))
        expected = fraction * len(samples)
        if abs(len(names) - expected) > 0.25 * expected + 1:
            warnings.append(f"subset file has {len(names)} images, {100 * len(names) / len(samples):.2f}% of the "
                            f"{len(samples)} train images, but the protocol's fraction is {100 * fraction:g}%")
        sub = LabelledSubset(indices, sorted(names), "file", subset_sha256(names), file=str(subset_file),
                             file_sha256=sha256_file(subset_file), warnings=warnings)
    else:
        indices = draw_balanced(samples, fraction, seed)
        names = [_basename(samples[i][0]) for i in indices]
        index_by_name(samples)  # the written list must identify files unambiguously
        file = file_sha = None
        if save_to is not None:
            file = str(write_subset_file(save_to, names))
            file_sha = sha256_file(file)
        sub = LabelledSubset(indices, sorted(names), "seeded", subset_sha256(names), file=file, file_sha256=file_sha,
                             seed=seed, warnings=warnings)
    sub.per_class = dict(sorted(Counter(int(samples[i][1]) for i in sub.indices).items()))
    return sub


# ------------------------------------------------------------------------------------------------------ as released
def as_released_size(n_train: int, fraction: float) -> int:
    """Images per process: ``int(fraction * N)`` as ``finetune_imagenet.py`` truncates (at least one)."""
    if not 0 < fraction <= 1:
        raise BenchError(f"subset fraction {fraction} is not in (0, 1]", "use e.g. --set fraction=0.01")
    return max(1, int(fraction * n_train))


def draw_as_released(samples: Sequence[tuple[Any, int]], fraction: float, num_ranks: int, seed: int) -> list[list[int]]:
    """The ``num_ranks`` per-process subsets (positions in ``samples``, each in its drawn order), each a uniform random
    ``int(fraction * N)`` images of the whole train list -- not class-balanced, drawn independently per process.

    The candidates are ordered as ``ImageFolder`` lists them (class index, then file name), so the draw depends only on
    the files, ``seed`` and the rank; process ``r`` uses ``numpy.random.default_rng([seed, r, 0xA5])``.
    """
    if num_ranks < 1:
        raise BenchError(f"num_ranks={num_ranks} is not positive", "use --set num_ranks=8 (or 4)")
    order = sorted(range(len(samples)), key=lambda i: (int(samples[i][1]), _basename(samples[i][0])))
    n = as_released_size(len(samples), fraction)
    out = []
    for r in range(num_ranks):
        pick = np.random.default_rng([int(seed), r, 0xA5]).permutation(len(order))[:n]
        out.append([order[j] for j in pick])
    return out


def expected_union_fraction(fraction: float, num_ranks: int) -> float:
    """Expected share of the train set in the union of ``num_ranks`` independent uniform ``fraction`` subsets."""
    return 1.0 - (1.0 - fraction) ** num_ranks


def as_released_epoch_order(n_per_rank: int, num_ranks: int, epoch: int, seed: int) -> list[int]:
    """One epoch of the as-released training, as positions in the rank-major concatenation of the per-process subsets
    (process ``r``'s ``j``-th image is ``r * n_per_rank + j``).

    Like ``DistributedSampler`` (one permutation per epoch shared by all processes, padded by wrapping to a multiple
    of ``W``, process ``r`` takes every ``W``-th item from ``r``) applied to each process's own list. The result is
    interleaved -- item ``i * W + r`` is process ``r``'s ``i``-th image -- so a strided split of any batch of
    ``W * b`` consecutive items into ``W`` groups gives each group one process's ``b`` images.
    """
    if n_per_rank < 1 or num_ranks < 1:
        raise ValueError("need at least one image and one process")
    perm = np.random.default_rng([int(seed), int(epoch), 0xD5]).permutation(n_per_rank)
    total = -(-n_per_rank // num_ranks) * num_ranks
    padded = np.resize(perm, total)  # wraps around like DistributedSampler's padding
    per_rank = [padded[r::num_ranks] + r * n_per_rank for r in range(num_ranks)]
    return np.stack(per_rank, axis=1).reshape(-1).tolist()


def resolve_as_released(samples: Sequence[tuple[Any, int]], fraction: float, num_ranks: int, seed: int) -> LabelledSubset:
    """The as-released subsets as one :class:`LabelledSubset`: ``indices`` is the rank-major concatenation (an image
    drawn by two processes appears twice), ``names``/``per_class`` describe the union of distinct images."""
    ranks = draw_as_released(samples, fraction, num_ranks, seed)
    index_by_name(samples)  # names must identify files unambiguously
    rank_sha = [subset_sha256([_basename(samples[i][0]) for i in r]) for r in ranks]
    union = sorted({i for r in ranks for i in r})
    names = sorted(_basename(samples[i][0]) for i in union)
    n = len(samples)
    sub = LabelledSubset(
        [i for r in ranks for i in r], names, "as-released", sha256_lines([f"{num_ranks} {h}" for h in rank_sha]),
        seed=seed,
        extra={"subset_ranks": num_ranks, "subset_per_rank_size": len(ranks[0]), "subset_rank_sha256": rank_sha,
               "subset_union_size": len(union), "subset_union_fraction": len(union) / n if n else 0.0,
               "subset_union_sha256": subset_sha256(names),
               "subset_union_fraction_expected": expected_union_fraction(len(ranks[0]) / n, num_ranks) if n else 0.0},
    )
    sub.per_class = dict(sorted(Counter(int(samples[i][1]) for i in union).items()))
    return sub
