"""The leaderboard renders; it owns no records. Layering inside the package (each imports only those above it):

* :mod:`~mopro_bench.leaderboard.published` -- ``published.csv`` (package data) and its rows;
* :mod:`~mopro_bench.leaderboard.model` -- the table model (:class:`Table`, :class:`Row`, :class:`Cell`,
  :func:`build_tables`): rows, columns, published rows, partial-data sections, built from
  :mod:`mopro_bench.results` queries and published numbers;
* renderers :mod:`~mopro_bench.leaderboard.render_md`, :mod:`~mopro_bench.leaderboard.render_html`,
  :mod:`~mopro_bench.leaderboard.render_csv`, :mod:`~mopro_bench.leaderboard.plots` -- each imports the model, never
  another renderer;
* :mod:`~mopro_bench.leaderboard.make` -- :func:`make_leaderboard`, the command's entry point.
"""

from __future__ import annotations

from mopro_bench.leaderboard.make import DEFAULT_OUT_DIR, LeaderboardOutput, make_leaderboard
from mopro_bench.leaderboard.model import PARTIAL_TITLE, Cell, Row, Table, build_tables
from mopro_bench.leaderboard.published import (
    DEFAULT_PUBLISHED,
    PUBLISHED_COLUMNS,
    PUBLISHED_STATUS,
    Published,
    load_published,
)
from mopro_bench.leaderboard.render_csv import CSV_COLUMNS, render_csv
from mopro_bench.leaderboard.render_html import render_html
from mopro_bench.leaderboard.render_md import render_markdown

__all__ = [
    "CSV_COLUMNS", "DEFAULT_OUT_DIR", "DEFAULT_PUBLISHED", "PARTIAL_TITLE", "PUBLISHED_COLUMNS", "PUBLISHED_STATUS",
    "Cell", "LeaderboardOutput", "Published", "Row", "Table", "build_tables", "load_published", "make_leaderboard",
    "render_csv", "render_html", "render_markdown",
]
