"""The result record schema (version 2) and validation: what a trustworthy record is.

``validate_record`` is the one gate every record passes on write (:func:`mopro_bench.results.store.write_record`)
and on read (``read_record``, :func:`mopro_bench.results.query.load_records`): schema, finite numbers, stored
experiment keys equal to the recomputed ones (see :mod:`mopro_bench.results.identity`), metrics that agree with
their own per-run values.
"""

from __future__ import annotations

import math
from typing import Any

import jsonschema

from mopro_bench.errors import BenchError
from mopro_bench.results.identity import experiment_keys

SCHEMA_VERSION = 2
# a metric may differ from the mean of its own per-run values by rounding only (tasks round both to 4 decimals)
PER_RUN_TOLERANCE = 1e-3

_NUM = {"type": "number"}
RESULT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "mopro-bench result record",
    "type": "object",
    "required": [
        "schema_version", "task", "protocol", "checkpoint", "seed", "experiment", "data", "metrics", "details",
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
        "experiment": {
            "type": "object",
            "required": ["key", "run_key", "options", "files"],
            "properties": {
                "key": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                "run_key": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                "options": {"type": "object", "additionalProperties": {"type": "string"}},
                "files": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object", "required": ["path", "sha256"],
                        "properties": {"path": {"type": "string"}, "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
                    },
                },
            },
        },
        "data": {
            "type": "object",
            "required": ["complete"],
            "properties": {
                "complete": {"type": "boolean"},
                "complete_note": {"type": "string"},
                "counts": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object", "required": ["found", "official"],
                        "properties": {"found": {"type": ["integer", "null"]}, "official": {"type": ["integer", "null"]}},
                    },
                },
                "lists": {"type": "object", "additionalProperties": {"type": "string"}},
                # dataset_id -> mopro_bench.fingerprint.fingerprint_files(...): {sha256, n, bytes, method}
                "fingerprints": {
                    "type": "object",
                    "additionalProperties": {"type": "object",
                                             "properties": {"sha256": {"type": "string"}, "n": {"type": "integer"}}},
                },
                "synthetic": {"type": "boolean"},
            },
        },
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
    """Raise :class:`BenchError` naming the file and the field when ``record`` is not a trustworthy result record:
    schema mismatch, NaN/Infinity anywhere, stored experiment keys that do not match the contents, or a metric that
    contradicts its own per-run values."""
    if not isinstance(record, dict):
        raise BenchError(f"{source}: not a result record (expected a JSON object)", "remove or regenerate the file")
    version = record.get("schema_version")
    if version == 1:
        raise BenchError(
            f"{source}: result schema version 1 (written before records had experiment keys: its name could stand for "
            "several experiments and it holds no data fingerprint), this suite reads version 2",
            "re-run that evaluation with this mopro-bench (the new record gets a file of its own), or move the old file "
            "out of the results directory (or pass --skip-invalid to leave it out)",
        )
    if version != SCHEMA_VERSION:
        raise BenchError(
            f"{source}: result schema version {version!r}, this suite reads version {SCHEMA_VERSION}",
            "re-run the evaluation with this version of mopro-bench, or move the old file out of the results directory",
        )
    bad = first_nonfinite(record)
    if bad is not None:
        raise BenchError(f"{source}: invalid result record at {bad}: not a finite number (NaN/Infinity)",
                         "regenerate it with `mopro-bench eval` (a metric that is not a number is never a result)")
    errors = sorted(_VALIDATOR.iter_errors(record), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise BenchError(f"{source}: invalid result record at {where}: {e.message}", "regenerate it with `mopro-bench eval`")
    keys = experiment_keys(record)
    for field_name in ("key", "run_key"):
        if record["experiment"][field_name] != keys[field_name]:
            raise BenchError(
                f"{source}: experiment/{field_name} {record['experiment'][field_name]} does not match the record's "
                f"contents ({keys[field_name]}): its checkpoint, data, protocol or options were edited",
                "regenerate it with `mopro-bench eval`; a record is never edited by hand",
            )
    _check_per_run(record, source)
    return record


def first_nonfinite(obj: Any, where: str = "") -> str | None:
    """Path (``metrics/mAP_k1``) of the first NaN/Infinity in a JSON-like object, or None."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (where or "(top level)")
    if isinstance(obj, dict):
        for k, v in obj.items():
            if (hit := first_nonfinite(v, f"{where}/{k}" if where else str(k))) is not None:
                return hit
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            if (hit := first_nonfinite(v, f"{where}/{i}")) is not None:
                return hit
    return None


def _check_per_run(record: dict[str, Any], source: str) -> None:
    """A metric and its own per-run values (``details.per_run[metric]``) must agree: leaderboard and compare read
    one or the other, so a record where they differ would show two numbers."""
    per_run = (record.get("details") or {}).get("per_run")
    if not isinstance(per_run, dict):
        return
    for metric, value in record["metrics"].items():
        runs = per_run.get(metric)
        if not isinstance(runs, list) or not runs or not all(isinstance(v, (int, float)) for v in runs):
            continue
        mean = math.fsum(runs) / len(runs)
        if abs(mean - value) > PER_RUN_TOLERANCE + 1e-9 * abs(value):
            raise BenchError(
                f"{source}: metrics/{metric} = {value:g} contradicts details/per_run/{metric} (mean {mean:g} over "
                f"{len(runs)} runs)", "regenerate it with `mopro-bench eval`; a record is never edited by hand")
