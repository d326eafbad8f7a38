"""Uncertainty of a number and of a difference between two numbers.

Everything here is deterministic for a given ``seed`` (``numpy.random.default_rng``), so a comparison printed today
is printed identically tomorrow.

* :func:`bootstrap_ci` -- percentile bootstrap confidence interval of a statistic of one sample.
* :func:`paired_bootstrap` -- paired (same resampled test images for both models) percentile bootstrap of the
  difference ``metric(B) - metric(A)``; two-sided p-value from the bootstrap distribution.
* :func:`paired_ttest` / :func:`welch_ttest` -- t-tests over runs (low-shot split draws, seeds) with a t interval
  for the mean difference.
* :func:`holm` -- Holm-Bonferroni adjusted p-values for a family of comparisons.
* :func:`average_precision_weighted` -- AP of one class with per-image weights (a bootstrap resample is a weight
  vector of counts), non-interpolated (= ``sklearn.metrics.average_precision_score``) or VOC07 11-point.

Conventions: a difference is always ``B - A``; confidence level ``1 - alpha``; percent metrics stay in percent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

DEFAULT_N_BOOT = 1000
DEFAULT_ALPHA = 0.05
_CHUNK_ELEMS = 4_000_000  # bootstrap weights materialised at once (rows x images), keeps memory ~32 MB


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    alpha: float


@dataclass(frozen=True)
class DiffTest:
    """A difference ``B - A`` with its ``1 - alpha`` interval and a two-sided p-value."""

    diff: float
    low: float
    high: float
    p_value: float
    n: int  # images (bootstrap) or runs (t-tests)
    test: str
    alpha: float

    @property
    def significant(self) -> bool:
        return bool(self.p_value < self.alpha)


# --------------------------------------------------------------------------------------------------- bootstrap


def bootstrap_weights(n: int, n_boot: int, rng: np.random.Generator, chunk: int | None = None):
    """Yield ``[rows, n]`` count matrices, ``n_boot`` rows in total: row ``b`` counts how often image ``i`` is drawn
    in bootstrap resample ``b`` (resampling ``n`` indices with replacement)."""
    if n <= 0:
        raise ValueError("bootstrap of an empty sample")
    rows = chunk or max(1, min(n_boot, _CHUNK_ELEMS // n))
    done = 0
    while done < n_boot:
        r = min(rows, n_boot - done)
        idx = rng.integers(0, n, size=(r, n)) + (np.arange(r) * n)[:, None]
        done += r
        yield np.bincount(idx.ravel(), minlength=r * n).reshape(r, n).astype(np.float64)


def bootstrap_ci(
    values, statistic: Callable[[np.ndarray], float] = np.mean, *, n_boot: int = DEFAULT_N_BOOT,
    alpha: float = DEFAULT_ALPHA, seed: int = 0,
) -> Interval:
    """Percentile bootstrap ``1 - alpha`` interval of ``statistic(values)`` (resampling elements with replacement)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("bootstrap of an empty sample")
    rng = np.random.default_rng(seed)
    stats = np.array([statistic(x[rng.integers(0, x.size, size=x.size)]) for _ in range(n_boot)])
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return Interval(float(statistic(x)), float(lo), float(hi), alpha)


def _boot_p_value(diffs: np.ndarray) -> float:
    """Two-sided bootstrap p-value for H0: difference = 0: twice the smaller tail mass at 0, with the +1 correction
    (never exactly 0 with a finite number of resamples)."""
    b = diffs.size
    le = (np.count_nonzero(diffs <= 0) + 1) / (b + 1)
    ge = (np.count_nonzero(diffs >= 0) + 1) / (b + 1)
    return float(min(1.0, 2 * min(le, ge)))


