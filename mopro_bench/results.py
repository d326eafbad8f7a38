"""Result records: one JSON file per experiment and seed, validated on write and on read.

The leaderboard is built from a directory of these files; nothing else is state. See ``RESULT_SCHEMA`` for the
fields. Files are written atomically (temporary file + rename), so concurrent writers and crashes never leave a
partial record.

Identity (schema v2). Everything that changes the number is part of a record's identity: the task, the protocol
(id, version, constants), the checkpoint's bytes (SHA-256) and selected network, the content of files given as
options (``--head``, ``--splits``, ``--subset-file``: SHA-256 of their bytes, never their path), the other options
that change the number (``--solver``, ...), and the data *content* (list hashes of every split the task uses and
the content fingerprints of the images it read). Locations (data root, file paths, output options) never count.

* ``experiment.key`` hashes all of that except the seed and what is drawn from the seed (low-shot samples, seeded
  subsets): records that share it are seeds of one experiment, and only those are pooled by the leaderboard and
  ``compare``.
* ``experiment.run_key`` adds the seed and every content fingerprint; the file name carries it, so two different
  experiments never share a file, and a re-run of exactly the same experiment replaces its own record.

Both keys are recomputed when a record is read; a record whose stored keys do not match its contents (edited by
hand) is refused, as is one whose metric disagrees with its own per-run values or that holds NaN/Infinity.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
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

SCHEMA_VERSION = 2
# eval options whose *file content* is part of a record's identity (recorded as {path, sha256}; the path never counts)
FILE_OPTIONS = ("head", "splits", "subset_file")
# eval options that do not change the number (where things are written, how the run is launched): never identity
NON_IDENTITY_OPTIONS = ("save_splits", "save_head", "resume", "dist_url", "machine_rank")
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


def identity(record: dict[str, Any], *, with_seed: bool) -> dict[str, Any]:
    """What makes a record's number what it is (see the module doc); locations never count."""
    ck = record.get("checkpoint") or {}
    exp = record.get("experiment") or {}
    data = record.get("data") or {}
    proto = record.get("protocol") or {}
    fps = data.get("fingerprints") or {}
    found = {c.get("found") for c in (data.get("counts") or {}).values() if isinstance(c, dict)} - {None}
    ident: dict[str, Any] = {
        "task": record.get("task"),
        "protocol": {"id": proto.get("id"), "version": str(proto.get("version", "")), "params": proto.get("params", {})},
        # a checkpoint without a file (``random:ARCH``, seeded) is identified by its spec
        "checkpoint": {"sha256": ck.get("sha256"), "select": ck.get("select"),
                       **({} if ck.get("sha256") else {"spec": ck.get("path"), "arch": ck.get("arch")})},
        "options": exp.get("options") or {},
        "files": {k: (v or {}).get("sha256") for k, v in (exp.get("files") or {}).items()},
        "data": {
            "kind": data.get("kind"),
            "lists": data.get("lists") or {},
            # content of whole splits read (a list as long as a split): the same for every seed. Where no split could
            # be counted (a task without known splits) every list read counts: seeds may then split into rows, but
            # two contents are never pooled
            "fingerprints": {k: v.get("sha256") for k, v in fps.items()
                             if isinstance(v, dict) and (not found or v.get("n") in found)},
        },
    }
    if with_seed:
        ident["seed"] = record.get("seed")
        # and everything drawn from the seed: the content of every list read, the data fields that are hashes
        ident["data"]["fingerprints"] = {k: v.get("sha256") for k, v in fps.items() if isinstance(v, dict)}
        ident["data"]["hashes"] = {k: v for k, v in data.items() if k.lower().endswith("sha256")}
    return ident


def run_data_key(record: dict[str, Any]) -> str:
    """Hash of the data one run used, down to what was drawn from the seed (split hashes, content of every list
    read) and the ``--splits`` file: equal for two records whose per-run numbers may be paired."""
    from mopro_bench.io import sha256_json

    ident = identity(record, with_seed=True)
    return sha256_json([ident["data"], ident["files"].get("splits")])[:16]


