"""Accuracy and calibration of a softmax classifier: RMS calibration error (Hendrycks et al.), ECE, NLL, Brier.

All functions take per-sample arrays (``confidence`` = the largest softmax probability, ``correct`` = whether the
arg-max is the label) or logits + labels, and return plain floats as *fractions*; callers scale to percent.

RMS calibration error, as defined by the ImageNet-R / ImageNet-A evaluation code (``calib_err(confidence, correct,
p='2', beta=100)`` of Hendrycks et al.):

1. sort the ``n`` samples by confidence, ascending;
2. cut them into ``k = n // beta`` consecutive bins of ``beta`` samples; the last bin is extended to the end, so it
   holds ``beta + n % beta`` samples (the ``n % beta`` left over join the highest-confidence bin);
3. sum over bins ``(bin size / n) * (mean confidence - accuracy)^2`` and take the square root.

The original loops over ``range(len(bins) - 1)``: **the last bin -- the ``beta + n % beta`` most confident samples --
never enters the sum**, while the weights still divide by the full ``n``. ``drop_last_bin=True`` reproduces that
(ImageNet-R: 30000 images -> the 100 most confident are dropped, 299 bins are summed; ImageNet-A: 7500 -> 100
dropped, 74 bins). Consequences: ``n < beta`` is undefined (the original raises); ``beta <= n < 2 beta`` gives
exactly 0 (no bin left). ``drop_last_bin=False`` sums every bin (a proper adaptive-binning RMS error).
Ties in confidence are ordered by sample index (a stable sort); the original's ``np.argsort`` leaves the order of
equal confidences unspecified, which can matter only when equal confidences straddle a bin boundary.

ECE (Guo et al. 2017): ``n_bins`` equal-width confidence bins ``(0, 1/n_bins], ..., ((n_bins-1)/n_bins, 1]``
(a confidence of exactly 0 goes to the first bin); ``sum_b |B_b| / n * |accuracy(B_b) - mean confidence(B_b)|``.

NLL: mean over samples of ``-log p_y`` (natural log, nats). Brier score (multi-class): mean over samples of
``sum_k (p_k - 1[k = y])^2`` -- between 0 and 2; not divided by the number of classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class SampleScores:
    """Per-sample quantities of a softmax classifier (everything the metrics need)."""

    confidence: np.ndarray  # float64 [N], max_k p_k
    pred: np.ndarray  # int64 [N], arg-max class (position in the logits)
    correct: np.ndarray  # bool [N], pred == label
    nll: np.ndarray  # float64 [N], -log p_label (nats)
    brier: np.ndarray  # float64 [N], sum_k (p_k - onehot_k)^2

    def __len__(self) -> int:
        return len(self.confidence)


@torch.no_grad()
def score_logits(logits: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, chunk: int = 8192) -> SampleScores:
    """Softmax over the columns of ``logits`` [N, C] (float64) and the per-sample scores for ``labels`` in ``[0, C)``."""
    logits = torch.as_tensor(logits)
    labels = torch.as_tensor(labels, dtype=torch.long)
    if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not match")
    n, c = logits.shape
    if n and (int(labels.min()) < 0 or int(labels.max()) >= c):
        raise ValueError(f"labels must lie in [0, {c})")
    conf, pred, nll, brier = (np.empty(n, np.float64), np.empty(n, np.int64), np.empty(n, np.float64), np.empty(n, np.float64))
    for s in range(0, n, chunk):
        x = logits[s:s + chunk].to(torch.float64)
        y = labels[s:s + chunk]
        logp = torch.log_softmax(x, dim=1)
        p = logp.exp()
        cmax, amax = p.max(dim=1)
        logp_y = logp.gather(1, y[:, None])[:, 0]
        conf[s:s + chunk] = cmax.numpy()
        pred[s:s + chunk] = amax.numpy()
        nll[s:s + chunk] = (-logp_y).numpy()
        brier[s:s + chunk] = ((p * p).sum(1) - 2 * logp_y.exp() + 1).numpy()
    labels_np = labels.numpy()
    return SampleScores(confidence=conf, pred=pred, correct=pred == labels_np, nll=nll, brier=brier)


# ---------------------------------------------------------------------------------------------------------------------
# RMS calibration error with adaptive (equal-mass) bins


@dataclass(frozen=True)
class AdaptiveBins:
    """Bin boundaries over the confidence-sorted samples: ``kept`` enter the sum, ``dropped`` (if any) does not."""

    n: int
    bin_size: int
    kept: tuple[tuple[int, int], ...]  # half-open [start, end) ranges in sorted order
    dropped: tuple[int, int] | None

    @property
    def n_dropped(self) -> int:
        return 0 if self.dropped is None else self.dropped[1] - self.dropped[0]


def adaptive_bins(n: int, bin_size: int = 100, drop_last_bin: bool = True) -> AdaptiveBins:
    """The bins of the original ``calib_err``: ``n // bin_size`` bins, the last one extended to ``n``."""
    if bin_size < 1:
        raise ValueError("bin_size must be >= 1")
    if n < bin_size:
        raise ValueError(f"RMS calibration error needs at least bin_size={bin_size} samples, got {n}")
    k = n // bin_size
    bounds = [(i * bin_size, (i + 1) * bin_size) for i in range(k)]
    bounds[-1] = (bounds[-1][0], n)
    if drop_last_bin:
        return AdaptiveBins(n, bin_size, tuple(bounds[:-1]), bounds[-1])
    return AdaptiveBins(n, bin_size, tuple(bounds), None)


