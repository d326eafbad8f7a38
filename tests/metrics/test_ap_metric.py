"""All-point interpolated AP against hand-computed values and a slow reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from mopro_bench.metrics.ap import ap_per_class, average_precision, mean_ap


def test_hand_computed_decreasing_precision():
    # ranks: + - + - +  -> precision at the positives 1, 2/3, 3/5 (already monotone), recall steps 1/3
    ap = average_precision([0.9, 0.8, 0.7, 0.6, 0.5], [1, 0, 1, 0, 1])
    assert ap == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)


def test_interpolation_differs_from_sklearn():
    # ranks: - + +  -> precision 1/2 at recall 1/2, 2/3 at recall 1; interpolated: 2/3 at both steps
    scores, labels = [0.9, 0.8, 0.7], [0, 1, 1]
    assert average_precision(scores, labels) == pytest.approx(2 / 3)
    assert average_precision_score(labels, scores) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)  # not interpolated


def test_ties_are_one_threshold_and_order_independent():
    # the two 0.5s are one threshold: tp=1, fp=1 -> P=1/2 at R=1/2; then P=2/3 at R=1 -> interpolated 2/3, 2/3
    assert average_precision([0.5, 0.5, 0.1], [1, 0, 1]) == pytest.approx(2 / 3)
    assert average_precision([0.5, 0.5, 0.1], [0, 1, 1]) == pytest.approx(2 / 3)
    # all scores tied: one threshold, precision = prevalence
    assert average_precision([1.0, 1.0, 1.0, 1.0], [1, 0, 0, 0]) == pytest.approx(0.25)


def test_no_positive_is_nan_and_left_out_of_the_mean():
    assert math.isnan(average_precision([0.3, 0.2], [0, 0]))
    with pytest.warns(RuntimeWarning, match="cow"):
        m, left_out = mean_ap(np.array([0.5, np.nan, 1.0]), ["cat", "cow", "dog"])
    assert m == pytest.approx(0.75) and left_out == ["cow"]


def test_all_positive_is_one():
    assert average_precision([0.1, 0.9, 0.4], [1, 1, 1]) == 1.0


def test_perfect_and_reversed_ranking():
    assert average_precision([3, 2, 1, 0], [1, 1, 0, 0]) == 1.0
    # reversed: positives at ranks 3, 4 -> P = 1/3 at R=1/2, 2/4 at R=1 -> interpolated 1/2, 1/2
    assert average_precision([3, 2, 1, 0], [0, 0, 1, 1]) == pytest.approx(0.5)


def test_difficult_negative_vs_ignore():
    scores = np.array([[0.9], [0.8], [0.7]])
    labels = np.array([[0], [1], [-1]])  # the difficult image ranks first
    # difficult = negative: - + -  -> AP = 1/2 ; ignored: + -  -> AP = 1
    assert ap_per_class(scores, labels, "negative")[0] == pytest.approx(0.5)
    assert ap_per_class(scores, labels, "ignore")[0] == pytest.approx(1.0)


def _slow_ap(scores, positive):
    """VOC-devkit style: every distinct threshold, precision/recall, max precision at recall >= r, area over steps."""
    pts = []
    for t in sorted(set(scores), reverse=True):
        sel = [p for s, p in zip(scores, positive) if s >= t]
        tp = sum(sel)
        pts.append((tp / sum(positive), tp / len(sel)))
    ap, prev_r = 0.0, 0.0
    for i, (r, _) in enumerate(pts):
        if r > prev_r:
            ap += (r - prev_r) * max(p for rr, p in pts[i:])
            prev_r = r
    return ap


def test_matches_slow_reference_with_many_ties():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(2, 40))
        scores = rng.integers(0, 6, n).astype(float).tolist()  # many ties
        positive = (rng.random(n) < 0.4).tolist()
        if not any(positive):
            continue
        assert average_precision(scores, positive) == pytest.approx(_slow_ap(scores, positive), abs=1e-12)
