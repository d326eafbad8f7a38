"""Leaderboard figures: low-shot curves of several checkpoints, a calibration comparison, reliability small multiples.

Both are drawn from :class:`mopro_bench.leaderboard.model.Table` objects, so they show exactly what the tables show:
measured rows as solid lines / filled markers with error bars (the cell's ± spread), published rows as dashed lines
/ hollow stars labelled "(published)". Files are written atomically next to the tables.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from mopro_bench.io import atomic_save_with
from mopro_bench.leaderboard.model import Row, Table

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


def pooled_reliability(records: list[dict]) -> dict[str, list] | None:
    """The equal-width reliability bins of one row: its records' ``details.reliability`` pooled over seeds (counts
    summed, bin confidence / accuracy averaged weighted by count). None when no record has bins, or their edges differ."""
    rels = [rec["details"]["reliability"] for rec in records if isinstance(rec.get("details", {}).get("reliability"), dict)]
    if not rels or any(r.get("edges") != rels[0].get("edges") for r in rels):
        return None
    nb = len(rels[0]["count"])
    count, conf, acc = [0] * nb, [None] * nb, [None] * nb
    for b in range(nb):
        pts = [(int(r["count"][b]), r["confidence"][b], r["accuracy"][b]) for r in rels
               if r["count"][b] and r["confidence"][b] is not None and r["accuracy"][b] is not None]
        n = sum(p[0] for p in pts)
        count[b] = n
        if n:
            conf[b] = sum(p[0] * float(p[1]) for p in pts) / n
            acc[b] = sum(p[0] * float(p[2]) for p in pts) / n
    return {"edges": list(rels[0]["edges"]), "count": count, "confidence": conf, "accuracy": acc}


def _wrap(text: str, width: int = 44) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False)) or text


def plot_reliability(tables: list[Table], path: str | Path, *, columns: int = 3) -> Path | None:
    """Write :func:`reliability_figure` to ``path`` (PNG); None if there is nothing to draw."""
    fig = reliability_figure(tables, columns=columns)
    return None if fig is None else _save(fig, Path(path))


def reliability_figure(tables: list[Table], *, columns: int = 3):
    """Small multiples: one panel per calibration protocol (ImageNet-R, ImageNet-A, ImageNet val ...), one curve per
    measured checkpoint (accuracy against mean confidence of the equal-width bins, marker area = share of the
    samples, the checkpoint's colour the same in every panel), the diagonal = perfect calibration. None if no record
    carries reliability bins."""
    panels = []
    for t in tables:
        if calibration_pair(t) is None:
            continue
        rows = [(row, rel) for row in t.measured if (rel := pooled_reliability(row.records)) is not None]
        if rows:
            panels.append((t, rows))
    if not panels:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncol = min(columns, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    fig = Figure(figsize=(4.6 * ncol, 4.7 * nrow), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    color = _Colors()
    for ax, (t, rows) in zip(axes, panels):
        ax.plot([0, 1], [0, 1], ls="--", color="0.5", lw=1)
        _, cal = calibration_pair(t)
        for row, rel in rows:
            pts = [(c, a, n) for c, a, n in zip(rel["confidence"], rel["accuracy"], rel["count"]) if n and c is not None]
            if not pts:
                continue
            label = _row_label(row)
            cell = row.cells.get(cal)
            shown = f"{label}: {cal} {cell.mean:.1f}" if cell is not None and math.isfinite(cell.mean) else label
            total = sum(p[2] for p in pts)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.4, color=color(label), label=_wrap(shown, 52))
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=[6 + 110 * p[2] / total for p in pts],
                       color=color(label), alpha=0.8, lw=0, zorder=3)
        ax.set_xlim(-0.02, 1.02)  # a little room: points at accuracy 0 or 1 stay whole
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("mean confidence in bin")
        ax.set_ylabel("accuracy in bin")
        ax.set_title(_wrap(t.title), fontsize=9.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc="best", frameon=True, framealpha=0.85)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    # constrained layout does not shrink a figure title: wrap it to the figure's width (about 13 characters per inch)
    fig.suptitle(_wrap("Reliability: accuracy vs confidence (dashed = perfectly calibrated; marker area = share of "
                       "images)", int(4.6 * ncol * 13)), fontsize=10)
    return fig


def write_plots(tables: list[Table], out_dir: str | Path) -> list[Path]:
    """``lowshot.png``, ``calibration.png`` and ``calibration_reliability.png`` (one reliability panel per
    calibration protocol, from the records' bins) in ``out_dir``, each where the tables have such results."""
    out = Path(out_dir)
    paths = [plot_lowshot(tables, out / "lowshot.png"), plot_calibration(tables, out / "calibration.png"),
             plot_reliability(tables, out / "calibration_reliability.png")]
    return [p for p in paths if p is not None]
