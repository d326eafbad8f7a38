"""HTML rendering of the leaderboard's table model (one self-contained page)."""

from __future__ import annotations

import html
from pathlib import Path

from mopro_bench.leaderboard.model import (
    DAGGER,
    DASH,
    PARTIAL_TITLE,
    SPREAD_LEGEND,
    UNVERIFIED,
    Row,
    Table,
    extra_columns,
    fmt_cell,
    metric_header,
    published_mark,
    sources_index,
    split_rows,
)

_HTML_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}
th,td{border:1px solid #ccc;padding:.25em .6em}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.published td{background:#f4f4f4;font-style:italic;color:#555}
tr.partial td{color:#8a5a00}
.meta{color:#666;font-size:.9em}
.note{color:#8a5a00}
img{max-width:100%}
"""


def _html_table(t: Table, rows: list[Row], src_idx: dict[str, int], *, complete: bool, with_note: bool) -> list[str]:
    e = html.escape
    mixed, show_exp = extra_columns(t)
    out = ["<table><tr><th>kind</th><th>checkpoint</th><th>sha256</th>" + ("<th>experiment</th>" if show_exp else "")
           + ("<th>data</th>" if mixed else "") + "<th>n</th>"
           + "".join(f"<th>{e(metric_header(m, t.higher_is_better))}</th>" for m in t.metrics)
           + ("<th>data (vs official)</th>" if with_note else "") + "</tr>"]
    best = {m: t.best(m, complete=complete) for m in t.metrics}
    for r in rows:
        if r.kind == "measured":
            tds = []
            for m in t.metrics:
                c = r.cells.get(m)
                s = e(fmt_cell(c))
                if c is not None and best[m] is not None and c.mean == best[m]:
                    s = f"<b>{s}</b>"
                tds.append(f"<td class='num'>{s}</td>")
            out.append(f"<tr class='{'measured' if complete else 'partial'}'><td>measured</td>"
                       f"<td>{e(r.label)}</td><td><code>{e(r.short_sha) or DASH}</code></td>"
                       + (f"<td><code>{e((r.experiment or '')[:8])}</code></td>" if show_exp else "")
                       + (f"<td>{e(r.data_fp or DASH)}</td>" if mixed else "") + f"<td class='num'>{len(r.seeds)}</td>"
                       + "".join(tds) + (f"<td>{e(r.data_note or DASH)}</td>" if with_note else "") + "</tr>")
        else:
            refs = "".join(f"[{src_idx[s]}]" for s in r.sources)
            title = e(r.note, quote=True)
            out.append(f"<tr class='published{' unverified' if r.unverified else ''}' title='{title}'>"
                       f"<td>published{published_mark(r)}</td><td>{e(r.label)} {refs}</td>"
                       f"<td>{DASH}</td>" + f"<td>{DASH}</td>" * (show_exp + mixed) + f"<td>{DASH}</td>"
                       + "".join(f"<td class='num'>{e(fmt_cell(r.cells[m])) if m in r.cells else DASH}</td>"
                                 for m in t.metrics) + (f"<td>{DASH}</td>" if with_note else "") + "</tr>")
    out.append("</table>")
    return out


def render_html(tables: list[Table], *, source_dir: str | None = None, n_records: int | None = None,
                plots: list[Path] | None = None) -> str:
    e = html.escape
    src_idx = sources_index(tables)
    out = ["<!doctype html><html><head><meta charset='utf-8'><title>mopro-bench leaderboard</title>",
           f"<style>{_HTML_STYLE}</style></head><body>", "<h1>mopro-bench leaderboard</h1>"]
    if source_dir is not None:
        out.append(f"<p class='meta'>Built from {n_records} result record(s) in <code>{e(source_dir)}</code>.</p>")
    out.append(f"<p class='meta'>{e(SPREAD_LEGEND)}. <b>Bold</b>: best measured value in a column. Grey italic rows "
               f"marked published{DAGGER} are numbers from the cited sources, never measured here "
               f"({DAGGER}{UNVERIFIED}: not yet verified against the source). Rows on partial or generated data are "
               "listed apart under each table.</p>")
    for t in tables:
        out.append(f"<h2>{e(t.title)}</h2>")
        meta = [f"protocol v{t.version}" if t.version else "", f"constants {t.params_hash}" if t.params_hash else "",
                ("selection: " + "; ".join(t.selection)) if t.selection else "",
                f"{len(t.measured)} measured ({len(t.partial)} on partial data), {len(t.published)} published"]
        out.append(f"<p class='meta'>{e(' · '.join(m for m in meta if m))}</p>")
        main, partial = split_rows(t)
        if main:
            out += _html_table(t, main, src_idx, complete=True, with_note=False)
        if partial:
            out.append(f"<h3 class='partial'>{e(PARTIAL_TITLE)}</h3>")
            out += _html_table(t, partial, src_idx, complete=False, with_note=True)
        for note in t.notes:
            out.append(f"<p class='note'>{e(note)}</p>")
        for r in t.published:
            if r.note:
                out.append(f"<p class='meta'>{DAGGER} {e(r.label)}: {e(r.note)}</p>")
            if r.unverified:
                out.append(f"<p class='meta'>{DAGGER}{UNVERIFIED} {e(r.label)}: copied from the source but not yet "
                           "verified against it</p>")
    if src_idx:
        out.append("<h2>Sources of published numbers</h2><ol>" + "".join(f"<li>{e(s)}</li>" for s in src_idx) + "</ol>")
    if plots:
        out.append("<h2>Plots</h2>" + "".join(f"<p><img src='{e(p.name)}' alt='{e(p.stem)}'></p>" for p in plots))
    out.append("</body></html>")
    return "\n".join(out) + "\n"
