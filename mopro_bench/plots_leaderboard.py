"""Leaderboard figures: low-shot curves of several checkpoints on one figure, and a calibration comparison.

Both are drawn from :class:`mopro_bench.leaderboard.Table` objects, so they show exactly what the tables show:
measured rows as solid lines / filled markers with error bars (the cell's ± spread), published rows as dashed lines
/ hollow stars labelled "(published)". Files are written atomically next to the tables.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

from mopro_bench.errors import BenchError
from mopro_bench.io import atomic_save_with
from mopro_bench.leaderboard import Row, Table

LOWSHOT_METRIC = re.compile(r"^(?P<base>.+)_k(?P<k>\d+)$")
ACCURACY_NAMES = ("top1", "acc", "accuracy")
DPI = 120


def lowshot_series(table: Table) -> dict[str, list[tuple[int, str]]]:
    """``{"mAP": [(1, "mAP_k1"), (2, "mAP_k2"), ...]}`` for every metric family with two or more shot counts."""
    fam: dict[str, list[tuple[int, str]]] = {}
    for m in table.metrics:
        hit = LOWSHOT_METRIC.match(m)
        if hit:
            fam.setdefault(hit["base"], []).append((int(hit["k"]), m))
    return {b: sorted(v) for b, v in fam.items() if len(v) >= 2}


def calibration_pair(table: Table) -> tuple[str, str] | None:
    """(accuracy metric, calibration-error metric) of a table, e.g. ("top1", "calib_rms")."""
    acc = next((m for m in table.metrics if m.lower() in ACCURACY_NAMES), None)
    acc = acc or next((m for m in table.metrics if m.lower().startswith("top1")), None)
    cal = next((m for m in table.metrics if "calib" in m.lower() or m.lower().startswith("ece")), None)
    return (acc, cal) if acc and cal else None


def _figure(n_panels: int, width: float = 5.4, height: float = 4.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * n_panels, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    return fig, axes


def _save(fig, path: Path) -> Path:
    return atomic_save_with(path, lambda fh: fig.savefig(fh, format="png", dpi=DPI))


def _row_label(row: Row) -> str:
    if row.kind == "published":
        return f"{row.name} (published)"
    return f"{row.label} [{row.short_sha}]" if row.sha256 else row.label


class _Colors:
    """One colour per checkpoint across all panels of a figure."""

    def __init__(self):
        from matplotlib import colormaps

        self.cmap = colormaps["tab10"]
        self.seen: dict[str, int] = {}

    def __call__(self, key: str):
        i = self.seen.setdefault(key, len(self.seen))
        return self.cmap(i % 10)


def plot_lowshot(tables: list[Table], path: str | Path) -> Path | None:
    """One panel per low-shot protocol; x = k (log2), y = metric, one curve per checkpoint. None if nothing to plot."""
    panels = [(t, base, ks) for t in tables for base, ks in lowshot_series(t).items()]
    if not panels:
        return None
    fig, axes = _figure(len(panels))
    color = _Colors()
    for ax, (t, base, ks) in zip(axes, panels):
        xs = [k for k, _ in ks]
        for row in t.rows:
            pts = [(k, row.cells[m]) for k, m in ks if m in row.cells and math.isfinite(row.cells[m].mean)]
            if not pts:
                continue
            x = [k for k, _ in pts]
            y = [c.mean for _, c in pts]
            label = _row_label(row)
            if row.kind == "published":
                ax.plot(x, y, linestyle="--", marker="*", markersize=9, markerfacecolor="none",
                        color=color(label), label=label)
            else:
                err = [c.std if c.std is not None else 0.0 for _, c in pts]
                ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=color(label), label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(k) for k in xs])
        ax.minorticks_off()
        ax.set_xlabel("k (labelled examples per class)")
        ax.set_ylabel(f"{base} (%)")
        ax.set_title(t.title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return _save(fig, Path(path))


def plot_calibration(tables: list[Table], path: str | Path) -> Path | None:
    """One panel per protocol with an accuracy and a calibration-error metric (e.g. imagenet_r@hendrycks):
    x = accuracy (higher is better), y = calibration error (lower is better); better models sit bottom right."""
    panels = [(t, pair) for t in tables if (pair := calibration_pair(t)) is not None]
    if not panels:
        return None
    fig, axes = _figure(len(panels), width=6.4, height=4.6)
    color = _Colors()
    for ax, (t, (acc, cal)) in zip(axes, panels):
        for row in t.rows:
            a, c = row.cells.get(acc), row.cells.get(cal)
            if a is None or c is None:
                continue
            label = _row_label(row)
            if row.kind == "published":
                ax.scatter([a.mean], [c.mean], marker="*", s=140, facecolors="none", edgecolors=[color(label)])
            else:
                ax.errorbar([a.mean], [c.mean], xerr=[a.std or 0.0], yerr=[c.std or 0.0], marker="o", capsize=3,
                            color=color(label), linestyle="none")
            ax.annotate(label, (a.mean, c.mean), textcoords="offset points", xytext=(5, 4), fontsize=7)
        ax.margins(0.25)
        ax.set_xlabel(f"{acc} (%) ↑")
        ax.set_ylabel(f"{cal} ↓")
        ax.set_title(f"{t.title}   (o measured, ☆ published)", fontsize=10)
        ax.grid(alpha=0.3)
    return _save(fig, Path(path))


def write_plots(tables: list[Table], out_dir: str | Path) -> list[Path]:
    """``lowshot.png`` and ``calibration.png`` (where the tables have such metrics) in ``out_dir``; plus
    ``calibration_reliability.png`` from ``mopro_bench.plots.calibration_comparison(records, path)`` (reliability
    diagrams from per-image data) when that module is installed."""
    out = Path(out_dir)
    paths = [plot_lowshot(tables, out / "lowshot.png"), plot_calibration(tables, out / "calibration.png")]
    cal_records = [rec for t in tables if calibration_pair(t) for r in t.measured for rec in r.records
                   if "reliability" in rec.get("details", {})]
    if cal_records:
        try:
            from mopro_bench.plots import calibration_comparison
        except (ImportError, AttributeError):
            calibration_comparison = None
        if calibration_comparison is not None:
            target = out / "calibration_reliability.png"
            try:
                calibration_comparison(cal_records, target)
            except BenchError as e:  # e.g. records without per-image confidences: the summary plot still stands
                print(f"warning: no reliability diagrams: {e.line()}", file=sys.stderr)
            if target.exists():
                paths.append(target)
    return [p for p in paths if p is not None]
