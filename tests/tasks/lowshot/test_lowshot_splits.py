"""Seeded low-shot sample draws: reproducible on any machine, correct per-class content, split files checked."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mopro_bench.errors import BenchError
from mopro_bench.tasks.lowshot.splits import (
    StableRNG,
    check_known,
    draw_splits,
    dumps_splits,
    load_splits,
    per_class_sample,
    save_splits,
    splits_sha256,
    voc_pos_neg_sample,
    voc_union_sample,
)


def test_stable_rng_is_pinned():
    """These values must never change: published splits are reproduced from (seed, k, sample) alone."""
    assert StableRNG(0, 1, 0).sample(list(range(100)), 8) == [49, 5, 38, 57, 86, 62, 7, 9]
    assert StableRNG(7, 16, 4).sample(list("abcdefghij"), 10) == ["c", "j", "b", "h", "a", "d", "i", "f", "g", "e"]


def test_bounded_integers_cover_the_range_uniformly():
    rng = StableRNG(1)
    counts = np.bincount([rng.below(7) for _ in range(7000)], minlength=7)
    assert counts.min() > 850 and counts.max() < 1150


def _toy_voc(seed=0, n=200, C=4):
    rng = np.random.default_rng(seed)
    ids = [f"{i:06d}" for i in range(1, n + 1)]
    labels = rng.choice(np.array([1, -1, -1, -1, 0], np.int8), size=(n, C))
    return ids, labels, [f"c{c}" for c in range(C)]


def test_union_sample_content_and_input_order_independence():
    ids, labels, classes = _toy_voc()
    a = voc_union_sample(ids, labels, classes, 3, StableRNG(0, 3, 0))
    assert len(a) == 3 * len(classes)
    index = {i: n for n, i in enumerate(ids)}
    for c in range(len(classes)):
        block = a[3 * c:3 * c + 3]
        assert len(set(block)) == 3 and all(labels[index[i], c] == 1 for i in block)
    # same draw when the dataset files list the images in another order
    perm = np.random.default_rng(1).permutation(len(ids))
    b = voc_union_sample([ids[p] for p in perm], labels[perm], classes, 3, StableRNG(0, 3, 0))
    assert a == b
    assert a != voc_union_sample(ids, labels, classes, 3, StableRNG(1, 3, 0))


def test_pos_neg_sample_blocks():
    ids, labels, classes = _toy_voc()
    s = voc_pos_neg_sample(ids, labels, classes, 2, StableRNG(0, 2, 0), negatives_per_positive=3)
    index = {i: n for n, i in enumerate(ids)}
    assert len(s) == len(classes) * 8
    for c in range(len(classes)):
        block = [labels[index[i], c] for i in s[8 * c:8 * c + 8]]
        assert block == [1, 1, -1, -1, -1, -1, -1, -1]  # k positives then 3k negatives, never difficult (0)
        assert len(set(s[8 * c:8 * c + 8])) == 8


def test_k_larger_than_available_positives_is_one_line_error():
    ids, labels, classes = _toy_voc(n=20)
    have = int((labels[:, 0] == 1).sum())
    with pytest.raises(BenchError, match=rf"k={have + 1} needs {have + 1} positive images for class 'c0'.*has {have}"):
        voc_union_sample(ids, labels, classes, have + 1, StableRNG(0))


def test_places_sample_and_full_draw_is_reproducible():
    samples = [(f"s/c{c}/{j:03d}.jpg", c) for c in range(5) for j in range(6)][::-1]
    draw = lambda k, rng: per_class_sample(samples, 5, k, rng)
    a = draw_splits("places_lowshot", "places_lowshot@mopro", 3, [1, 2, 4], 3, draw)
    b = draw_splits("places_lowshot", "places_lowshot@mopro", 3, [1, 2, 4], 3, draw)
    assert a == b and splits_sha256(a) == splits_sha256(b)
    assert list(a["k"]) == ["1", "2", "4"] and all(len(r) == 3 for r in a["k"].values())
    assert [int(p.split("/")[1][1:]) for p in a["k"]["2"][0]] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert len({tuple(r) for r in a["k"]["4"]}) == 3  # independent samples differ
    # a k drawn alone equals the same k drawn among others (own stream per (seed, k, sample))
    c = draw_splits("places_lowshot", "places_lowshot@mopro", 3, [4], 3, draw)
    assert c["k"]["4"] == a["k"]["4"]


def test_save_load_round_trip(tmp_path):
    splits = {"task": "voc_lowshot", "protocol": "voc_lowshot@mopro", "seed": 0,
              "k": {"2": [["000001", "000002"]], "1": [["000003"], ["000004"]]}}
    path = save_splits(tmp_path / "s.json", splits)
    assert json.loads(path.read_text()) == splits
    loaded, sha = load_splits(path, "voc_lowshot")
    assert list(loaded["k"]) == ["1", "2"]  # numeric order
    assert len(sha) == 64 and splits_sha256(loaded) == splits_sha256(splits)
    lines = [ln.strip() for ln in dumps_splits(splits).splitlines()]
    assert '["000001", "000002"]' in lines and '["000003"],' in lines  # one line per sample


@pytest.mark.parametrize("content, match", [
    ("not json", "not valid JSON"),
    ('{"task": "voc_lowshot", "k": {}}', "expected task, protocol, seed, k"),
    ('{"task": "places_lowshot", "protocol": "p", "seed": 0, "k": {"1": [["a"]]}}', "is for task 'places_lowshot'"),
    ('{"task": "voc_lowshot", "protocol": "p", "seed": 0, "k": {"one": [["a"]]}}', "not a positive integer"),
    ('{"task": "voc_lowshot", "protocol": "p", "seed": 0, "k": {"1": []}}', "non-empty list of samples"),
    ('{"task": "voc_lowshot", "protocol": "p", "seed": 0, "k": {"1": [[1, 2]]}}', "list of id strings"),
])
def test_bad_split_files(tmp_path, content, match):
    f = tmp_path / "bad.json"
    f.write_text(content)
    with pytest.raises(BenchError, match=match):
        load_splits(f, "voc_lowshot")
    with pytest.raises(BenchError, match="does not exist"):
        load_splits(tmp_path / "missing.json", "voc_lowshot")


def test_unknown_ids_are_named():
    splits = {"task": "t", "protocol": "p", "seed": 0, "k": {"1": [["a", "b"], ["a", "zz", "yy"]]}}
    with pytest.raises(BenchError, match=r"k=1 sample 1 names 'zz' and 1 more, not in VOC07 trainval"):
        check_known(splits, {"a", "b"}, "VOC07 trainval", "s.json")
