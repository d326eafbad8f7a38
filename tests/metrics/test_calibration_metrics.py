"""Calibration metrics against hand-computed values and a slow, literal implementation of their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mopro_bench.metrics import calibration as cal


def rms_reference(confidence, correct, beta=100, drop_last=True):
    """Literal reading of calib_err(p='2'): sort, n // beta bins (last extended to n), loop over all but the last."""
    order = sorted(range(len(confidence)), key=lambda i: confidence[i])  # Python's sort is stable
    conf = [float(confidence[i]) for i in order]
    corr = [float(correct[i]) for i in order]
    n = len(conf)
    bins = [[i * beta, (i + 1) * beta] for i in range(n // beta)]
    bins[-1] = [bins[-1][0], n]  # IndexError when n < beta, as in the original
    total = 0.0
    for lo, hi in (bins[:-1] if drop_last else bins):
        m = hi - lo
        mc = sum(conf[lo:hi]) / m
        ma = sum(corr[lo:hi]) / m
        total += m / n * (mc - ma) ** 2
    return math.sqrt(total)


def ece_reference(confidence, correct, n_bins=15):
    n = len(confidence)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        idx = [i for i in range(n) if (lo < confidence[i] <= hi) or (b == 0 and confidence[i] == 0)]
        if idx:
            acc = sum(correct[i] for i in idx) / len(idx)
            conf = sum(confidence[i] for i in idx) / len(idx)
            total += len(idx) / n * abs(acc - conf)
    return total


# ------------------------------------------------------------------------------------------------- RMS: fixed values


def test_rms_perfect_calibration_is_zero():
    # 10 bins of 100; bin j has confidence c_j and exactly 100 * c_j correct samples
    conf, corr = [], []
    for j in range(10):
        c = 0.05 + 0.1 * j
        k = round(100 * c)
        conf += [k / 100] * 100
        corr += [1] * k + [0] * (100 - k)
    conf, corr = np.array(conf), np.array(corr)
    assert cal.rms_calibration_error(conf, corr, 100, drop_last_bin=True) == pytest.approx(0.0, abs=1e-12)
    assert cal.rms_calibration_error(conf, corr, 100, drop_last_bin=False) == pytest.approx(0.0, abs=1e-12)
    assert cal.expected_calibration_error(conf, corr, 15) == pytest.approx(0.0, abs=1e-12)


def test_rms_constant_overconfidence():
    # confidence 0.9 everywhere, every block of 10 (hence every bin of 100) has 6 correct: gap 0.3 in every bin
    n = 1000
    conf = np.full(n, 0.9)
    corr = np.tile([1, 1, 1, 1, 1, 1, 0, 0, 0, 0], n // 10)
    assert cal.rms_calibration_error(conf, corr, 100, drop_last_bin=False) == pytest.approx(0.3)
    # the published protocol sums 9 of the 10 bins, weights still over n: sqrt(900/1000 * 0.09)
    assert cal.rms_calibration_error(conf, corr, 100, drop_last_bin=True) == pytest.approx(math.sqrt(0.081))
    assert cal.rms_calibration_error(conf, corr, 100, drop_last_bin=True) == pytest.approx(0.2846049894151541)
    assert cal.expected_calibration_error(conf, corr, 15) == pytest.approx(0.3)


def test_rms_gap_varies_by_bin_hand_computed():
    # n = 250, beta = 100: bins [0,100) and [100,250); published protocol sums only the first, with weight 100/250
    conf = np.concatenate([np.full(100, 0.5), np.full(150, 0.8)])
    corr = np.concatenate([np.tile([1, 0, 0, 0], 25), np.ones(150)])  # accuracy 0.25, then 1.0
    assert cal.rms_calibration_error(conf, corr, 100, True) == pytest.approx(math.sqrt(100 / 250 * 0.25**2))
    assert cal.rms_calibration_error(conf, corr, 100, False) == pytest.approx(
        math.sqrt(100 / 250 * 0.25**2 + 150 / 250 * 0.2**2))


# ------------------------------------------------------------------------------------------------- RMS: bin sizes


def test_rms_fewer_samples_than_a_bin_is_an_error():
    with pytest.raises(ValueError, match="at least bin_size=100"):
        cal.rms_calibration_error(np.full(99, 0.5), np.ones(99), 100)
    with pytest.raises(IndexError):  # the literal definition cannot be evaluated either
        rms_reference([0.5] * 99, [1] * 99)


def test_rms_one_bin_is_dropped_entirely():
    conf, corr = np.full(150, 0.99), np.zeros(150)
    assert cal.rms_calibration_error(conf, corr, 100, True) == 0.0  # 100 <= n < 200: nothing is summed
    assert cal.rms_calibration_error(conf, corr, 100, False) == pytest.approx(0.99)
    b = cal.adaptive_bins(150, 100, True)
    assert b.kept == () and b.dropped == (0, 150) and b.n_dropped == 150


def test_rms_exact_multiple_drops_the_top_bin():
    # n = 300: bins [0,100), [100,200) summed, [200,300) (the 100 most confident) dropped
    b = cal.adaptive_bins(300, 100, True)
    assert b.kept == ((0, 100), (100, 200)) and b.dropped == (200, 300)
    conf = np.concatenate([np.full(200, 0.7), np.full(100, 0.95)])
    corr = np.concatenate([np.tile([1] * 7 + [0] * 3, 20), np.zeros(100)])  # calibrated, then wildly over-confident
    assert cal.rms_calibration_error(conf, corr, 100, True) == pytest.approx(0.0, abs=1e-12)
    assert cal.rms_calibration_error(conf, corr, 100, False) == pytest.approx(math.sqrt(100 / 300 * 0.95**2))


def test_rms_multiple_plus_one_extends_and_drops_the_last_bin():
    # n = 301: the last bin holds 101 samples and is dropped; the weights divide by 301
    b = cal.adaptive_bins(301, 100, True)
    assert b.kept == ((0, 100), (100, 200)) and b.dropped == (200, 301) and b.n_dropped == 101
    assert cal.adaptive_bins(301, 100, False).kept[-1] == (200, 301)
    conf = np.concatenate([np.full(200, 0.6), np.full(101, 0.9)])
    corr = np.concatenate([np.tile([1, 0], 100), np.ones(101)])  # gap 0.1 in the summed bins
    assert cal.rms_calibration_error(conf, corr, 100, True) == pytest.approx(math.sqrt(200 / 301) * 0.1)
    # the 101st top sample is in the dropped bin: moving it does not change the value
    corr2 = corr.copy()
    corr2[-1] = 0
    assert cal.rms_calibration_error(conf, corr2, 100, True) == cal.rms_calibration_error(conf, corr, 100, True)


@pytest.mark.parametrize("n", [100, 101, 199, 200, 201, 250, 1000, 1001, 1234])
@pytest.mark.parametrize("drop", [True, False])
def test_rms_matches_literal_definition(n, drop):
    rng = np.random.default_rng(n)
    conf = rng.uniform(0.2, 1.0, n)
    corr = rng.uniform(size=n) < conf ** 1.5  # over-confident, with noise
    assert cal.rms_calibration_error(conf, corr, 100, drop) == pytest.approx(rms_reference(conf, corr, 100, drop), abs=1e-12)


def test_rms_ties_are_ordered_by_sample_index():
    # equal confidences straddling the bin boundary: the stable order decides; documented behaviour
    conf = np.concatenate([np.full(150, 0.5), np.full(150, 0.9)])
    corr = np.concatenate([np.ones(100), np.zeros(50), np.ones(150)])
    stats = cal.adaptive_bin_stats(conf, corr, 100, True)
    assert stats["accuracy"][0] == 1.0 and stats["kept"] == [True, True, False]
    assert stats["count"] == [100, 100, 100]
    assert cal.rms_calibration_error(conf, corr, 100, True) == pytest.approx(
        math.sqrt(100 / 300 * 0.5**2 + 100 / 300 * (0.7 - 0.5) ** 2))


def test_adaptive_bins_over_imagenet_r_and_a_sizes():
    r = cal.adaptive_bins(30000, 100, True)
    assert len(r.kept) == 299 and r.dropped == (29900, 30000)
    a = cal.adaptive_bins(7500, 100, True)
    assert len(a.kept) == 74 and a.n_dropped == 100
    v = cal.adaptive_bins(50000, 100, True)
    assert len(v.kept) == 499


# ------------------------------------------------------------------------------------------------- ECE


def test_ece_hand_computed_and_bin_edges():
    # 15 bins of width 1/15; 1/15 itself belongs to bin 0 ((0, 1/15]), 1.0 to bin 14
    assert cal.equal_width_bin_index(np.array([0.0, 1 / 15, 1 / 15 + 1e-9, 0.5, 14 / 15, 1.0]), 15).tolist() == [
        0, 0, 1, 7, 13, 14]
    conf = np.array([0.95, 0.95, 0.95, 0.95, 0.55, 0.55])
    corr = np.array([1, 1, 1, 0, 1, 0])
    # bin 14: 4 samples, conf .95, acc .75 -> 4/6 * .2 ; bin 8: 2 samples, conf .55, acc .5 -> 2/6 * .05
    expected = 4 / 6 * 0.2 + 2 / 6 * 0.05
    assert cal.expected_calibration_error(conf, corr, 15) == pytest.approx(expected)
    rel = cal.reliability_bins(conf, corr, 15)
    assert rel["count"][14] == 4 and rel["count"][8] == 2 and sum(rel["count"]) == 6
    assert rel["accuracy"][14] == pytest.approx(0.75) and rel["confidence"][8] == pytest.approx(0.55)
    assert rel["accuracy"][0] is None and len(rel["edges"]) == 16


def test_ece_matches_literal_definition():
    rng = np.random.default_rng(3)
    conf = np.round(rng.uniform(0, 1, 500), 2)  # rounding puts many values exactly on or near bin edges
    corr = rng.uniform(size=500) < conf
    assert cal.expected_calibration_error(conf, corr, 15) == pytest.approx(ece_reference(conf, corr, 15), abs=1e-12)
    assert cal.expected_calibration_error(conf, corr, 10) == pytest.approx(ece_reference(conf, corr, 10), abs=1e-12)


# ------------------------------------------------------------------------------------------------- NLL, Brier, summary


def test_nll_brier_top1_hand_computed():
    logits = np.array([[0.0, 0.0, 0.0], np.log([0.7, 0.2, 0.1]), np.log([0.1, 0.6, 0.3])])
    labels = np.array([2, 0, 2])
    s = cal.score_logits(logits, labels)
    assert s.confidence == pytest.approx([1 / 3, 0.7, 0.6])
    assert s.pred.tolist()[1:] == [0, 1]
    assert s.correct.tolist()[1:] == [True, False]
    assert s.nll == pytest.approx([math.log(3), -math.log(0.7), -math.log(0.3)])
    # sum over classes of (p_k - onehot_k)^2
    assert s.brier == pytest.approx([4 / 9 + 2 / 9, 0.09 + 0.04 + 0.01, 0.01 + 0.36 + 0.49])
    sub = cal.score_logits(logits[1:], labels[1:])
    m = cal.summarize(sub, bin_size=1, drop_last_bin=False, ece_bins=15, percent=True)
    assert m["top1"] == pytest.approx(50.0)
    assert m["nll"] == pytest.approx((-math.log(0.7) - math.log(0.3)) / 2)
    assert m["brier"] == pytest.approx((0.14 + 0.86) / 2)
    # bins of one sample: RMS = sqrt(mean (conf - correct)^2) = sqrt((0.3^2 + 0.6^2) / 2)
    assert m["calib_rms"] == pytest.approx(100 * math.sqrt((0.09 + 0.36) / 2))
    frac = cal.summarize(sub, bin_size=1, drop_last_bin=False, percent=False)
    assert frac["top1"] == pytest.approx(0.5) and frac["brier"] == m["brier"]


def test_score_logits_chunks_and_extreme_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1000, 7)) * 30  # large logits: log_softmax stays finite
    labels = rng.integers(0, 7, 1000)
    a = cal.score_logits(logits, labels, chunk=64)
    b = cal.score_logits(logits, labels, chunk=100000)
    assert np.allclose(a.nll, b.nll) and np.array_equal(a.pred, b.pred)
    assert np.isfinite(a.nll).all() and (a.brier >= 0).all() and (a.brier <= 2 + 1e-12).all()
    with pytest.raises(ValueError):
        cal.score_logits(logits, np.full(1000, 7))


def test_definitions_follow_protocol_constants():
    d = cal.definitions(bin_size=50, drop_last_bin=True, ece_bins=10, num_classes=200)
    assert set(d) == {"top1", "calib_rms", "ece15", "nll", "brier"}
    assert "beta=50" in d["calib_rms"] and "last bin" in d["calib_rms"] and "10 equal-width" in d["ece15"]
    assert "every bin" in cal.definitions(drop_last_bin=False)["calib_rms"]
    assert cal.units(True)["calib_rms"] == "%" and cal.units(True)["brier"] == "score" and cal.units(True)["nll"] == "nats"
