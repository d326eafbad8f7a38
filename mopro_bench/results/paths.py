"""Where records live: the one default results location and the file naming.

``<results_dir>/<task@protocol>/<ckpt-name>-<sha8>-<run_key12>-seed<N>.json``: one file per experiment and seed
(the run key is :func:`mopro_bench.results.identity.experiment_keys`' ``run_key``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

# the one definition of where `eval` writes and `leaderboard` / `compare` read (relative to the working directory)
DEFAULT_RESULTS_DIR = Path("leaderboards/results")


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



def pre_run_stem(results_dir: str | os.PathLike, protocol_id: str, ckpt_name: str, sha256: str | None, pre_key: str,
                 seed: int) -> Path:
    """The name a run's artifacts and work dir get before its record exists (see
    :func:`mopro_bench.results.identity.pre_run_key`); renamed to the record's stem after the run."""
    return Path(results_dir) / slug(protocol_id) / f"{slug(ckpt_name)}-{(sha256 or 'nohash')[:8]}-{pre_key}-seed{seed}"