def paired_bootstrap(
    metric: Callable[[np.ndarray, np.ndarray], np.ndarray], a, b, *, n_boot: int = DEFAULT_N_BOOT,
    alpha: float = DEFAULT_ALPHA, seed: int = 0, test: str = "paired bootstrap over test images",
) -> DiffTest:
    """Paired bootstrap of ``metric(b) - metric(a)``.

    ``a`` and ``b`` are per-image data with the images on axis 0, in the same order for both models.
    ``metric(data, weights)`` gets weights ``[rows, n]`` (bootstrap counts) and returns ``[rows]`` values. Both models
    see the same resampled images. The interval is the percentile interval; the p-value is from
    :func:`_boot_p_value`; ``significant`` (p < alpha) agrees with "the interval excludes 0" up to resampling ties.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"paired bootstrap needs the same images for both sides ({a.shape[0]} vs {b.shape[0]})")
    n = a.shape[0]
    ones = np.ones((1, n))
    point = float(metric(b, ones)[0] - metric(a, ones)[0])
    rng = np.random.default_rng(seed)
    diffs = np.concatenate([metric(b, w) - metric(a, w) for w in bootstrap_weights(n, n_boot, rng)])
    lo, hi = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    return DiffTest(point, float(lo), float(hi), _boot_p_value(diffs), n, test, alpha)


def paired_bootstrap_mean(a, b, *, scale: float = 1.0, n_boot: int = DEFAULT_N_BOOT, alpha: float = DEFAULT_ALPHA,
                          seed: int = 0, test: str = "paired bootstrap over test images") -> DiffTest:
    """Paired bootstrap of ``scale * (mean(b) - mean(a))`` for additive per-image scores (0/1 correctness, losses).

    The mean difference of a resample depends only on how often each distinct value of ``d = b - a`` is drawn, so
    when ``d`` takes few values (correctness: -1, 0, 1) the resample is drawn exactly as a multinomial over those
    values -- same distribution as resampling indices, at a fraction of the cost on 50k-image test sets.
    """
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError("paired bootstrap needs two equally long, non-empty 1-d vectors")
    n = d.size
    rng = np.random.default_rng(seed)
    vals, counts = np.unique(d, return_counts=True)
    if vals.size <= 64:
        draws = rng.multinomial(n, counts / n, size=n_boot)
        diffs = scale * (draws @ vals) / n
    else:
        diffs = np.concatenate([scale * (w @ d) / n for w in bootstrap_weights(n, n_boot, rng)])
    lo, hi = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    return DiffTest(float(scale * d.mean()), float(lo), float(hi), _boot_p_value(diffs), n, test, alpha)


# --------------------------------------------------------------------------------------------------- t-tests


def paired_ttest(a, b, *, alpha: float = DEFAULT_ALPHA) -> DiffTest:
    """Paired t-test of ``mean(b - a) = 0`` over runs matched by position; ``1 - alpha`` t interval.

    With fewer than two pairs no test is possible (ValueError). Identical differences in every pair (zero variance)
    give p = 1 when they are 0 and p = 0 otherwise (the difference is the same in every run), with a zero-width
    interval.
    """
    from scipy import stats

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired t-test needs two equally long vectors ({a.shape} vs {b.shape})")
    n = a.size
    if n < 2:
        raise ValueError("paired t-test needs at least 2 pairs")
    d = b - a
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    test = f"paired t-test (n={n} runs)"
    if sd == 0.0 or not math.isfinite(sd):
        return DiffTest(mean, mean, mean, 1.0 if mean == 0 else 0.0, n, test, alpha)
    se = sd / math.sqrt(n)
    p = float(stats.ttest_rel(b, a).pvalue)
    half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * se
    return DiffTest(mean, mean - half, mean + half, p, n, test, alpha)


def welch_ttest(a, b, *, alpha: float = DEFAULT_ALPHA) -> DiffTest:
    """Welch's unequal-variance t-test of ``mean(b) - mean(a)`` for unpaired runs; Welch-Satterthwaite interval."""
    from scipy import stats

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        raise ValueError("Welch's t-test needs at least 2 runs on each side")
    diff = float(b.mean() - a.mean())
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    test = f"Welch t-test (n={a.size}+{b.size} runs)"
    if va + vb == 0:
        return DiffTest(diff, diff, diff, 1.0 if diff == 0 else 0.0, a.size + b.size, test, alpha)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    p = float(stats.ttest_ind(b, a, equal_var=False).pvalue)
    half = float(stats.t.ppf(1 - alpha / 2, df)) * se
    return DiffTest(diff, diff - half, diff + half, p, a.size + b.size, test, alpha)


