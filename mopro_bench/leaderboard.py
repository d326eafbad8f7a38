"""Leaderboard tables from a directory of result records, with published numbers beside them.

One table per protocol: records are grouped by protocol id (``task@proto`` or ``task@proto+<hash>`` when constants
were overridden) *and* by protocol version and constants, so two definitions never share a table even when a
suite upgrade kept the id. Within a table a row is one *experiment* (``record.experiment.key``: checkpoint bytes,
head file, options, data content -- everything but the seed); its cells are the mean over the row's records (one per
seed) and a spread:

* ``std_kind="seeds"``: sample standard deviation (ddof=1) over the row's seeds, when it has 2 or more;
* ``std_kind="within"``: with a single record, the task's own spread ``<metric>_std`` (e.g. over the 5 low-shot
  split draws), when the record has it.

Published rows come from ``leaderboards/published.csv`` (``kind=published``): they are attached only to the
table of the exact protocol id they were published under (never to a ``+hash`` variant), carry their source, and
are rendered apart (a ``published`` kind, italics and a dagger, never bold, never used for "best"); a published row
whose ``status`` is ``unverified`` carries a second mark (‡) and a footnote.

Rows measured on data that is not the complete official dataset (``data.complete`` false: fewer or more images than
the official split sizes, or generated data) are rendered in a section of their own under the table, never next
to the published rows and never compared with the complete rows for "best".

Nothing here is state: the tables are a pure function of the records and the published file.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mopro_bench.errors import BenchError
from mopro_bench.io import atomic_write_text, check_dir_creatable, sha256_json
from mopro_bench.results import identity, validate_record

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PUBLISHED = REPO_ROOT / "leaderboards" / "published.csv"
DEFAULT_RESULTS_DIR = Path("leaderboards/results")
DEFAULT_OUT_DIR = Path("leaderboards")
PUBLISHED_COLUMNS = ("kind", "model", "arch", "pretrain_data", "protocol_id", "metric", "value", "source", "note")
PUBLISHED_STATUS = ("verified", "unverified")  # optional column `status`; absent = verified
RECORD_NAME = re.compile(r"-seed-?\d+\.json$")
# metric names that are errors (lower is better) when the task does not say
_LOWER_HINTS = ("calib", "ece", "nll", "error", "err_", "brier", "loss")
DASH = "—"
DAGGER = "†"
UNVERIFIED = "‡"


# --------------------------------------------------------------------------------------------------- loading


@dataclass
class LoadedRecords:
    records: list[tuple[Path, dict[str, Any]]]
    skipped: list[Path] = field(default_factory=list)  # JSON files that are not result records (artifacts)
    invalid: list[str] = field(default_factory=list)  # refusal lines, when invalid records were skipped on request
    unreadable: list[str] = field(default_factory=list)  # `*.json` names that are not files (folders, broken links)


def task_matches(spec: str | None, task: str | None, protocol_id: str | None) -> bool:
    """``--task voc_lowshot`` selects every protocol of the task; ``--task voc_lowshot@mopro`` exactly that id."""
    if not spec:
        return True
    if "@" in spec:
        return protocol_id == spec
    return task == spec or (protocol_id or "").split("@")[0] == spec


def _looks_like_record(path: Path, obj: Any) -> bool:
    if RECORD_NAME.search(path.name):
        return True
    return isinstance(obj, dict) and ("schema_version" in obj or {"task", "metrics"} <= set(obj))


def load_records(results_dir: str | Path, *, task: str | None = None, skip_invalid: bool = False) -> LoadedRecords:
    """Every result record under ``results_dir`` (recursively), validated against the current schema.

    JSON files that are not records -- artifacts saved next to results (``*.splits.json``), anything under a
    ``*.work`` run directory, dot-files -- are skipped. A stale or invalid record is refused with one line naming
    the file and the fix (or, with ``skip_invalid``, left out and reported in ``invalid``).
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise BenchError(f"results directory {root} does not exist",
                         "run `mopro-bench eval ...` first, or pass the directory with --results-dir")
    out = LoadedRecords([])
    problems: list[str] = []
    for path in sorted(root.rglob("*.json")):
        rel = path.relative_to(root)
        if any(part.startswith(".") or part.endswith(".work") for part in rel.parts):
            continue
        if not path.is_file():  # a folder or a dangling symlink named *.json: not a record, never a traceback
            kind = "a folder" if path.is_dir() else "a broken symlink" if path.is_symlink() else "not a regular file"
            out.unreadable.append(f"{path} is {kind}")
            continue
        try:
            obj = json.loads(path.read_text())
        except OSError as e:
            out.unreadable.append(f"{path} cannot be read ({e.strerror or e})")
            continue
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            if RECORD_NAME.search(path.name):
                problems.append(f"{path}: not valid JSON ({e})")
            else:
                out.skipped.append(path)
            continue
        if not _looks_like_record(path, obj):
            out.skipped.append(path)
            continue
        if isinstance(obj, dict):
            pid = (obj.get("protocol") or {}).get("id") if isinstance(obj.get("protocol"), dict) else None
            if not task_matches(task, obj.get("task"), pid):
                continue
        try:
            validate_record(obj, str(path))
        except BenchError as e:
            problems.append(e.message)
            continue
        out.records.append((path, obj))
    if problems:
        if not skip_invalid:
            more = f" (and {len(problems) - 1} more invalid record(s))" if len(problems) > 1 else ""
            raise BenchError(
                problems[0] + more,
                "re-run that evaluation with this mopro-bench (`mopro-bench eval ...`), move the file out of the "
                "results directory, or pass --skip-invalid to leave such files out",
            )
        out.invalid = problems
    return out


