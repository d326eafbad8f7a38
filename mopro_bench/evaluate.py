"""Run one task@protocol on one checkpoint and write the result record (the engine behind ``eval`` and ``demo``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mopro_bench.checkpoints import LoadedCheckpoint, load_checkpoint
from mopro_bench.data import is_synthetic
from mopro_bench.errors import BenchError
from mopro_bench.io import atomic_write_json
from mopro_bench.registry import RunContext, get_task
from mopro_bench.results import build_record, result_path, write_record
from mopro_bench.runtime import rank, seed_everything

DEFAULT_RESULTS_DIR = Path("leaderboards/results")


@dataclass
class EvalOutcome:
    record: dict[str, Any]
    path: Path


def evaluate(
    ckpt: str | LoadedCheckpoint,
    task_spec: str,
    data_root: str | Path,
    *,
    overrides: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    workers: int = 0,
    cache_dir: str | Path = ".cache/mopro-bench",
    results_dir: str | Path = DEFAULT_RESULTS_DIR,
    out: str | Path | None = None,
    options: dict[str, Any] | None = None,
    name: str | None = None,
    batch_size: int | None = None,
    work_dir: str | Path | None = None,
    progress: bool = True,
    trust: bool = False,
    select: str | None = None,
    source: dict[str, Any] | None = None,
) -> EvalOutcome:
    resolved = get_task(task_spec, overrides)
    task, protocol = resolved.task, resolved.protocol
    options = {k: v for k, v in (options or {}).items() if v is not None and v is not False}
    unused = sorted(set(options) - set(task.options))
    if unused:
        flags = ", ".join("--" + u.replace("_", "-") for u in unused)
        accepted = ", ".join("--" + o.replace("_", "-") for o in task.options) or "none"
        raise BenchError(f"{flags} does not apply to task {task.name}", f"drop it (options {task.name} takes: {accepted})")
    data_root = Path(data_root)
    if not data_root.exists():
        raise BenchError(f"data root {data_root} does not exist",
                         f"pass the {task.data_kind} root with --data (`mopro-bench data check {task.data_kind} ROOT`)")
    t0 = time.time()
    ck = ckpt if isinstance(ckpt, LoadedCheckpoint) else load_checkpoint(ckpt, trust=trust, name=name, seed=seed, select=select)
    if name:
        ck.name = name
    t_load = time.time() - t0
    path = result_path(Path(results_dir), resolved.protocol_id, ck.name, ck.sha256, seed)
    ctx = RunContext(
        device=torch.device(device) if isinstance(device, str) else device,
        seed=seed, workers=workers, cache_dir=Path(cache_dir), artifact_prefix=path.with_suffix(""),
        work_dir=Path(work_dir) if work_dir else path.with_suffix("").parent / (path.stem + ".work"),
        options=options, batch_size=batch_size, progress=progress,
    )
    seed_everything(seed)
    t1 = time.time()
    output = task.run(ck, data_root, protocol, ctx)
    t_run = time.time() - t1
    if not output.metrics:
        raise RuntimeError(f"task {task.name} returned no metrics")
    record = build_record(
        task=task.name,
        protocol={"id": resolved.protocol_id, "name": protocol.name, "version": protocol.version,
                  "description": protocol.description, "params": protocol.params(), "overrides": resolved.overrides},
        checkpoint={**ck.record(), **({"source": source} if source else {})},  # source: where a zoo:/URL spec came from
        seed=seed,
        data={"root": str(data_root.resolve()), "kind": task.data_kind, **output.data,
              **({"synthetic": True} if is_synthetic(data_root) else {})},  # made by `mopro-bench data synth`
        metrics=output.metrics,
        details={**output.details, "options": {k: str(v) for k, v in options.items()}},
        selection=output.selection,
        timings={"load_checkpoint_s": t_load, "run_s": t_run, "total_s": time.time() - t0},
        artifacts=[str(a) for a in output.artifacts],
        metric_units=output.metric_units,
        metric_definitions=output.metric_definitions,
    )
    if rank() == 0:  # under torchrun every process runs the task; one writes the record
        write_record(record, path)
        if out:
            atomic_write_json(out, record)
    return EvalOutcome(record, path)
