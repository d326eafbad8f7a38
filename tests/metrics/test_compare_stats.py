"""Statistics behind `compare`: reference values, scipy, scikit-learn and slow obvious implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sst
from sklearn.metrics import average_precision_score

from mopro_bench.metrics import stats


def test_bootstrap_ci_of_a_constant_is_the_constant():
    ci = stats.bootstrap_ci(np.full(50, 3.25), n_boot=200, seed=1)
    assert (ci.estimate, ci.low, ci.high) == (3.25, 3.25, 3.25)


def test_bootstrap_ci_matches_the_normal_approximation_and_is_seeded():
    x = np.random.default_rng(0).normal(10.0, 2.0, size=400)
    ci = stats.bootstrap_ci(x, n_boot=2000, seed=3)
    se = x.std(ddof=1) / math.sqrt(x.size)
    assert ci.estimate == pytest.approx(x.mean())
    assert (ci.high - ci.low) / 2 == pytest.approx(1.96 * se, rel=0.1)
    assert ci.low < x.mean() < ci.high
    assert stats.bootstrap_ci(x, n_boot=2000, seed=3) == ci
    assert stats.bootstrap_ci(x, n_boot=2000, seed=4) != ci


def test_bootstrap_weights_are_resampling_counts():
    rng = np.random.default_rng(0)
    ws = np.concatenate(list(stats.bootstrap_weights(7, 1000, rng, chunk=64)))
    assert ws.shape == (1000, 7) and (ws.sum(axis=1) == 7).all()
    assert ws.mean() == pytest.approx(1.0, abs=0.05)  # each image drawn once per resample on average


def test_paired_bootstrap_of_accuracies():
    rng = np.random.default_rng(1)
    n = 2000
    a = (rng.random(n) < 0.70).astype(int)
    b = a.copy()
    flip = rng.choice(np.nonzero(a == 0)[0], size=100, replace=False)
    b[flip] = 1  # B fixes 100 of A's errors and breaks none: +5 points
    res = stats.paired_bootstrap_mean(a, b, scale=100, n_boot=2000, seed=0)
    assert res.diff == pytest.approx(5.0) and res.n == n
    # bootstrap SE of a mean of d in {0, 1} with p = 0.05: sqrt(p (1 - p) / n) * 100
    se = 100 * math.sqrt(0.05 * 0.95 / n)
    assert (res.high - res.low) / 2 == pytest.approx(1.96 * se, rel=0.1)
    assert res.significant and res.p_value == pytest.approx(1 / 2001 * 2)
    # the general path (index resampling with weights) agrees with the multinomial fast path
    slow = stats.paired_bootstrap(stats.accuracy_weighted, a, b, n_boot=2000, seed=0)
    assert slow.diff == pytest.approx(5.0)
    assert slow.low == pytest.approx(res.low, abs=0.25) and slow.high == pytest.approx(res.high, abs=0.25)
    # identical predictions: no difference, p = 1
    same = stats.paired_bootstrap_mean(a, a, scale=100, n_boot=500, seed=0)
    assert (same.diff, same.low, same.high, same.p_value, same.significant) == (0.0, 0.0, 0.0, 1.0, False)
    # two flips out of 2000 are not significant
    c = a.copy()
    c[flip[:2]] = 1
    small = stats.paired_bootstrap_mean(a, c, scale=100, n_boot=2000, seed=0)
    assert small.diff == pytest.approx(0.1) and small.low <= 0 and not small.significant


def test_paired_ttest_matches_scipy():
    rng = np.random.default_rng(2)
    a = rng.normal(60, 2, size=5)
    b = a + 1.0 + rng.normal(0, 0.5, size=5)
    res = stats.paired_ttest(a, b, alpha=0.05)
    ref = sst.ttest_rel(b, a)
    d = b - a
    half = sst.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    assert res.diff == pytest.approx(d.mean())
    assert (res.low, res.high) == pytest.approx((d.mean() - half, d.mean() + half))
    ci = sst.ttest_rel(b, a).confidence_interval(0.95)
    assert (res.low, res.high) == pytest.approx((ci.low, ci.high))
    assert res.significant == (ref.pvalue < 0.05)
    # constant differences: certain
    assert stats.paired_ttest([1, 2, 3], [2, 3, 4]).p_value == 0.0
    assert stats.paired_ttest([1, 2, 3], [1, 2, 3]).p_value == 1.0
    with pytest.raises(ValueError):
        stats.paired_ttest([1.0], [2.0])


def test_welch_ttest_matches_scipy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 6), rng.normal(1, 3, 9)
    res = stats.welch_ttest(a, b, alpha=0.1)
    ref = sst.ttest_ind(b, a, equal_var=False)
    ci = ref.confidence_interval(0.9)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    assert (res.low, res.high) == pytest.approx((ci.low, ci.high))


def test_holm_by_hand():
    adj = stats.holm([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert adj == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def _voc07_ap_reference(scores, labels):
    """The VOC devkit's 11-point AP, written plainly."""
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(labels[order] > 0)
    fp = np.cumsum(labels[order] <= 0)
    rec = tp / max(1, (labels > 0).sum())
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    ap = 0.0
    for t in np.arange(0.0, 1.1, 0.1):
        ap += (prec[rec >= t].max() if (rec >= t).any() else 0.0) / 11.0
    return ap


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_ap_equals_sklearn_and_voc07_on_repeated_images(seed):
    rng = np.random.default_rng(seed)
    n = 300
    scores = np.round(rng.normal(size=n), 1)  # many ties
    labels = np.where(rng.random(n) < 0.25, 1, -1)
    ones = np.ones((1, n))
    assert stats.average_precision_weighted(scores, labels, ones)[0] == pytest.approx(
        average_precision_score(labels > 0, scores), abs=1e-12)
    counts = rng.integers(0, 3, n)  # a resample is the same as repeating images
    rep = np.repeat(np.arange(n), counts)
    w = counts[None].astype(np.float32)
    assert stats.average_precision_weighted(scores, labels, w)[0] == pytest.approx(
        average_precision_score(labels[rep] > 0, scores[rep]), abs=1e-12)
    s2 = scores + rng.normal(0, 1e-6, n)  # the devkit does not group ties
    assert stats.average_precision_weighted(s2, labels, ones, mode="voc07")[0] == pytest.approx(
        _voc07_ap_reference(s2, labels), abs=1e-12)
    assert stats.average_precision_weighted(s2, labels, w, mode="voc07")[0] == pytest.approx(
        _voc07_ap_reference(s2[rep], labels[rep]), abs=1e-12)


def test_mean_ap_ignores_difficult_and_averages_classes():
    rng = np.random.default_rng(5)
    s = rng.normal(size=(80, 3))
    y = np.where(rng.random((80, 3)) < 0.3, 1, -1)
    y[::7, 1] = 0  # "difficult": left out of class 1
    ref = np.mean([average_precision_score(y[y[:, c] != 0, c] > 0, s[y[:, c] != 0, c]) for c in range(3)])
    assert stats.mean_ap_weighted(s, y, np.ones((1, 80)))[0] == pytest.approx(100 * ref)
