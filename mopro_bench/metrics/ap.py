"""Average precision as the low-shot VOC07 benchmarks report it: all-point interpolated AP.

For one class, rank the images by score (descending). At every distinct score threshold take precision and recall;
make precision monotone from the right (``p_interp(r) = max_{r' >= r} p(r')``) and sum it over the recall steps::

    AP = sum_j (r_j - r_{j-1}) * p_interp(r_j)

This is the VOC2010+ devkit's area under the interpolated PR curve. It is *not* the 11-point VOC2007 metric and
*not* sklearn's ``average_precision_score`` (which does not interpolate).

Ties: images with equal scores are one threshold -- they are counted together, so the result does not depend on the
order of tied images (as sklearn's ``precision_recall_curve``). A class with no positive has no AP: ``nan``, which
:func:`mean_ap` leaves out of the mean (with a warning and a record of which classes). If every image is a positive,
precision is 1 at every threshold and AP = 1.0. Labels: 1 positive, -1 negative, 0 difficult (mapped to negative or
ignored by the caller's choice).
"""

from __future__ import annotations

import warnings

import numpy as np


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """All-point interpolated AP of one class (in [0, 1]); ``nan`` when there is no positive."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positive = np.asarray(positive).astype(bool).ravel()
    if scores.shape != positive.shape:
        raise ValueError(f"scores {scores.shape} and labels {positive.shape} differ in shape")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain nan or inf")
    n_pos = int(positive.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], positive[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    # the last index of every run of equal scores is a threshold
    last = np.r_[s[1:] != s[:-1], True]
    tp, fp = tp[last], fp[last]
    precision = tp / (tp + fp)
    recall = tp / n_pos
    # monotone from the right, then sum over recall steps
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.r_[0.0, recall])
    return float(np.sum(steps * precision))


def ap_per_class(scores: np.ndarray, labels: np.ndarray, difficult: str = "negative") -> np.ndarray:
    """AP of every column: ``scores [N, C]``, ``labels [N, C]`` in {1, -1, 0}; ``difficult`` = "negative" | "ignore"."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in shape")
    if difficult not in ("negative", "ignore"):
        raise ValueError(f"difficult must be 'negative' or 'ignore', not {difficult!r}")
    out = np.empty(scores.shape[1])
    for c in range(scores.shape[1]):
        keep = labels[:, c] != 0 if difficult == "ignore" else np.ones(len(labels), bool)
        out[c] = average_precision(scores[keep, c], labels[keep, c] == 1)
    return out


def mean_ap(per_class: np.ndarray, names: list[str] | tuple[str, ...] | None = None) -> tuple[float, list[str]]:
    """Mean over classes that have an AP; returns ``(mean, classes left out)`` and warns when any is left out."""
    per_class = np.asarray(per_class, dtype=np.float64)
    missing = np.isnan(per_class)
    left_out = [names[i] if names is not None else str(i) for i in np.flatnonzero(missing)]
    if left_out:
        warnings.warn(f"AP undefined (no positive test image) for {len(left_out)} class(es): {', '.join(left_out)}; "
                      "left out of the mean", RuntimeWarning, stacklevel=2)
    if missing.all():
        return float("nan"), left_out
    return float(per_class[~missing].mean()), left_out