def _sorted(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if confidence.shape != correct.shape or confidence.ndim != 1:
        raise ValueError("confidence and correct must be 1-d arrays of the same length")
    order = np.argsort(confidence, kind="stable")
    return confidence[order], correct[order]


def adaptive_bin_stats(confidence: np.ndarray, correct: np.ndarray, bin_size: int = 100,
                       drop_last_bin: bool = True) -> dict[str, Any]:
    """Per adaptive bin: sample count, mean confidence, accuracy, and whether it enters the RMS sum."""
    conf, corr = _sorted(confidence, correct)
    bins = adaptive_bins(len(conf), bin_size, drop_last_bin)
    ranges = list(bins.kept) + ([bins.dropped] if bins.dropped else [])
    return {
        "count": [e - s for s, e in ranges],
        "confidence": [float(conf[s:e].mean()) for s, e in ranges],
        "accuracy": [float(corr[s:e].mean()) for s, e in ranges],
        "kept": [True] * len(bins.kept) + ([False] if bins.dropped else []),
    }


def rms_calibration_error(confidence: np.ndarray, correct: np.ndarray, bin_size: int = 100,
                          drop_last_bin: bool = True) -> float:
    """RMS calibration error (fraction) with confidence-sorted bins of ``bin_size`` samples; see the module doc."""
    conf, corr = _sorted(confidence, correct)
    n = len(conf)
    bins = adaptive_bins(n, bin_size, drop_last_bin)
    if not bins.kept:
        return 0.0
    starts = np.array([s for s, _ in bins.kept])
    ends = np.array([e for _, e in bins.kept])
    cs_conf = np.concatenate([[0.0], np.cumsum(conf)])
    cs_corr = np.concatenate([[0.0], np.cumsum(corr)])
    sizes = ends - starts
    diff = (cs_conf[ends] - cs_conf[starts] - (cs_corr[ends] - cs_corr[starts])) / sizes
    return float(np.sqrt(np.sum(sizes / n * diff**2)))


# ---------------------------------------------------------------------------------------------------------------------
# equal-width bins: ECE and the reliability diagram


def equal_width_bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin ``b`` holds confidences in ``(b / n_bins, (b + 1) / n_bins]``; 0 goes to bin 0."""
    inner = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    return np.searchsorted(inner, np.asarray(confidence, dtype=np.float64), side="left")


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> dict[str, Any]:
    """Equal-width bins: ``edges`` [n_bins+1], ``count``, ``confidence`` (mean), ``accuracy`` (None when empty)."""
    conf = np.asarray(confidence, dtype=np.float64)
    corr = np.asarray(correct, dtype=np.float64)
    idx = equal_width_bin_index(conf, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    sconf = np.bincount(idx, weights=conf, minlength=n_bins)
    scorr = np.bincount(idx, weights=corr, minlength=n_bins)
    return {
        "edges": np.linspace(0.0, 1.0, n_bins + 1).tolist(),
        "count": count.astype(int).tolist(),
        "confidence": [float(a / c) if c else None for a, c in zip(sconf, count)],
        "accuracy": [float(a / c) if c else None for a, c in zip(scorr, count)],
    }


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """ECE (fraction) with ``n_bins`` equal-width bins; see the module doc."""
    conf = np.asarray(confidence, dtype=np.float64)
    corr = np.asarray(correct, dtype=np.float64)
    n = len(conf)
    if n == 0:
        raise ValueError("ECE of an empty set")
    idx = equal_width_bin_index(conf, n_bins)
    gap = np.bincount(idx, weights=conf - corr, minlength=n_bins)  # per bin: |B| * (mean conf - accuracy)
    return float(np.abs(gap).sum() / n)


# ---------------------------------------------------------------------------------------------------------------------
# everything at once


def definitions(bin_size: int = 100, drop_last_bin: bool = True, ece_bins: int = 15, percent: bool = True,
                num_classes: int | str = "C") -> dict[str, str]:
    """The ``metric_definitions`` of a result (they follow the protocol's constants)."""
    unit = "in percent" if percent else "as a fraction"
    drop = (f"as in the original calib_err, the last bin (the {bin_size} + n mod {bin_size} most confident samples) "
            f"is left out of the sum while the weights still divide by n; with fewer than {2 * bin_size} samples "
            "it is 0") if drop_last_bin else "every bin is summed"
    return {
        "top1": f"top-1 accuracy {unit}: arg-max over the {num_classes} kept logits equals the label",
        "calib_rms": (f"RMS calibration error {unit} (Hendrycks et al., calib_err p='2', beta={bin_size}): samples sorted "
                      f"by confidence (max softmax probability), cut into n // {bin_size} bins of {bin_size} (last bin "
                      f"extended to n); sqrt(sum_b |b|/n * (mean confidence_b - accuracy_b)^2); {drop}"),
        "ece15": (f"expected calibration error {unit}, {ece_bins} equal-width confidence bins (b/{ece_bins}, "
                  f"(b+1)/{ece_bins}]: sum_b |b|/n * |accuracy_b - mean confidence_b|"),
        "nll": f"negative log-likelihood: mean over samples of -ln p(label), softmax over the {num_classes} kept logits (nats)",
        "brier": (f"multi-class Brier score: mean over samples of sum_k (p_k - 1[k = label])^2 over the {num_classes} kept "
                  "classes (plain number in [0, 2], not divided by the number of classes)"),
    }


def units(percent: bool = True) -> dict[str, str]:
    frac = "%" if percent else "fraction"
    return {"top1": frac, "calib_rms": frac, "ece15": frac, "nll": "nats", "brier": "score"}


def summarize(scores: SampleScores, bin_size: int = 100, drop_last_bin: bool = True, ece_bins: int = 15,
              percent: bool = True) -> dict[str, float]:
    """``top1, calib_rms, ece15, nll, brier`` of per-sample scores (the first three in percent when ``percent``)."""
    if len(scores) == 0:
        raise ValueError("no samples")
    s = 100.0 if percent else 1.0
    return {
        "top1": float(scores.correct.mean()) * s,
        "calib_rms": rms_calibration_error(scores.confidence, scores.correct, bin_size, drop_last_bin) * s,
        "ece15": expected_calibration_error(scores.confidence, scores.correct, ece_bins) * s,
        "nll": float(scores.nll.mean()),
        "brier": float(scores.brier.mean()),
    }
