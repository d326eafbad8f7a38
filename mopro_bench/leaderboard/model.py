"""The leaderboard's table model: rows, columns, published rows and partial-data sections, built from result
records (:mod:`mopro_bench.results`) and published numbers (:mod:`mopro_bench.leaderboard.published`). Renderers
(``render_md``, ``render_html``, ``render_csv``, ``plots``) import this module and never each other.

One table per protocol: records are grouped by protocol id (``task@proto`` or ``task@proto+<hash>`` when constants
were overridden) *and* by protocol version and constants, so two definitions never share a table even when a
suite upgrade kept the id. Within a table a row is one *experiment* (``record.experiment.key``: checkpoint bytes,
head file, options, data content -- everything but the seed); its cells are the mean over the row's records (one per
seed) and a spread:

* ``std_kind="seeds"``: sample standard deviation (ddof=1) over the row's seeds, when it has 2 or more;
* ``std_kind="within"``: with a single record, the task's own spread ``<metric>_std`` (e.g. over the 5 low-shot
  split draws), when the record has it.

Published rows come from ``published.csv`` (``kind=published``; ``leaderboard.published``): they are attached only to the
table of the exact protocol id they were published under (never to a ``+hash`` variant), carry their source, and
are rendered apart (a ``published`` kind, italics and a dagger, never bold, never used for "best"); a published row
whose ``status`` is ``unverified`` carries a second mark (‡) and a footnote.

Rows measured on data that is not the complete official dataset (``data.complete`` false: fewer or more images than
the official split sizes, or generated data) are rendered in a section of their own under the table, never next
to the published rows and never compared with the complete rows for "best".

Nothing here is state: the tables are a pure function of the records and the published file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mopro_bench.leaderboard.published import Published
from mopro_bench.results import data_fingerprint, dedupe_seeds, group_experiments, protocol_key, task_matches

# metric names that are errors (lower is better) when the task does not say
_LOWER_HINTS = ("calib", "ece", "nll", "error", "err_", "brier", "loss")
DASH = "—"
DAGGER = "†"
UNVERIFIED = "‡"


@dataclass
class Cell:
    mean: float
    std: float | None
    std_kind: str | None  # "seeds" | "within" | None
    n: int
    values: list[float] = field(default_factory=list)
    text: str | None = None  # published values: as printed in the source


@dataclass
class Row:
    kind: str  # "measured" | "published"
    name: str
    cells: dict[str, Cell]
    sha256: str | None = None
    arch: str | None = None
    seeds: list[int] = field(default_factory=list)
    data_fp: str | None = None
    synthetic: bool = False
    sources: list[str] = field(default_factory=list)
    note: str = ""
    pretrain_data: str = ""
    records: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    experiment: str | None = None  # record.experiment.key (measured rows)
    head_sha256: str | None = None  # --head file of the experiment
    complete: bool = True  # measured on the complete official dataset (published rows: True)
    data_note: str = ""  # why not complete
    unverified: bool = False  # published row whose status is "unverified"

    @property
    def short_sha(self) -> str:
        return self.sha256[:8] if self.sha256 else ""

    @property
    def label(self) -> str:
        if self.kind == "published":
            extra = ", ".join(x for x in (self.arch, self.pretrain_data) if x)
            return f"{self.name} ({extra})" if extra else self.name
        head = f" + head {self.head_sha256[:8]}" if self.head_sha256 else ""
        return self.name + head + (" (synthetic data)" if self.synthetic else "")


@dataclass
class Table:
    protocol_id: str
    task: str
    version: str
    params: dict[str, Any]
    params_hash: str
    description: str
    metrics: list[str]
    higher_is_better: dict[str, bool]
    rows: list[Row]
    selection: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    variant: bool = False  # the same protocol id appears with another version/constants

    @property
    def measured(self) -> list[Row]:
        return [r for r in self.rows if r.kind == "measured"]

    @property
    def partial(self) -> list[Row]:
        """Measured rows on data that is not the complete official dataset (shown apart)."""
        return [r for r in self.rows if r.kind == "measured" and not r.complete]

    @property
    def published(self) -> list[Row]:
        return [r for r in self.rows if r.kind == "published"]

    @property
    def title(self) -> str:
        if self.variant:
            return f"{self.protocol_id} (protocol v{self.version}, constants {self.params_hash})"
        return self.protocol_id

    def best(self, metric: str, complete: bool = True) -> float | None:
        """Best mean among the measured rows of one section (complete data, or the partial-data section)."""
        rows = [r for r in self.measured if r.complete == complete]
        vals = [r.cells[metric].mean for r in rows if metric in r.cells and math.isfinite(r.cells[metric].mean)]
        if len(vals) < 2:
            return None
        return max(vals) if self.higher_is_better.get(metric, True) else min(vals)

    def mixed_data(self) -> bool:
        return len({r.data_fp for r in self.measured}) > 1


def natural_key(text: str) -> list:
    """``mAP_k2`` before ``mAP_k16``: digits compare as numbers."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def is_companion(metric: str, metrics: Iterable[str]) -> bool:
    """``mAP_k1_std`` is the spread of ``mAP_k1``, not a column of its own."""
    return metric.endswith("_std") and metric[: -len("_std")] in set(metrics)


