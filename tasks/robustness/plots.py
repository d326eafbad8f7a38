"""Pictures of results: reliability diagrams and calibration comparisons (PNG, matplotlib Agg, written atomically).

Each function builds its own :class:`matplotlib.figure.Figure` (no pyplot state, safe in threads and without a
display) and writes through :func:`mopro_bench.io.atomic_save_with`.

* :func:`reliability_diagram` -- one result: accuracy vs confidence in equal-width bins, the gap to the diagonal
  shaded, the bin counts below, and the confidence-sorted bins of the RMS calibration error as dots.
* :func:`calibration_comparison` -- several results (records of ``imagenet_r``, ``imagenet_a``,
  ``imagenet_val_calibration``): their reliability curves on one plot, and their calibration errors side by side.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mopro_bench.errors import BenchError
from mopro_bench.io import atomic_save_with

DPI = 120


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas, without touching pyplot's global backend
    return fig


def _save(fig, path: str | os.PathLike) -> Path:
    return atomic_save_with(Path(path), lambda fh: fig.savefig(fh, format="png", dpi=DPI))


def reliability_diagram(reliability: dict[str, Any], path: str | os.PathLike, *, title: str = "",
                        adaptive: dict[str, Any] | None = None, metrics: dict[str, float] | None = None,
                        units: dict[str, str] | None = None) -> Path:
    """Draw one reliability diagram.

    ``reliability``: ``{"edges", "count", "confidence", "accuracy"}`` of equal-width bins (as from
    :func:`mopro_bench.metrics.calibration.reliability_bins`; empty bins have ``None``). ``adaptive`` (optional):
    ``{"count", "confidence", "accuracy", "kept"}`` of the confidence-sorted bins of the RMS error; a bin with
    ``kept=False`` (the one the published protocol leaves out) is drawn hollow. ``metrics`` are printed in a corner.
    """
    edges = [float(e) for e in reliability["edges"]]
    counts = [int(c) for c in reliability["count"]]
    nb = len(counts)
    if len(edges) != nb + 1:
        raise ValueError("reliability: len(edges) must be len(count) + 1")
    width = [edges[i + 1] - edges[i] for i in range(nb)]
    left = edges[:-1]
    fig = _figure(5.2, 6.2)
    gs = fig.add_gridspec(2, 1, height_ratios=(3, 1))
    ax = fig.add_subplot(gs[0])
    axc = fig.add_subplot(gs[1], sharex=ax)

    ax.plot([0, 1], [0, 1], ls="--", color="0.45", lw=1, label="perfect calibration")
    first_bar = first_gap = True
    for i in range(nb):
        acc, conf = reliability["accuracy"][i], reliability["confidence"][i]
        if acc is None or conf is None or counts[i] == 0:
            continue
        ax.bar(left[i], acc, width=width[i], align="edge", color="#3b75af", edgecolor="white", lw=0.6,
               label="accuracy" if first_bar else None)
        first_bar = False
        lo, hi = sorted((acc, conf))
        ax.bar(left[i], hi - lo, bottom=lo, width=width[i], align="edge", color="#d62728", alpha=0.28,
               edgecolor="#d62728", hatch="//", lw=0.5, label="gap to mean confidence" if first_gap else None)
        first_gap = False
        ax.plot([left[i], left[i] + width[i]], [conf, conf], color="#d62728", lw=1)
    if adaptive and adaptive.get("count"):
        kept = adaptive.get("kept") or [True] * len(adaptive["count"])
        xs_k = [c for c, k in zip(adaptive["confidence"], kept) if k]
        ys_k = [a for a, k in zip(adaptive["accuracy"], kept) if k]
        xs_d = [c for c, k in zip(adaptive["confidence"], kept) if not k]
        ys_d = [a for a, k in zip(adaptive["accuracy"], kept) if not k]
        size = adaptive["count"][0]
        ax.scatter(xs_k, ys_k, s=9, color="black", alpha=0.6, zorder=3, lw=0,
                   label=f"RMS-error bins ({size} samples each)")
        if xs_d:
            ax.scatter(xs_d, ys_d, s=22, facecolors="none", edgecolors="black", zorder=3, lw=0.8,
                       label="last bin (left out of calib_rms)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    summary = ""
    if metrics:
        units = units or {}
        parts = []
        for k in ("top1", "calib_rms", "ece15", "nll", "brier"):
            if k in metrics:
                pct = "%" if units.get(k) == "%" else ""
                parts.append(f"{k} {metrics[k]:.2f}{pct}" if pct else f"{k} {metrics[k]:.3f}")
        summary = "\n" + "   ".join(parts)
    ax.set_title((title or "reliability diagram") + summary, fontsize=9)
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    ax.tick_params(labelbottom=False)

    axc.bar(left, counts, width=width, align="edge", color="0.55", edgecolor="white", lw=0.6)
    positive = [c for c in counts if c > 0]
    if positive and max(positive) > 50 * min(positive):
        axc.set_yscale("log")
    axc.set_xlabel("confidence (max softmax probability)")
    axc.set_ylabel("samples")
    return _save(fig, path)


def _record_label(rec: dict[str, Any]) -> str:
    name = rec.get("checkpoint", {}).get("name", "?")
    proto = rec.get("protocol", {}).get("id") or rec.get("task", "?")
    return f"{name} | {proto}"


def calibration_comparison(records: Sequence[dict[str, Any] | str | os.PathLike], path: str | os.PathLike, *,
                           title: str = "calibration") -> Path:
    """Compare the calibration of several results (records or paths of result files) in one PNG.

    Left: each result's reliability curve (accuracy vs mean confidence of the equal-width bins). Right: its
    ``calib_rms`` and ``ece15`` as bars (top-1 in the label). Every record must come from a calibration task
    (``imagenet_r``, ``imagenet_a``, ``imagenet_val_calibration``): it carries ``details.reliability``.
    """
    from mopro_bench.results import read_record

    recs = [read_record(r) if isinstance(r, (str, os.PathLike)) else r for r in records]
    if not recs:
        raise BenchError("no result records to compare", "pass at least one result of imagenet_r, imagenet_a or "
                                                         "imagenet_val_calibration")
    for r in recs:
        if "reliability" not in r.get("details", {}) or "calib_rms" not in r.get("metrics", {}):
            raise BenchError(f"result {_record_label(r)} has no calibration data",
                             "compare results of imagenet_r, imagenet_a or imagenet_val_calibration")
    n = len(recs)
    fig = _figure(11, max(4.2, 1.2 + 0.42 * n))
    gs = fig.add_gridspec(1, 2, width_ratios=(1, 1.15))
    ax = fig.add_subplot(gs[0])
    axb = fig.add_subplot(gs[1])
    ax.plot([0, 1], [0, 1], ls="--", color="0.45", lw=1)
    from matplotlib import colormaps

    cmap = colormaps["tab10"] if n <= 10 else colormaps["tab20"]
    labels = []
    for i, r in enumerate(recs):
        rel = r["details"]["reliability"]
        pts = [(c, a, k) for c, a, k in zip(rel["confidence"], rel["accuracy"], rel["count"]) if k and c is not None]
        color = cmap(i % cmap.N)
        label = _record_label(r)
        labels.append(label)
        if pts:
            total = sum(p[2] for p in pts)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.2, color=color, label=label)
            # marker area ~ share of the samples in the bin: sparse bins (noisy accuracies) stay small
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=[4 + 120 * p[2] / total for p in pts], color=color,
                       alpha=0.8, lw=0, zorder=3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean confidence in bin")
    ax.set_ylabel("accuracy in bin")
    ax.set_title("reliability (equal-width bins; marker area = share of samples)", fontsize=10)
    ax.legend(fontsize=6.5, loc="upper left", frameon=False)

    h = 0.38
    ys = list(range(n))
    rms = [float(r["metrics"]["calib_rms"]) for r in recs]
    ece = [float(r["metrics"].get("ece15", float("nan"))) for r in recs]
    axb.barh([y - h / 2 for y in ys], rms, height=h, color="#d62728", alpha=0.8, label="calib_rms")
    axb.barh([y + h / 2 for y in ys], ece, height=h, color="#3b75af", alpha=0.8, label="ece15")
    for y, a, b in zip(ys, rms, ece):
        axb.text(a, y - h / 2, f" {a:.1f}", va="center", fontsize=7)
        axb.text(b, y + h / 2, f" {b:.1f}", va="center", fontsize=7)
    unit = recs[0].get("metric_units", {}).get("calib_rms", "%")
    axb.set_yticks(ys)
    axb.set_yticklabels([f"{lab}\ntop1 {float(r['metrics'].get('top1', float('nan'))):.1f}"
                         for lab, r in zip(labels, recs)], fontsize=7)
    axb.invert_yaxis()
    axb.set_xlabel(f"calibration error ({unit}; lower is better)")
    axb.set_title(title, fontsize=10, loc="left")
    axb.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, frameon=False)
    xmax = max([v for v in rms + ece if v == v] + [1e-6])
    axb.set_xlim(0, xmax * 1.18)
    return _save(fig, path)
