"""Record write and read: build a validated record, write it atomically, read it back (refusing what is not a
trustworthy record), and keep a record that cannot be written in a fallback file.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from mopro_bench import __version__
from mopro_bench.errors import BenchError
from mopro_bench.io import atomic_write_json
from mopro_bench.results.identity import experiment_keys
from mopro_bench.results.schema import SCHEMA_VERSION, validate_record


def git_sha() -> str | None:
    """The suite's git commit (with ``+dirty`` when the tree has changes), or None outside a checkout."""
    here = Path(__file__).resolve().parents[2]
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



def save_fallback(record: dict[str, Any], name: str) -> Path | None:
    """Keep a record that could not be written where it was asked for (``$TMPDIR/mopro-bench-unsaved/``)."""
    for folder in (Path(tempfile.gettempdir()) / "mopro-bench-unsaved", Path.home() / ".cache" / "mopro-bench-unsaved"):
        try:
            return atomic_write_json(folder / name, record)
        except OSError:
            continue
    return None


def write_outputs(record: dict[str, Any], path: Path, out: str | Path | None) -> None:
    """Write ``record`` to its place in the results directory (and a copy to ``out``); a record that cannot be
    written is kept in a fallback file and the error says where."""
    try:
        write_record(record, path)
    except OSError as e:
        kept = save_fallback(record, path.name)
        where = f"the record was saved to {kept}" if kept else "it could not be saved anywhere (printed below)"
        if kept is None:
            print(json.dumps(record), file=sys.stderr)
        raise BenchError(f"could not write the result record {path} ({e.strerror or e}); {where}",
                         f"copy it into {path.parent} once that is writable") from None
    if out:
        try:
            atomic_write_json(out, record)
        except OSError as e:
            raise BenchError(f"could not write --out {out} ({e.strerror or e}); the record is in {path}",
                             f"copy {path} where you need it") from None
