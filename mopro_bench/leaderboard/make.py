"""``mopro-bench leaderboard``'s entry point: load records (results query), load published numbers, build the
table model, render (markdown + csv always, html on request, plots on request) and write atomically."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from mopro_bench.errors import BenchError
from mopro_bench.io import atomic_write_text, check_dir_creatable
from mopro_bench.leaderboard.model import Table, build_tables
from mopro_bench.leaderboard.published import DEFAULT_PUBLISHED, load_published
from mopro_bench.leaderboard.render_csv import render_csv
from mopro_bench.leaderboard.render_html import render_html
from mopro_bench.leaderboard.render_md import render_markdown
from mopro_bench.results import DEFAULT_RESULTS_DIR, LoadedRecords, load_records

DEFAULT_OUT_DIR = Path("leaderboards")


@dataclass
class LeaderboardOutput:
    tables: list[Table]
    text: str  # in the requested format
    written: list[Path]
    loaded: LoadedRecords


def make_leaderboard(
    results_dir: str | Path = DEFAULT_RESULTS_DIR,
    *,
    task: str | None = None,
    fmt: str = "md",
    out_dir: str | Path | None = DEFAULT_OUT_DIR,
    published: str | Path | None = DEFAULT_PUBLISHED,
    all_published: bool = False,
    plots: bool = False,
    skip_invalid: bool = False,
) -> LeaderboardOutput:
    """Load, group, render; write ``leaderboard.md`` + ``leaderboard.csv`` (+ ``.html``, plots) into ``out_dir``."""
    if fmt not in ("md", "csv", "html"):
        raise BenchError(f"--format {fmt!r} is not a leaderboard format", "use md, csv or html")
    if out_dir is not None:  # before any work: an output folder that cannot be written is one line, exit 2
        check_dir_creatable(out_dir, "--out-dir")
    loaded = load_records(results_dir, task=task, skip_invalid=skip_invalid)
    for line in loaded.invalid:
        print(f"warning: skipped invalid record: {line}", file=sys.stderr)
    for line in loaded.unreadable:
        print(f"warning: skipped {line}", file=sys.stderr)
    pub = load_published(published) if published else []
    if not loaded.records and not all_published:
        what = f" for --task {task}" if task else ""
        raise BenchError(f"no result records{what} in {results_dir}",
                         "run `mopro-bench eval --ckpt ... --task ... --data ...` first (or `mopro-bench demo`), or point "
                         "--results-dir at the directory that holds the records")
    tables = build_tables(loaded.records, pub, task=task, all_published=all_published)
    if not tables:
        raise BenchError(f"nothing to show for --task {task}", "run `mopro-bench tasks` for the task@protocol ids")
    written: list[Path] = []
    plot_paths: list[Path] = []
    if plots:
        if out_dir is None:
            raise BenchError("--plots needs an output directory", "drop --no-write or --plots")
        from mopro_bench.leaderboard.plots import write_plots

        plot_paths = write_plots(tables, Path(out_dir))
        written += plot_paths
    kw = {"source_dir": str(results_dir), "n_records": len(loaded.records), "plots": plot_paths}
    md = render_markdown(tables, **kw)
    text = {"md": lambda: md, "csv": lambda: render_csv(tables), "html": lambda: render_html(tables, **kw)}[fmt]()
    if out_dir is not None:
        out = Path(out_dir)
        written.insert(0, atomic_write_text(out / "leaderboard.md", md))
        written.insert(1, atomic_write_text(out / "leaderboard.csv", render_csv(tables)))
        if fmt == "html":
            written.insert(2, atomic_write_text(out / "leaderboard.html", text))
    return LeaderboardOutput(tables, text, written, loaded)