@dataclass(frozen=True)
class Published:
    model: str
    arch: str
    pretrain_data: str
    protocol_id: str
    metric: str
    value: float
    source: str
    note: str
    text: str = ""  # the value as printed in the source (rendered as is: "39.7" stays "39.7")
    status: str = "verified"  # "unverified": copied but not checked against the source


def load_published(path: str | Path) -> list[Published]:
    """Rows of ``published.csv`` (see ``leaderboards/README.md`` for the columns); malformed rows are refused."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"published numbers file {path} does not exist", "pass --published FILE or --no-published")
    text = path.read_text(encoding="utf-8")
    reader = csv.DictReader(line for line in io.StringIO(text) if line.strip() and not line.lstrip().startswith("#"))
    missing = [c for c in PUBLISHED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise BenchError(f"{path}: missing column(s) {', '.join(missing)}",
                         "use the header " + ",".join(PUBLISHED_COLUMNS))
    rows = []
    for i, r in enumerate(reader, start=2):
        where = f"{path} row {i}"
        if (r.get("kind") or "").strip() != "published":
            raise BenchError(f"{where}: kind must be 'published' (got {r.get('kind')!r})",
                             "published.csv holds only published numbers; measured numbers come from result records")
        pid = (r.get("protocol_id") or "").strip()
        if "@" not in pid or "+" in pid:
            raise BenchError(f"{where}: protocol_id {pid!r} is not task@protocol",
                             "name the registered protocol the number was published under, e.g. voc_lowshot@mopro")
        try:
            value = float(r["value"])
        except (TypeError, ValueError):
            raise BenchError(f"{where}: value {r.get('value')!r} is not a number", "write the number as printed") from None
        if not (r.get("source") or "").strip():
            raise BenchError(f"{where}: no source", "name the paper and table, or the repository README")
        status = (r.get("status") or "").strip() or "verified"
        if status not in PUBLISHED_STATUS:
            raise BenchError(f"{where}: status {status!r} is not one of {', '.join(PUBLISHED_STATUS)}",
                             "write verified or unverified (or leave the column empty)")
        rows.append(Published(
            model=r["model"].strip(), arch=(r.get("arch") or "").strip(), pretrain_data=(r.get("pretrain_data") or "").strip(),
            protocol_id=pid, metric=r["metric"].strip(), value=value, source=r["source"].strip(),
            note=(r.get("note") or "").strip(), text=r["value"].strip(), status=status,
        ))
    return rows


# --------------------------------------------------------------------------------------------------- tables


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


def data_fingerprint(record: dict[str, Any]) -> str:
    """Hash of what the data *is* (kind, list hashes of the splits, content fingerprints of the whole splits read --
    the data part of the experiment key), not where it lives on this machine."""
    return sha256_json(identity(record, with_seed=False)["data"])[:8]


def protocol_key(record: dict[str, Any]) -> tuple[str, str, str]:
    p = record["protocol"]
    return p["id"], str(p.get("version", "")), sha256_json(p.get("params", {}))[:8]


def _dedupe_seeds(records: list[tuple[Path, dict]], notes: list[str]) -> list[tuple[Path, dict]]:
    """One record per seed of one experiment: when a seed was evaluated twice (a copy of the file, a re-run on another
    machine or with other image content under the same full-split lists), the newest one counts."""
    by_seed: dict[int, tuple[Path, dict]] = {}
    for path, rec in sorted(records, key=lambda pr: (pr[1].get("created", ""), str(pr[0]))):
        seed = rec["seed"]
        if seed in by_seed:
            notes.append(f"{rec['checkpoint']['name']} seed {seed}: more than one record; the newest ({path.name}) is used")
        by_seed[seed] = (path, rec)
    return [by_seed[s] for s in sorted(by_seed)]


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
        by_row: dict[tuple[str, str], list[tuple[Path, dict]]] = {}
        for path, rec in group:  # one row per experiment (and display name): seeds of one experiment only
            by_row.setdefault((rec["checkpoint"]["name"], rec["experiment"]["key"]), []).append((path, rec))
        all_metrics: set[str] = set()
        for _, rec in group:
            all_metrics |= set(rec["metrics"])
        pub_rows = [] if "+" in pid else _published_rows(published, pid)
        for r in pub_rows:
            all_metrics |= set(r.cells)
        columns = order_metrics([m for m in all_metrics if not is_companion(m, all_metrics)], preferred)
        rows: list[Row] = []
        for (name, key), members in by_row.items():
            members = _dedupe_seeds(members, notes)
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


# --------------------------------------------------------------------------------------------------- rendering


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


def _header(metric: str, hib: dict[str, bool]) -> str:
    return f"{metric} {'↑' if hib.get(metric, True) else '↓'}"


def _sources_index(tables: list[Table]) -> dict[str, int]:
    idx: dict[str, int] = {}
    for t in tables:
        for r in t.published:
            for s in r.sources:
                idx.setdefault(s, len(idx) + 1)
    return idx


SPREAD_LEGEND = ("cells: mean ± std over seeds when a checkpoint has 2 or more records; with one record, ± is the "
                 "task's own spread (its `<metric>_std`, e.g. over the low-shot split draws); n = records (seeds)")


PARTIAL_TITLE = "Partial or generated data -- not comparable with the published rows or the rows above"


def _split_rows(t: Table) -> tuple[list[Row], list[Row]]:
    """(main rows: complete measured + published, partial-data rows)."""
    return [r for r in t.rows if r.kind == "published" or r.complete], t.partial


def _columns(t: Table) -> tuple[bool, bool]:
    """(show the data column, show the experiment column)."""
    per_ck: dict[tuple, set] = {}
    for r in t.measured:
        per_ck.setdefault((r.name, r.sha256), set()).add(r.experiment)
    return t.mixed_data(), any(len(v) > 1 for v in per_ck.values())


def _published_mark(r: Row) -> str:
    return DAGGER + (UNVERIFIED if r.unverified else "")


def _md_table(t: Table, rows: list[Row], src_idx: dict[str, int], *, complete: bool, with_note: bool) -> list[str]:
    mixed, show_exp = _columns(t)
    head = ["kind", "checkpoint", "sha256"] + (["experiment"] if show_exp else []) + (["data"] if mixed else []) + ["n"]
    head += [_header(m, t.higher_is_better) for m in t.metrics] + (["data (vs official)"] if with_note else [])
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
            line = [f"*published*{_published_mark(r)}", f"*{_md_escape(r.label)}* {refs}", DASH]
            line += [DASH] * (show_exp + mixed) + [DASH]
            line += [f"*{fmt_cell(r.cells[m])}*" if m in r.cells else DASH for m in t.metrics] + ([DASH] if with_note else [])
        out.append("| " + " | ".join(line) + " |")
    return out


def render_markdown(tables: list[Table], *, source_dir: str | None = None, n_records: int | None = None,
                    plots: list[Path] | None = None) -> str:
    src_idx = _sources_index(tables)
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
        main, partial = _split_rows(t)
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
    mixed, show_exp = _columns(t)
    out = ["<table><tr><th>kind</th><th>checkpoint</th><th>sha256</th>" + ("<th>experiment</th>" if show_exp else "")
           + ("<th>data</th>" if mixed else "") + "<th>n</th>"
           + "".join(f"<th>{e(_header(m, t.higher_is_better))}</th>" for m in t.metrics)
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
                       f"<td>published{_published_mark(r)}</td><td>{e(r.label)} {refs}</td>"
                       f"<td>{DASH}</td>" + f"<td>{DASH}</td>" * (show_exp + mixed) + f"<td>{DASH}</td>"
                       + "".join(f"<td class='num'>{e(fmt_cell(r.cells[m])) if m in r.cells else DASH}</td>"
                                 for m in t.metrics) + (f"<td>{DASH}</td>" if with_note else "") + "</tr>")
    out.append("</table>")
    return out


def render_html(tables: list[Table], *, source_dir: str | None = None, n_records: int | None = None,
                plots: list[Path] | None = None) -> str:
    e = html.escape
    src_idx = _sources_index(tables)
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
        main, partial = _split_rows(t)
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


# --------------------------------------------------------------------------------------------------- entry point


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
        from mopro_bench.plots_leaderboard import write_plots

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
