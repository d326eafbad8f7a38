"""Top-k accuracy against a slow obvious implementation, streaming, and edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mopro_bench.metrics.classification import TopKMeter, mean_per_class_accuracy, topk_accuracy, topk_correct


def slow_topk(logits: np.ndarray, targets: np.ndarray, k: int) -> float:
    hits = 0
    for row, t in zip(logits, targets):
        rank = sum(1 for v in row if v > row[t])  # classes scoring strictly higher than the target
        hits += rank < k
    return 100.0 * hits / len(targets)


def test_topk_matches_the_slow_definition():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(257, 13)).astype(np.float32)  # continuous: no ties
    targets = rng.integers(0, 13, size=257)
    got = topk_accuracy(torch.from_numpy(logits), torch.from_numpy(targets), ks=(1, 2, 5, 13))
    for k in (1, 2, 5, 13):
        assert got[f"top{k}"] == pytest.approx(slow_topk(logits, targets, k))
    assert got["top13"] == 100.0
    assert got["top1"] < got["top2"] < got["top5"]


def test_fixed_small_example():
    logits = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    targets = torch.tensor([1, 1, 0, 2])
    # row 0 right at top-1; row 1 second; row 2 third; row 3 third
    assert topk_correct(logits, targets, (1, 2, 3)) == {1: 1, 2: 2, 3: 4}
    assert topk_accuracy(logits, targets, (1, 2)) == {"top1": 25.0, "top2": 50.0}
    # k larger than the number of classes is clipped (top-5 of a 3-way classifier is 100%)
    assert topk_accuracy(logits, targets, (5,)) == {"top5": 100.0}


def test_meter_streams_like_one_shot():
    rng = np.random.default_rng(1)
    logits = torch.from_numpy(rng.normal(size=(100, 20)))
    targets = torch.from_numpy(rng.integers(0, 20, size=100))
    m = TopKMeter((1, 5))
    for i in range(0, 100, 7):
        m.update(logits[i:i + 7], targets[i:i + 7])
    assert m.n == 100
    assert m.reduce().result() == pytest.approx(topk_accuracy(logits, targets))


def test_bad_inputs():
    with pytest.raises(ValueError, match="targets must lie"):
        topk_correct(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="expected logits"):
        topk_correct(torch.zeros(2, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="empty"):
        topk_accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))


def test_mean_per_class_accuracy():
    # class 0: 3 samples all right; class 1: 1 sample wrong -> mean (100 + 0) / 2 = 50, plain top-1 = 75
    logits = torch.tensor([[1.0, 0.0]] * 4)
    targets = torch.tensor([0, 0, 0, 1])
    assert mean_per_class_accuracy(logits, targets) == pytest.approx(50.0)
    assert topk_accuracy(logits, targets, (1,))["top1"] == pytest.approx(75.0)