def lower_is_better_guess(metric: str) -> bool:
    m = metric.lower()
    return any(h in m for h in _LOWER_HINTS)


def task_info(task: str) -> tuple[tuple[str, ...], dict[str, bool]]:
    """The registered task's column order and directions, or ``((), {})`` when it is not installed."""
    try:
        from mopro_bench.registry import registry

        t = registry().get(task)
    except Exception:  # a leaderboard must render even where tasks cannot be imported (e.g. no torch)
        t = None
    if t is None:
        return (), {}
    return tuple(getattr(t, "metrics", ()) or ()), dict(getattr(t, "higher_is_better", {}) or {})


def order_metrics(present: Iterable[str], preferred: Iterable[str] = ()) -> list[str]:
    present = set(present)
    pref = [m for m in preferred if m in present]
    return pref + sorted(present - set(pref), key=natural_key)


def aggregate(records: list[dict[str, Any]], metric: str) -> Cell | None:
    vals = [float(r["metrics"][metric]) for r in records if metric in r["metrics"]]
    if not vals:
        return None
    n = len(vals)
    mean = math.fsum(vals) / n
    if n >= 2:
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1))
        return Cell(mean, std, "seeds", n, vals)
    rec = next(r for r in records if metric in r["metrics"])
    within = rec["metrics"].get(f"{metric}_std")
    return Cell(mean, float(within) if within is not None else None, "within" if within is not None else None, n, vals)


def _published_rows(published: list[Published], protocol_id: str) -> list[Row]:
    rows: dict[tuple[str, str, str], Row] = {}
    for p in published:
        if p.protocol_id != protocol_id:
            continue
        key = (p.model, p.arch, p.pretrain_data)
        row = rows.setdefault(key, Row(kind="published", name=p.model, cells={}, arch=p.arch, pretrain_data=p.pretrain_data))
        row.cells[p.metric] = Cell(p.value, None, None, 0, [p.value], text=p.text or None)
        row.unverified |= p.status == "unverified"
        if p.source not in row.sources:
            row.sources.append(p.source)
        if p.note and p.note not in row.note:
            row.note = (row.note + " " + p.note).strip()
    return list(rows.values())


