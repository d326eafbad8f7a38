"""The low-shot curve figure: metric against k with +-std error bars (saved next to the result as ``lowshot.png``)."""

from __future__ import annotations

from pathlib import Path

from mopro_bench.io import atomic_save_with


def plot_curve(path: Path, ks: list[int], means: list[float], stds: list[float], *, ylabel: str, title: str) -> Path:
    """Metric vs k with +-std error bars (log2 x axis), matplotlib Agg, written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 3.6), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.errorbar(ks, means, yerr=stds, marker="o", capsize=4, linewidth=1.5)
    for k, m in zip(ks, means):
        ax.annotate(f"{m:.1f}", (k, m), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])
    ax.set_xlabel("k (training images per class)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    return atomic_save_with(path, lambda fh: fig.savefig(fh, format="png"))