def experiment_keys(record: dict[str, Any]) -> dict[str, str]:
    """``{"key": <experiment, all seeds>, "run_key": <this experiment and seed>}`` computed from the record."""
    from mopro_bench.io import sha256_json

    return {"key": sha256_json(identity(record, with_seed=False))[:16],
            "run_key": sha256_json(identity(record, with_seed=True))[:16]}


def pairing_key(record: dict[str, Any]) -> str:
    """The experiment key without the checkpoint (its bytes, network and head file) and the low-shot ``--splits``
    file: two checkpoints' records that share it were measured the same way on the same data, so ``compare`` may
    compare them (paired where the seed's draws are the same too, see :func:`run_data_key`)."""
    ident = identity(record, with_seed=False)
    ident.pop("checkpoint")
    ident["files"].pop("head", None)
    ident["files"].pop("splits", None)
    from mopro_bench.io import sha256_json

    return sha256_json(ident)[:16]


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


def result_path(results_dir: Path, protocol_id: str, ckpt_name: str, sha256: str | None, seed: int,
                run_key: str | None = None) -> Path:
    """``<results_dir>/<task@protocol>/<ckpt-name>-<sha8>-<run_key12>-seed<N>.json`` (without ``run_key``: the
    schema-v1 name, kept for callers that only need a location)."""
    short = (sha256 or "nohash")[:8]
    key = f"-{run_key[:12]}" if run_key else ""
    return Path(results_dir) / slug(protocol_id) / f"{slug(ckpt_name)}-{short}{key}-seed{seed}.json"


def record_path(results_dir: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Where ``record`` lives in a results directory (named by its run key: one file per experiment and seed)."""
    ck = record["checkpoint"]
    return result_path(Path(results_dir), record["protocol"]["id"], ck["name"], ck.get("sha256"), record["seed"],
                       record["experiment"]["run_key"])


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
    experiment: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A validated record. ``experiment`` holds the identity options (``{"options": {...}, "files": {name: {path,
    sha256}}}``); the keys are computed here. ``data["complete"]`` defaults to False (not shown to be the official
    split sizes). A metric that is not a finite number is refused; NaN/Infinity elsewhere (details) becomes null,
    so the file is standard JSON."""
    for k, v in metrics.items():
        if not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            raise BenchError(f"task {task} produced {k} = {v!r}, not a finite number",
                             "the model or data is broken (check `mopro-bench inspect` for non-finite weights); "
                             "no record is written")
    exp = {"options": {k: str(v) for k, v in ((experiment or {}).get("options") or {}).items()},
           "files": {k: {"path": str(v["path"]), "sha256": str(v["sha256"])}
                     for k, v in ((experiment or {}).get("files") or {}).items()},
           "key": "", "run_key": ""}
    record = {
        "schema_version": SCHEMA_VERSION,
        "task": task,
        "protocol": protocol,
        "checkpoint": checkpoint,
        "seed": int(seed),
        "experiment": exp,
        "data": {"complete": False, **data},
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
    # round-trip through JSON so what we validate (and hash) is exactly what lands on disk
    record = _finite_or_null(json.loads(json.dumps(record, default=_default)))
    record["experiment"].update(experiment_keys(record))
    return validate_record(record)


def _finite_or_null(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite_or_null(v) for v in obj]
    return obj


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
    except IsADirectoryError:
        raise BenchError(f"result file {path} is a directory", "pass a result file (*.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BenchError(f"{path}: not valid JSON ({e})", "remove the file or regenerate it with `mopro-bench eval`") from None
    except OSError as e:
        raise BenchError(f"result file {path} cannot be read ({e.strerror or e})", "check the path and its permissions") from None
    return validate_record(record, str(path))


def iter_record_files(results_dir: str | os.PathLike) -> list[Path]:
    root = Path(results_dir)
    if not root.is_dir():
        raise BenchError(f"results directory {root} does not exist", "run `mopro-bench eval` first or pass --results-dir")
    return sorted(p for p in root.rglob("*.json") if not p.name.startswith(".") and p.is_file())
