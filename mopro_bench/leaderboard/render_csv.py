"""CSV rendering of the leaderboard's table model (long format: one line per row and metric)."""

from __future__ import annotations

import csv
import io

from mopro_bench.leaderboard.model import Table

CSV_COLUMNS = ("kind", "protocol_id", "protocol_version", "protocol_constants", "task", "checkpoint", "sha256", "arch",
               "data", "n", "seeds", "metric", "mean", "std", "std_kind", "higher_is_better", "source", "note",
               "experiment", "complete", "status")


def render_csv(tables: list[Table]) -> str:
    """Long format: one line per (table row, metric) -- what a notebook wants (``pandas.read_csv``). ``complete`` is
    1 for rows on the complete official data (and published rows), 0 for partial/generated data; ``status`` is the
    published row's verified/unverified."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for t in tables:
        for r in t.rows:
            for m in t.metrics:
                c = r.cells.get(m)
                if c is None:
                    continue
                w.writerow([
                    r.kind, t.protocol_id, t.version, t.params_hash, t.task,
                    r.label if r.kind == "published" else r.name, r.sha256 or "", r.arch or "", r.data_fp or "",
                    len(r.seeds) if r.kind == "measured" else "", " ".join(map(str, r.seeds)), m, repr(c.mean),
                    "" if c.std is None else repr(c.std), c.std_kind or "", int(t.higher_is_better.get(m, True)),
                    "; ".join(r.sources), r.note if r.kind == "published" else r.data_note, r.experiment or "",
                    int(r.complete), ("unverified" if r.unverified else "verified") if r.kind == "published" else "",
                ])
    return buf.getvalue()