def holm(p_values) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error control), in the input order."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


# --------------------------------------------------------------------------------------------------- AP / accuracy


def accuracy_weighted(correct: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Accuracy in percent of 0/1 ``correct [n]`` under image weights ``[rows, n]``."""
    c = np.asarray(correct, dtype=np.float64)
    return 100.0 * (weights @ c) / weights.sum(axis=1)


def average_precision_weighted(scores, labels, weights, *, mode: str = "sklearn") -> np.ndarray:
    """AP (in [0, 1]) of one class for each row of image ``weights [rows, n]``.

    ``labels``: > 0 positive, otherwise negative (VOC's label 0, "difficult", must be removed by the caller, as
    :func:`mean_ap_weighted` does). Ties in ``scores`` are one threshold (as in scikit-learn).
    ``mode="sklearn"``: sum over thresholds of (recall step) x precision (= ``average_precision_score``).
    ``mode="voc07"``: 11-point interpolated AP of VOC 2007 (mean over r in ``np.arange(0, 1.1, 0.1)`` of the best
    precision at recall >= r, as in the VOC devkit). A row with no positive weight gives NaN.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels) > 0
    w = np.atleast_2d(np.asarray(weights))
    if w.dtype not in (np.float32, np.float64):
        w = w.astype(np.float64)
    rows = w.shape[0]
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # end index of each group of tied scores (= a threshold)
    npos_at = np.cumsum(y)[last]
    # Precision only matters at thresholds whose group holds a positive: between them only negatives are added,
    # so recall is flat and precision falls (true for both AP definitions below).
    g = last[np.diff(np.r_[0, npos_at]) > 0]
    if g.size == 0:
        return np.full(rows, np.nan)
    # images-first layout: cumulative sums run over contiguous rows (much faster than along the last axis).
    # float32 sums of bootstrap counts (integers < 2**24) are exact.
    ws = np.ascontiguousarray(w.T[order])
    allw = np.cumsum(ws, axis=0, dtype=ws.dtype)[g].astype(np.float64)  # [G, rows]
    tp = np.cumsum(ws[y], axis=0, dtype=ws.dtype)[np.cumsum(y)[g] - 1].astype(np.float64)  # [G, rows]
    pos = tp[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / np.where(allw > 0, allw, 1)
        recall = tp / pos
    if mode == "sklearn":
        dtp = np.diff(np.concatenate([np.zeros((1, rows)), tp], axis=0), axis=0)
        ap = np.sum(dtp * precision, axis=0) / np.where(pos > 0, pos, 1)
    elif mode == "voc07":
        pmax = np.maximum.accumulate(precision[::-1], axis=0)[::-1]  # best precision at this recall or beyond
        ap = np.zeros(rows)
        cols = np.arange(rows)
        for r in np.arange(0.0, 1.1, 0.1):  # exactly the VOC07 devkit's thresholds (incl. their float rounding)
            ok = recall >= r
            ap += np.where(ok.any(axis=0), pmax[np.argmax(ok, axis=0), cols], 0.0) / 11
    else:
        raise ValueError(f"unknown AP mode {mode!r} (use 'sklearn' or 'voc07')")
    return np.where(pos > 0, ap, np.nan)


def mean_ap_weighted(scores, labels, weights, *, mode: str = "sklearn") -> np.ndarray:
    """mAP in percent over classes: ``scores, labels [n, C]`` (labels 1 / -1, 0 = ignored), ``weights [rows, n]``.
    Classes whose positives all got weight 0 in a resample are left out of that resample's mean."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float32))  # bootstrap counts: exact in float32, half the traffic
    if s.shape != y.shape or s.ndim != 2:
        raise ValueError(f"scores and labels must both be [images, classes] (got {s.shape} and {y.shape})")
    aps = []
    for c in range(s.shape[1]):
        keep = y[:, c] != 0
        aps.append(average_precision_weighted(s[keep, c], y[keep, c], w[:, keep], mode=mode))
    with np.errstate(invalid="ignore"):
        return 100.0 * np.nanmean(np.stack(aps, axis=1), axis=1)
