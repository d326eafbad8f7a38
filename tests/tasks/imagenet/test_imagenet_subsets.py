"""1% / 10% subsets: class-balanced, reproducible from the seed, SimCLR lists honoured exactly."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from mopro_bench.errors import BenchError
from mopro_bench.tasks.imagenet.subsets import (
    balanced_quotas,
    draw_balanced,
    read_simclr_list,
    resolve_subset,
    subset_sha256,
)


def fake_train(sizes: dict[int, int]) -> list[tuple[Path, int]]:
    """ImageNet-like samples: ``train/<wnid>/<wnid>_<n>.JPEG`` with ``sizes[label]`` images per class."""
    out = []
    for label, n in sizes.items():
        w = f"n{label:08d}"
        out.extend((Path(f"/data/train/{w}/{w}_{1000 + j}.JPEG"), label) for j in range(n))
    return out


def test_quotas_largest_remainder():
    counts = {0: 1300, 1: 732, 2: 1000, 3: 1170, 4: 1299}
    q = balanced_quotas(counts, 0.01, seed=0)
    assert sum(q.values()) == round(0.01 * sum(counts.values())) == 55  # floors give 13+7+10+11+12 = 53
    assert q[0] == 13 and q[2] == 10  # exact quotas stay exact
    # the two largest remainders (12.99 and 11.70) get the 2 extra images, 7.32 stays 7
    assert (q[4], q[3], q[1]) == (13, 12, 7)
    # a class too small for its fraction still gets one image (the total then exceeds round(f * N))
    q = balanced_quotas({0: 1300, 1: 5}, 0.01, seed=0)
    assert q == {0: 13, 1: 1}



def test_balanced_draw_per_class_and_seeded():
    sizes = {3: 100, 17: 100, 42: 60, 999: 40}
    train = fake_train(sizes)
    a = draw_balanced(train, 0.1, seed=0)
    per_class = Counter(train[i][1] for i in a)
    assert per_class == {3: 10, 17: 10, 42: 6, 999: 4}
    assert a == draw_balanced(train, 0.1, seed=0)  # reproducible
    assert a != draw_balanced(train, 0.1, seed=1)  # and the seed matters
    # independent of the order the directory listing returned the files in
    shuffled = list(train)
    random.Random(5).shuffle(shuffled)
    b = draw_balanced(shuffled, 0.1, seed=0)
    assert sorted(shuffled[i][0].name for i in b) == sorted(train[i][0].name for i in a)


def test_resolve_seeded_writes_a_list_that_reproduces_it(tmp_path):
    train = fake_train({1: 50, 2: 50, 3: 50})
    sub = resolve_subset(train, 0.1, seed=3, save_to=tmp_path / "s.txt")
    assert sub.source == "seeded" and len(sub.indices) == 15 and sub.per_class == {1: 5, 2: 5, 3: 5}
    lines = (tmp_path / "s.txt").read_text().split()
    assert lines == sorted(lines) and len(lines) == 15
    again = resolve_subset(train, 0.1, subset_file=tmp_path / "s.txt")
    assert again.indices == sub.indices and again.sha256 == sub.sha256 == subset_sha256(lines)
    assert sub.record()["subset_per_class_min"] == sub.record()["subset_per_class_max"] == 5


def test_simclr_list_is_used_exactly(tmp_path):
    train = fake_train({1: 20, 2: 20})
    names = ["n00000001_1003.JPEG", "n00000002_1019.JPEG", "n00000002_1000.JPEG"]
    f = tmp_path / "1percent.txt"
    f.write_text("\n".join(names) + "\n\n")
    sub = resolve_subset(train, 0.01, subset_file=f, seed=0)
    assert sorted(train[i][0].name for i in sub.indices) == sorted(names)
    assert sub.source == "file" and sub.per_class == {1: 1, 2: 2}
    assert sub.sha256 == subset_sha256(list(reversed(names)))  # order-independent identity
    assert sub.warnings  # 3 of 40 images is far from 1%: said so


def test_simclr_list_errors(tmp_path):
    train = fake_train({1: 5})
    with pytest.raises(BenchError, match="does not exist"):
        read_simclr_list(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("\n# only a comment\n")
    with pytest.raises(BenchError, match="lists no images"):
        read_simclr_list(tmp_path / "empty.txt")
    (tmp_path / "dup.txt").write_text("a.JPEG\na.JPEG\n")
    with pytest.raises(BenchError, match="twice"):
        read_simclr_list(tmp_path / "dup.txt")
    (tmp_path / "two.txt").write_text("a.JPEG 3\n")
    with pytest.raises(BenchError, match="single file name"):
        read_simclr_list(tmp_path / "two.txt")
    (tmp_path / "missing.txt").write_text("n00000001_1000.JPEG\nn00000009_1.JPEG\n")
    with pytest.raises(BenchError, match=r"1 of 2 images .* not in the train split \(e.g. n00000009_1.JPEG\)"):
        resolve_subset(train, 0.01, subset_file=tmp_path / "missing.txt")


def test_bad_fraction():
    with pytest.raises(BenchError, match="fraction"):
        balanced_quotas({0: 10}, 0.0)
