"""Run one task@protocol on one checkpoint and write the result record (the engine behind ``eval`` and ``demo``).

Before any work: every output location is checked (results directory, ``--out``, ``--work-dir``, cache, the
``--save-*`` files) and files given as options are hashed. After the run the record gets its identity (see
:mod:`mopro_bench.results`): the content fingerprints of the images the task read (``ctx.data_fingerprints``), the
list hashes and counts of every split the task uses compared with the official split sizes (``data.complete``),
and the option files' SHA-256. A record that cannot be written is kept in a fallback file, and the error says where.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mopro_bench.checkpoints import LoadedCheckpoint, load_checkpoint
from mopro_bench.data import get_layout, is_synthetic
from mopro_bench.errors import BenchError
from mopro_bench.io import check_dir_creatable, check_writable_dir, check_writable_file, sha256_file
from mopro_bench.registry import RunContext, Task, check_family, get_task
from mopro_bench.results import (
    DEFAULT_RESULTS_DIR,
    build_record,
    identity_options,
    option_files,
    pre_run_key,
    pre_run_stem,
    record_path,
    write_outputs,
)
from mopro_bench.runtime import check_seed, rank, seed_everything

# eval options naming files the run *writes* (checked before the run)
OUTPUT_OPTIONS = ("save_splits", "save_head")

@dataclass
class EvalOutcome:
    record: dict[str, Any]
    path: Path


# --------------------------------------------------------------------------------------------------- data: counts


def _hash_lines(lines) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def _split_listing(kind: str, root: Path, split: str, data: dict[str, Any]) -> tuple[int, int | None, str]:
    """``(found, official, list_hash)`` for one split of a dataset: the names (and labels) its layout lists, in order."""
    listing = get_layout(kind).listing(root, split, data)
    return listing.found, listing.official, _hash_lines(listing.lines)


def data_completeness(task: Task, kind: str, root: Path, params: dict[str, Any], data: dict[str, Any],
                      synthetic: bool) -> dict[str, Any]:
    """``{"complete", "counts": {split: {found, official}}, "lists": {split: sha256}, "complete_note"?}`` for the
    splits ``task`` reads under ``root`` (``task.splits``; a protocol's ``train_split``/``test_split`` win). Complete =
    every split has exactly its official number of images and the data is not generated (``data synth``)."""
    task_name = task.name
    splits = tuple(task.splits)
    if "train_split" in params and "test_split" in params:
        splits = (str(params["train_split"]), str(params["test_split"]))
    out: dict[str, Any] = {"counts": {}, "lists": {}}
    notes: list[str] = []
    if not splits:
        out.update(complete=False, complete_note=f"no official split sizes are known for task {task_name}")
        return out
    for split in splits:
        try:
            found, official, digest = _split_listing(kind, root, split, data)
        except (BenchError, OSError, KeyError, ValueError) as e:
            out["counts"][split] = {"found": None, "official": None}
            notes.append(f"{split}: could not be counted ({getattr(e, 'message', None) or e})")
            continue
        out["counts"][split] = {"found": found, "official": official}
        out["lists"][split] = digest
        if official is None:
            notes.append(f"{split}: no official size known")
        elif found != official:
            notes.append(f"{split}: {found} of the official {official} images")
    if synthetic:
        notes.insert(0, "generated data (`mopro-bench data synth`)")
    out["complete"] = not notes
    if notes:
        out["complete_note"] = "; ".join(notes)
    return out


# --------------------------------------------------------------------------------------------------- outputs


def check_outputs(results_dir: Path, out: str | Path | None, work_dir: str | Path | None, cache_dir: Path,
                  options: dict[str, Any]) -> None:
    """Every place the run will write, checked before the work starts (``BenchError``, one line, exit 2)."""
    check_writable_dir(results_dir, "results directory")
    check_writable_dir(cache_dir, "cache directory")
    if out:
        check_writable_file(out, "--out")
    if work_dir:
        check_dir_creatable(work_dir, "--work-dir")
    for name in OUTPUT_OPTIONS:
        if options.get(name):
            check_writable_file(options[name], "--" + name.replace("_", "-"))


# --------------------------------------------------------------------------------------------------- artifacts


def _retarget(obj: Any, old: str, new: str) -> Any:
    if isinstance(obj, str):
        return obj.replace(old, new)
    if isinstance(obj, dict):
        return {k: _retarget(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_retarget(v, old, new) for v in obj]
    return obj


def _move_artifacts(artifacts: list[str], old_prefix: Path, new_prefix: Path) -> list[str]:
    """Artifacts were written under the pre-run name; give them the record's final stem."""
    old, new = str(old_prefix), str(new_prefix)
    moved = []
    for a in artifacts:
        if old != new and a.startswith(old) and Path(a).exists():
            target = new + a[len(old):]
            try:
                os.replace(a, target)
                a = target
            except OSError as e:
                print(f"warning: could not rename artifact {a} to {target} ({e})", file=sys.stderr)
        moved.append(a)
    return moved


# --------------------------------------------------------------------------------------------------- evaluate


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
    check_seed(seed)  # as the CLI does: every generator it seeds must take it (numpy's legacy seed: 0..2**32-1)
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
    results_dir = Path(results_dir)
    check_outputs(results_dir, out, work_dir, Path(cache_dir), options)
    files = option_files(options)
    exp_options = identity_options(options)
    synthetic = is_synthetic(data_root)
    params = protocol.params()
    t0 = time.time()
    ck = ckpt if isinstance(ckpt, LoadedCheckpoint) else load_checkpoint(ckpt, trust=trust, name=name, seed=seed, select=select)
    if name:
        ck.name = name
    check_family(task, protocol, ck)
    t_load = time.time() - t0
    ck_rec = ck.record()
    # pre-run name: everything known before the run (the image content is known only after it); artifacts and the
    # default work dir use it, so an interrupted run resumes in the same place
    pre_key = pre_run_key(task=task.name, protocol_id=resolved.protocol_id, version=protocol.version, params=params,
                          sha256=ck.sha256, select=ck_rec.get("select"), options=exp_options, files=files, seed=seed,
                          data_kind=task.data_kind, data_root=data_root)
    pre_stem = pre_run_stem(results_dir, resolved.protocol_id, ck.name, ck.sha256, pre_key, seed)
    ctx = RunContext(
        device=torch.device(device) if isinstance(device, str) else device,
        seed=seed, workers=workers, cache_dir=Path(cache_dir), artifact_prefix=Path(str(pre_stem) + ".run"),
        work_dir=Path(work_dir) if work_dir else Path(str(pre_stem) + ".work"),
        options=options, batch_size=batch_size, progress=progress,
    )
    seed_everything(seed)
    t1 = time.time()
    output = task.run(ck, data_root, protocol, ctx)
    t_run = time.time() - t1
    if not output.metrics:
        raise RuntimeError(f"task {task.name} returned no metrics")
    for opt, f in files.items():  # an input file that changed during the run leaves a number of unknown origin
        if sha256_file(f["path"]) != f["sha256"]:
            raise BenchError(f"--{opt.replace('_', '-')} {f['path']} changed while the evaluation ran",
                             "keep option files fixed during a run and evaluate again")
    data = {"root": str(data_root.resolve()), "kind": task.data_kind, **output.data,
            **({"synthetic": True} if synthetic else {})}  # made by `mopro-bench data synth`
    data.update(data_completeness(task, task.data_kind, data_root, params, data, synthetic))
    data["fingerprints"] = {k: dict(v) for k, v in sorted(getattr(ctx, "data_fingerprints", {}).items())}
    if not data["complete"]:
        print(f"note: {task.name}: not the complete official dataset ({data.get('complete_note')}); the record is "
              "marked data.complete = false and shown apart from published numbers", file=sys.stderr)
    if source is not None:
        ck_rec["source"] = source
    record = build_record(
        task=task.name,
        protocol={"id": resolved.protocol_id, "name": protocol.name, "version": protocol.version,
                  "description": protocol.description, "families": list(protocol.families), "params": params,
                  "overrides": resolved.overrides},
        checkpoint=ck_rec,
        seed=seed,
        data=data,
        metrics=output.metrics,
        details={**output.details, "options": {k: str(v) for k, v in options.items()}},
        selection=output.selection,
        timings={"load_checkpoint_s": t_load, "run_s": t_run, "total_s": time.time() - t0},
        artifacts=[str(a) for a in output.artifacts],
        metric_units=output.metric_units,
        metric_definitions=output.metric_definitions,
        experiment={"options": exp_options, "files": files},
    )
    path = record_path(results_dir, record)
    if rank() == 0:  # under torchrun every process runs the task; one writes the record
        final_prefix = path.with_suffix("")
        if ctx.artifact_prefix is not None and str(ctx.artifact_prefix) != str(final_prefix):
            record["artifacts"] = _move_artifacts(record["artifacts"], ctx.artifact_prefix, final_prefix)
            for part in ("details", "data"):  # where a task noted an artifact's path (never part of the identity)
                record[part] = _retarget(record[part], str(ctx.artifact_prefix), str(final_prefix))
        write_outputs(record, path, out)
    return EvalOutcome(record, path)
