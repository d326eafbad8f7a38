"""Markdown rendering of the leaderboard's table model."""

from __future__ import annotations

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


def _md_table(t: Table, rows: list[Row], src_idx: dict[str, int], *, complete: bool, with_note: bool) -> list[str]:
    mixed, show_exp = extra_columns(t)
    head = ["kind", "checkpoint", "sha256"] + (["experiment"] if show_exp else []) + (["data"] if mixed else []) + ["n"]
    head += [metric_header(m, t.higher_is_better) for m in t.metrics] + (["data (vs official)"] if with_note else [])
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join(["---"] * (3 + show_exp + mixed) + ["---:"] * (1 + len(t.metrics)) + ["---"] * with_note) + "|"]
    best = {m: t.best(m, complete=complete) for m in t.metrics}
    for r in rows:
        if r.kind == "measured":
            cells = []
            for m in t.metrics:
                c = r.cells.get(m)
                s = fmt_cell(c)
                if c is not None and best[m] is not None and c.mean == best[m]:
                    s = f"**{s}**"
                cells.append(s)
            line = ["measured", _md_escape(r.label), f"`{r.short_sha}`" if r.sha256 else DASH]
            line += ([f"`{(r.experiment or '')[:8]}`"] if show_exp else []) + ([r.data_fp or DASH] if mixed else [])
            line += [str(len(r.seeds))] + cells + ([_md_escape(r.data_note or DASH)] if with_note else [])
        else:
            refs = "".join(f"[{src_idx[s]}]" for s in r.sources)
            line = [f"*published*{published_mark(r)}", f"*{_md_escape(r.label)}* {refs}", DASH]
            line += [DASH] * (show_exp + mixed) + [DASH]
            line += [f"*{fmt_cell(r.cells[m])}*" if m in r.cells else DASH for m in t.metrics] + ([DASH] if with_note else [])
        out.append("| " + " | ".join(line) + " |")
    return out


def render_markdown(tables: list[Table], *, source_dir: str | None = None, n_records: int | None = None,
                    plots: list[Path] | None = None) -> str:
    src_idx = sources_index(tables)
    out = ["# mopro-bench leaderboard", ""]
    if source_dir is not None:
        out.append(f"Built from {n_records} result record(s) in `{source_dir}` by `mopro-bench leaderboard`.")
    out += [
        f"One table per protocol, one row per experiment (checkpoint, head file, options, data content); {SPREAD_LEGEND}. "
        f"**Bold**: best measured value in a column (↑ higher is better, ↓ lower). Rows marked *published*{DAGGER} are "
        f"numbers from the cited sources, never measured here ({DAGGER}{UNVERIFIED}: not yet checked against the source). "
        "Rows measured on partial or generated data are listed apart, under each table.", "",
    ]
    for t in tables:
        out += [f"## {t.title}", ""]
        meta = []
        if t.version:
            meta.append(f"protocol v{t.version}")
        if t.params_hash:
            meta.append(f"constants `{t.params_hash}`")
        if t.selection:
            meta.append("selection: " + "; ".join(t.selection))
        meta.append(f"{len(t.measured)} measured ({len(t.partial)} on partial data), {len(t.published)} published")
        out += [" · ".join(meta), ""]
        main, partial = split_rows(t)
        if main:
            out += _md_table(t, main, src_idx, complete=True, with_note=False) + [""]
        if partial:
            out += [f"**{PARTIAL_TITLE}:**", ""]
            out += _md_table(t, partial, src_idx, complete=False, with_note=True) + [""]
        for note in t.notes:
            out.append(f"> {note}")
        if t.notes:
            out.append("")
        pub_notes = [f"{r.label}: {r.note}" for r in t.published if r.note]
        pub_notes += [f"{UNVERIFIED} {r.label}: copied from the source but not yet verified against it"
                      for r in t.published if r.unverified]
        for n in pub_notes:
            out.append(f"- {DAGGER} {_md_escape(n)}")
        if pub_notes:
            out.append("")
    if src_idx:
        out += ["## Sources of published numbers", ""]
        out += [f"{i}. {s}" for s, i in src_idx.items()]
        out.append("")
    if plots:
        out += ["## Plots", ""]
        out += [f"![{p.stem}]({p.name})" for p in plots]
        out.append("")
    return "\n".join(out)


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")