def build_tables(
    records: list[tuple[Path, dict[str, Any]]],
    published: list[Published] | None = None,
    *,
    task: str | None = None,
    all_published: bool = False,
) -> list[Table]:
    """Group records into one :class:`Table` per protocol (id, version, constants) and attach published rows."""
    published = [p for p in (published or []) if task_matches(task, p.protocol_id.split("@")[0], p.protocol_id)]
    groups: dict[tuple[str, str, str], list[tuple[Path, dict]]] = {}
    for path, rec in records:
        if task_matches(task, rec["task"], rec["protocol"]["id"]):
            groups.setdefault(protocol_key(rec), []).append((path, rec))
    ids_count: dict[str, int] = {}
    for pid, _, _ in groups:
        ids_count[pid] = ids_count.get(pid, 0) + 1

    tables: list[Table] = []
    for key in sorted(groups, key=lambda k: (natural_key(k[0]), natural_key(k[1]), k[2])):
        pid, version, phash = key
        group = groups[key]
        first = group[0][1]
        task_name = first["task"]
        preferred, hib_registered = task_info(task_name)
        notes: list[str] = []
        by_row = group_experiments(group)  # one row per experiment (and display name): seeds of one experiment only
        all_metrics: set[str] = set()
        for _, rec in group:
            all_metrics |= set(rec["metrics"])
        pub_rows = [] if "+" in pid else _published_rows(published, pid)
        for r in pub_rows:
            all_metrics |= set(r.cells)
        columns = order_metrics([m for m in all_metrics if not is_companion(m, all_metrics)], preferred)
        rows: list[Row] = []
        for (name, key), members in by_row.items():
            members = dedupe_seeds(members, notes)
            recs = [r for _, r in members]
            cells = {m: c for m in columns if (c := aggregate(recs, m)) is not None}
            ck = recs[0]["checkpoint"]
            incomplete = [r for r in recs if not r["data"].get("complete")]
            rows.append(Row(
                kind="measured", name=name, cells=cells, sha256=ck.get("sha256"), arch=ck.get("arch"),
                seeds=[r["seed"] for r in recs], data_fp=data_fingerprint(recs[0]),
                synthetic=any(bool((r.get("data") or {}).get("synthetic")) for r in recs),
                records=recs, files=[str(p) for p, _ in members], experiment=key,
                head_sha256=((recs[0]["experiment"].get("files") or {}).get("head") or {}).get("sha256"),
                complete=not incomplete, data_note=(incomplete[0]["data"].get("complete_note") or "") if incomplete else "",
            ))
        hib = {m: hib_registered.get(m, not lower_is_better_guess(m)) for m in columns}
        primary = next((m for m in columns if any(m in r.cells for r in rows)), None)

        def sort_key(row: Row, primary=primary, hib=hib):
            if primary is None or primary not in row.cells or not math.isfinite(row.cells[primary].mean):
                return (1, 0.0, row.name)
            v = row.cells[primary].mean
            return (0, -v if hib[primary] else v, row.name)

        rows.sort(key=sort_key)
        selections = sorted({r["selection"] for _, r in group})
        table = Table(
            protocol_id=pid, task=task_name, version=version, params=first["protocol"].get("params", {}),
            params_hash=phash, description=first["protocol"].get("description", ""), metrics=columns,
            higher_is_better=hib, rows=rows + pub_rows, selection=selections, notes=notes, variant=ids_count[pid] > 1,
        )
        if table.variant:
            table.notes.append(f"results for {pid} were produced under {ids_count[pid]} different protocol definitions "
                               "(version or constants); each has its own table and they must not be compared")
        if table.mixed_data():
            table.notes.append("rows were measured on different data (see the data column: a hash of the dataset "
                               "identity in each record's `data`)")
        if any(r.synthetic for r in rows):
            table.notes.append("rows marked (synthetic data) were measured on generated data: a pipeline check, not "
                               "comparable with published numbers")
        same_ck = {}
        for r in rows:
            same_ck.setdefault((r.name, r.sha256), set()).add(r.experiment)
        if any(len(v) > 1 for v in same_ck.values()):
            table.notes.append("a checkpoint with several rows was evaluated in several experiments (other data content, "
                               "head file or options; see the experiment column); they are never pooled as seeds")
        if pub_rows and any(r.cells for r in rows):
            table.notes.append(f"published rows ({DAGGER}) are copied from their sources under the published protocol; "
                               "they were not measured by this suite")
        tables.append(table)

    if all_published:
        have = {t.protocol_id for t in tables}
        for pid in sorted({p.protocol_id for p in published} - have, key=natural_key):
            pub_rows = _published_rows(published, pid)
            tname = pid.split("@")[0]
            preferred, hib_registered = task_info(tname)
            metrics = order_metrics({m for r in pub_rows for m in r.cells}, preferred)
            hib = {m: hib_registered.get(m, not lower_is_better_guess(m)) for m in metrics}
            tables.append(Table(pid, tname, "", {}, "", "", metrics, hib, pub_rows,
                                notes=["no measured results for this protocol yet"]))
    return tables


# what every renderer shows the same way


def fmt_num(v: float | None, digits: int = 2) -> str:
    if v is None:
        return DASH
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return f"{v:.{digits}f}"


def fmt_cell(cell: Cell | None, digits: int = 2) -> str:
    if cell is None:
        return DASH
    if cell.text:
        return cell.text
    s = fmt_num(cell.mean, digits)
    if cell.std is not None:
        s += f" ± {fmt_num(cell.std, digits)}"
    return s


def metric_header(metric: str, hib: dict[str, bool]) -> str:
    return f"{metric} {'↑' if hib.get(metric, True) else '↓'}"


def sources_index(tables: list[Table]) -> dict[str, int]:
    idx: dict[str, int] = {}
    for t in tables:
        for r in t.published:
            for s in r.sources:
                idx.setdefault(s, len(idx) + 1)
    return idx


SPREAD_LEGEND = ("cells: mean ± std over seeds when a checkpoint has 2 or more records; with one record, ± is the "
                 "task's own spread (its `<metric>_std`, e.g. over the low-shot split draws); n = records (seeds)")


PARTIAL_TITLE = "Partial or generated data -- not comparable with the published rows or the rows above"


def split_rows(t: Table) -> tuple[list[Row], list[Row]]:
    """(main rows: complete measured + published, partial-data rows)."""
    return [r for r in t.rows if r.kind == "published" or r.complete], t.partial


def extra_columns(t: Table) -> tuple[bool, bool]:
    """(show the data column, show the experiment column)."""
    per_ck: dict[tuple, set] = {}
    for r in t.measured:
        per_ck.setdefault((r.name, r.sha256), set()).add(r.experiment)
    return t.mixed_data(), any(len(v) > 1 for v in per_ck.values())


def published_mark(r: Row) -> str:
    return DAGGER + (UNVERIFIED if r.unverified else "")
