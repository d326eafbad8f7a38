"""Result records: one JSON file per (checkpoint, task@protocol, seed), validated on write and on read.

The leaderboard is built from a directory of these files; nothing else is state. See ``RESULT_SCHEMA`` for the
fields. Files are written atomically (temporary file + rename), so concurrent writers and crashes never leave a
partial record.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import jsonschema

from mopro_bench import __version__
from mopro_bench.errors import BenchError
from mopro_bench.io import atomic_write_json

SCHEMA_VERSION = 1

_NUM = {"type": "number"}
RESULT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "mopro-bench result record",
    "type": "object",
    "required": [
        "schema_version", "task", "protocol", "checkpoint", "seed", "data", "metrics", "details",
        "selection", "suite", "environment", "timings", "created",
    ],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "task": {"type": "string", "minLength": 1},
        "protocol": {
            "type": "object",
            "required": ["id", "name", "version", "params", "overrides"],
            "properties": {
                "id": {"type": "string"},
                "name": {"type": "string"},
                "version": {"type": "string"},
                "description": {"type": "string"},
                "params": {"type": "object"},
                "overrides": {"type": "object"},
            },
        },
        "checkpoint": {
            "type": "object",
            "required": ["name", "path", "sha256", "format", "arch"],
            "properties": {
                "name": {"type": "string"},
                "path": {"type": "string"},
                "sha256": {"type": ["string", "null"]},
                "format": {"type": "string"},
                "arch": {"type": "string"},
                "width": {"type": "integer"},
                "heads": {"type": "object"},
            },
        },
        "seed": {"type": "integer"},
        "data": {"type": "object"},
        "metrics": {"type": "object", "additionalProperties": _NUM, "minProperties": 1},
        "metric_units": {"type": "object", "additionalProperties": {"type": "string"}},
        "metric_definitions": {"type": "object", "additionalProperties": {"type": "string"}},
        "details": {"type": "object"},
        "selection": {"type": "string"},
        "artifacts": {"type": "array", "items": {"type": "string"}},
        "suite": {
            "type": "object",
            "required": ["version", "git_sha"],
            "properties": {"version": {"type": "string"}, "git_sha": {"type": ["string", "null"]}},
        },
        "environment": {"type": "object", "required": ["python", "torch"]},
        "timings": {"type": "object", "additionalProperties": _NUM},
        "created": {"type": "string"},
    },
}

_VALIDATOR = jsonschema.Draft202012Validator(RESULT_SCHEMA)


def validate_record(record: dict[str, Any], source: str = "record") -> dict[str, Any]:
    """Raise :class:`BenchError` naming the first problem when ``record`` does not match the schema."""
    if not isinstance(record, dict):
        raise BenchError(f"{source}: not a result record (expected a JSON object)", "remove or regenerate the file")
    version = record.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BenchError(
            f"{source}: result schema version {version!r}, this suite reads version {SCHEMA_VERSION}",
            "re-run the evaluation with this version of mopro-bench, or move the old file out of the results directory",
        )
    errors = sorted(_VALIDATOR.iter_errors(record), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise BenchError(f"{source}: invalid result record at {where}: {e.message}", "regenerate it with `mopro-bench eval`")
    return record


def git_sha() -> str | None:
    """The suite's git commit (with ``+dirty`` when the tree has changes), or None outside a checkout."""
    here = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except Exception:
        return None


def environment() -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "cpu_count": os.cpu_count(),
    }
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover
        env["torchvision"] = None
    return env


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@+-]+", "-", text).strip("-") or "x"


def result_path(results_dir: Path, protocol_id: str, ckpt_name: str, sha256: str | None, seed: int) -> Path:
    """``<results_dir>/<task@protocol>/<ckpt-name>-<sha8>-seed<N>.json``."""
    short = (sha256 or "nohash")[:8]
    return Path(results_dir) / slug(protocol_id) / f"{slug(ckpt_name)}-{short}-seed{seed}.json"


def build_record(
    *,
    task: str,
    protocol: dict[str, Any],
    checkpoint: dict[str, Any],
    seed: int,
    data: dict[str, Any],
    metrics: dict[str, float],
    details: dict[str, Any],
    selection: str,
    timings: dict[str, float],
    artifacts: list[str] | None = None,
    metric_units: dict[str, str] | None = None,
    metric_definitions: dict[str, str] | None = None,
) -> dict[str, Any]:
    record = {
        "schema_version": SCHEMA_VERSION,
        "task": task,
        "protocol": protocol,
        "checkpoint": checkpoint,
        "seed": int(seed),
        "data": data,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "metric_units": dict(metric_units or {}),
        "metric_definitions": dict(metric_definitions or {}),
        "details": details,
        "selection": selection,
        "artifacts": list(artifacts or []),
        "suite": {"version": __version__, "git_sha": git_sha()},
        "environment": environment(),
        "timings": {k: float(v) for k, v in timings.items()},
        "created": now_iso(),
    }
    # round-trip through JSON so what we validate is exactly what lands on disk
    record = json.loads(json.dumps(record, default=_default))
    return validate_record(record)


def _default(o: Any) -> Any:
    from mopro_bench.io import _json_default

    return _json_default(o)


def write_record(record: dict[str, Any], path: str | os.PathLike) -> Path:
    validate_record(record, str(path))
    return atomic_write_json(path, record)


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise BenchError(f"result file {path} does not exist", "check the path") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BenchError(f"{path}: not valid JSON ({e})", "remove the file or regenerate it with `mopro-bench eval`") from None
    return validate_record(record, str(path))


def iter_record_files(results_dir: str | os.PathLike) -> list[Path]:
    root = Path(results_dir)
    if not root.is_dir():
        raise BenchError(f"results directory {root} does not exist", "run `mopro-bench eval` first or pass --results-dir")
    return sorted(p for p in root.rglob("*.json") if not p.name.startswith("."))
