"""Query a results tree: load every record under a directory (validated; junk ``*.json`` skipped with a reason),
filter by task, group records into experiments and seeds.

Readers (``leaderboard``, ``compare``) go through here; nothing else walks a results directory.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mopro_bench.errors import BenchError
from mopro_bench.results.schema import validate_record

RECORD_NAME = re.compile(r"-seed-?\d+\.json$")


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


def iter_record_files(results_dir: str | os.PathLike) -> list[Path]:
    root = Path(results_dir)
    if not root.is_dir():
        raise BenchError(f"results directory {root} does not exist", "run `mopro-bench eval` first or pass --results-dir")
    return sorted(p for p in root.rglob("*.json") if not p.name.startswith(".") and p.is_file())


def group_experiments(records: list[tuple[Path, dict[str, Any]]]) -> dict[tuple[str, str], list[tuple[Path, dict]]]:
    """``{(checkpoint display name, experiment.key): [(path, record), ...]}``: the seeds of one experiment, never
    records of different experiments (in input order)."""
    groups: dict[tuple[str, str], list[tuple[Path, dict]]] = {}
    for path, rec in records:
        groups.setdefault((rec["checkpoint"]["name"], rec["experiment"]["key"]), []).append((path, rec))
    return groups


def dedupe_seeds(records: list[tuple[Path, dict]], notes: list[str]) -> list[tuple[Path, dict]]:
    """One record per seed of one experiment: when a seed was evaluated twice (a copy of the file, a re-run on another
    machine or with other image content under the same full-split lists), the newest one counts."""
    by_seed: dict[int, tuple[Path, dict]] = {}
    for path, rec in sorted(records, key=lambda pr: (pr[1].get("created", ""), str(pr[0]))):
        seed = rec["seed"]
        if seed in by_seed:
            notes.append(f"{rec['checkpoint']['name']} seed {seed}: more than one record; the newest ({path.name}) is used")
        by_seed[seed] = (path, rec)
    return [by_seed[s] for s in sorted(by_seed)]
