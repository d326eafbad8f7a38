"""`mopro-bench eval`: score checkpoints on tasks@protocols and write one result record per (checkpoint, task)."""

from __future__ import annotations

import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mopro_bench.checkpoints import choose_network
from mopro_bench.config import DataRoots, load_user_config, parse_set_args
from mopro_bench.errors import BenchError
from mopro_bench.evaluate import evaluate
from mopro_bench.registry import Option, get_task, option_specs, positive_int, protocol_fields
from mopro_bench.results import DEFAULT_RESULTS_DIR
from mopro_bench.runtime import rank, resolve_device
from mopro_bench.suites import SUITE_HELP, SUITES, expand_tasks, headline

DESCRIPTION = """Score one or more checkpoints on one or more task@protocol and write a result record (JSON, with full
provenance) per pair under RESULTS_DIR/<task@protocol>/ (one file per checkpoint, experiment and seed).
`--task voc_lowshot` runs the task's
default protocol, `--task voc_lowshot@goyal19` a named one (`mopro-bench tasks` lists them); `--task a,b` or a
repeated `--task`/`--ckpt`, or `--suite NAME` (`--list-suites`), runs every (checkpoint, task) pair: each checkpoint is
loaded once, a failed pair is reported and the others still run, and a summary table ends the run (exit 1 if a pair
failed on a bug, 2 if every failure was a usage/data error). Dataset roots come from `--data KIND=PATH` or the config
file ([data] in ./mopro-bench.toml or ~/.config/mopro-bench/config.toml). `--set field=value` changes a protocol
constant (of every task that has it; `--set TASK:field=value` for one task); the result's protocol id then gets a
+hash suffix so it never shares a leaderboard table with the unmodified protocol. Each protocol is defined for
some backbone families (resnet, vit, convnext; `mopro-bench tasks` shows them): a checkpoint of another family is
refused once loaded, before the task runs, naming the task's protocols that accept it (ViTs: e.g. voc_lowshot@mopro-vit,
imagenet_linear@dino, --suite vit-transfer)."""


def task_option_specs() -> dict[str, Option]:
    """Every registered task's declared ``eval`` options (``Task.options``), by name."""
    return option_specs()


def add_parser(sub, parents):
    p = sub.add_parser("eval", parents=parents, help="score checkpoints on tasks@protocols (one pair or a suite)",
                       description=DESCRIPTION)
    p.add_argument("--ckpt", action="append", metavar="CKPT",
                   help="checkpoint file (MoPro, MoCo, PCL, SwAV, DINO, torchvision, timm, detectron2 .pkl, ...), "
                        "zoo:NAME (`mopro-bench zoo` lists them), an https:// URL, or random:ARCH (e.g. random:resnet50); "
                        "repeat for several")
    p.add_argument("--task", action="append", metavar="TASK[@PROTOCOL][,...]",
                   help="task or task@protocol; comma-separated or repeated for several")
    p.add_argument("--suite", action="append", choices=sorted(SUITES), help="a named list of tasks (see --list-suites)")
    p.add_argument("--list-suites", action="store_true", help="print the named task lists and exit")
    p.add_argument("--data", action="append", metavar="[KIND=]PATH",
                   help="dataset root in its official layout: KIND=PATH (voc07, places205, imagenet, imagenet-r, "
                        "imagenet-a, coco, webvision; repeatable), or a plain PATH when every task reads the same kind; "
                        "wins over the config file")
    p.add_argument("--config", metavar="FILE", help="config file with dataset roots (default: ./mopro-bench.toml, else "
                                                    "$XDG_CONFIG_HOME/mopro-bench/config.toml)")
    p.add_argument("--select", help="network to take from a file that holds several (encoder_q/encoder_k, teacher/student, "
                                    "...); same as --ckpt FILE#NETWORK")
    p.add_argument("--name", action="append",
                   help="display name of the checkpoint on leaderboards (default: the zoo name or the file name); "
                        "one per --ckpt, in the same order")
    p.add_argument("--set", action="append", metavar="[TASK:]FIELD=VALUE",
                   help="override a protocol constant (repeatable); applies to every task whose protocol has FIELD, "
                        "or only to TASK")
    p.add_argument("--results-dir", default=str(DEFAULT_RESULTS_DIR), help="where result records go (default: %(default)s)")
    p.add_argument("--out", help="also write the result record to this file (one checkpoint and one task only)")
    p.add_argument("--batch-size", type=positive_int, help="feature-extraction batch size (not a protocol constant)")
    p.add_argument("--work-dir", help="directory for a long run's own checkpoints (finetuning, detection; one pair only)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a checkpoint that needs arbitrary pickled code (only for files you trust)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = p.add_argument_group("task options (each task accepts some of these)")
    for option in task_option_specs().values():  # declared by the tasks themselves (Task.options)
        option.add_to(g)
    p.set_defaults(func=run)
    return p


@dataclass
class ResolvedSpec:
    """What ``eval`` needs from a ``--ckpt`` value (see ``mopro_bench.hub.resolve_checkpoint``)."""

    path: str
    name: str | None = None
    select: str | None = None
    source: dict[str, Any] | None = None


def resolve_ckpt(spec: str, *, cache_dir, progress: bool) -> ResolvedSpec:
    """``zoo:NAME`` / URL -> a local file (downloaded once, verified) with its display name and provenance; a local
    path or ``random:ARCH`` unchanged."""
    try:
        from mopro_bench.hub import resolve_checkpoint
    except ImportError:
        if spec.startswith(("zoo:", "http://", "https://")):
            raise BenchError(f"--ckpt {spec}: this installation has no checkpoint zoo (mopro_bench.hub)",
                             "download the file yourself and pass its path") from None
        return ResolvedSpec(spec)
    r = resolve_checkpoint(spec, cache_dir=cache_dir, progress=progress)
    return ResolvedSpec(str(r.path), r.name, r.select, r.source)


def scoped_sets(items: list[str] | None) -> list[tuple[str | None, str]]:
    """``["voc_lowshot:ks=[1]", "resize=36"]`` -> ``[("voc_lowshot", "ks=[1]"), (None, "resize=36")]``, each checked to
    be FIELD=VALUE."""
    out: list[tuple[str | None, str]] = []
    for item in items or []:
        head, sep, rest = item.partition(":")
        scoped = (head.strip(), rest) if sep and "=" not in head else (None, item)
        parse_set_args([scoped[1]])
        out.append(scoped)
    return out


def split_overrides(items: list[str] | None, resolved: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``--set`` values -> per task spec. ``TASK:field=v`` goes to that task (every protocol of it in the run);
    ``field=v`` to every task whose protocol has ``field``; a field no task of the run has is an error."""
    out: dict[str, dict[str, Any]] = {spec: {} for spec in resolved}
    for task_name, item in scoped_sets(items):
        (key, value), = parse_set_args([item]).items()
        field = key.split(".")[0]
        if task_name is not None:
            targets = [s for s, r in resolved.items() if r.task.name == task_name or s == task_name]
            if not targets:
                raise BenchError(f"--set {task_name}:{item}: task {task_name} is not part of this run",
                                 f"use one of: {', '.join(sorted({r.task.name for r in resolved.values()}))}")
        else:
            targets = [s for s, r in resolved.items() if field in protocol_fields(r.protocol)]
            if not targets:
                if len(resolved) == 1:  # let the protocol name the known fields, as before
                    targets = list(resolved)
                else:
                    raise BenchError(f"unknown setting {key!r}: no task of this run has it",
                                     "check the name with `mopro-bench tasks --json`")
        for s in targets:
            out[s][key] = value
    return out


def _options(args) -> dict[str, Any]:
    opts = {name: getattr(args, name, None) for name in task_option_specs()}
    return {k: v for k, v in opts.items() if v is not None and v is not False}


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def list_suites() -> int:
    for name, tasks in SUITES.items():
        print(f"{name:<16} {SUITE_HELP.get(name, '')}")
        print(f"{'':<16} {', '.join(tasks)}")
    print("\nRun one with `mopro-bench eval --ckpt CKPT --suite NAME --data KIND=PATH ...`.")
    return 0


def run(args) -> int:
    if args.list_suites:
        return list_suites()
    scoped_sets(args.set)  # a malformed --set is reported first, whatever else is wrong
    ckpts = args.ckpt or []
    if not ckpts:
        raise BenchError("eval needs a checkpoint", "pass --ckpt FILE (or zoo:NAME, a URL, random:ARCH)")
    specs = expand_tasks(args.task, args.suite)
    if not specs:
        raise BenchError("eval needs a task", "pass --task TASK[@PROTOCOL] or --suite NAME (see `mopro-bench tasks`)")
    names = args.name or []
    if names and len(names) != len(ckpts):
        raise BenchError(f"{len(names)} --name for {len(ckpts)} --ckpt", "give one --name per --ckpt, in the same order")
    if len(ckpts) == 1 and len(specs) == 1:
        return run_one(args, ckpts[0], specs[0], names[0] if names else None)
    return run_many(args, ckpts, specs, names)


def run_one(args, ckpt: str, spec: str, name: str | None) -> int:
    """One checkpoint, one task: errors end the command (exit 2 / traceback), the output is the record's metrics."""
    resolved = get_task(spec)
    roots = DataRoots.from_args(args.data, load_user_config(args.config))
    data_root = roots.root(resolved.task.data_kind, resolved.task.name)
    overrides = split_overrides(args.set, {spec: resolved})[spec]
    rc = resolve_ckpt(ckpt, cache_dir=args.cache_dir, progress=not args.no_progress)
    select, shown = choose_network(args.select, ckpt, rc.select, rc.name)
    outcome = evaluate(
        rc.path, spec, data_root, overrides=overrides, device=resolve_device(args.device),
        seed=args.seed, workers=args.workers, cache_dir=args.cache_dir, results_dir=args.results_dir, out=args.out,
        options=_options(args), name=name or shown, batch_size=args.batch_size, work_dir=args.work_dir,
        progress=not args.no_progress, trust=args.trust_checkpoint, select=select, source=rc.source,
    )
    rec = outcome.record
    if rank() != 0:
        return 0
    print(f"{rec['protocol']['id']}  {rec['checkpoint']['name']}  seed {rec['seed']}  ({rec['selection']})")
    for k, v in rec["metrics"].items():
        unit = rec.get("metric_units", {}).get(k, "")
        print(f"  {k:<20} {v:10.3f} {unit}")
    print(f"result: {outcome.path}")
    return 0


@dataclass
class PairResult:
    ckpt: int
    spec: str
    record: dict[str, Any] | None = None
    path: str | None = None
    error: BaseException | None = None
    seconds: float = 0.0


def _default_name(spec: str) -> str:
    if spec.startswith(("random:", "zoo:")) or "://" in spec:
        return spec
    return Path(spec.split("#")[0]).name


def _say(text: str, err: bool = False) -> None:
    if rank() == 0:
        print(text, file=sys.stderr if err else sys.stdout, flush=True)


def user_error(e: BaseException) -> BenchError | None:
    """The BenchError behind ``e`` (also one a DataLoader worker sent back as text), or None for a bug."""
    if isinstance(e, BenchError):
        return e
    from mopro_bench import errors

    unwrap = getattr(errors, "unwrap_error", None)
    return unwrap(e) if unwrap is not None and isinstance(e, Exception) else None


def _error_line(e: BaseException) -> str:
    err = user_error(e)
    return err.line() if err is not None else f"{type(e).__name__}: {e} (a bug: traceback below)"


def run_many(args, ckpts: list[str], specs: list[str], names: list[str]) -> int:
    """Every (checkpoint, task) pair; a failed pair is logged and the others still run; a summary at the end."""
    from mopro_bench.checkpoints import load_checkpoint

    resolved = {s: get_task(s) for s in specs}  # an unknown task or protocol stops the whole run here (exit 2)
    overrides = split_overrides(args.set, resolved)
    for s in resolved:  # a bad --set value is a mistake in the command, not in one pair
        if overrides[s]:
            get_task(s, overrides[s])
    options = _options(args)
    takers = {o: [s for s, r in resolved.items() if o in r.task.options] for o in options}
    declared = task_option_specs()
    for o, ts in takers.items():
        if not ts:
            raise BenchError(f"{_flag(o)} does not apply to any task of this run", "drop it")
        if declared[o].one_task and len(ts) > 1:
            raise BenchError(f"{_flag(o)} would apply to {len(ts)} tasks ({', '.join(ts)})",
                             "run those tasks one at a time with their own file")
        if declared[o].one_checkpoint and len(ckpts) > 1:
            raise BenchError(f"{_flag(o)} belongs to one checkpoint but this run has {len(ckpts)}",
                             "run each checkpoint with its own head file")
    for flag, value in (("--out", args.out), ("--work-dir", args.work_dir)):
        if value:
            raise BenchError(f"{flag} takes one checkpoint and one task, this run has {len(ckpts) * len(specs)} pairs",
                             f"drop {flag} (each record is written under --results-dir; work folders sit next to them)")
    roots = DataRoots.from_args(args.data, load_user_config(args.config))
    roots.check_plain([r.task.data_kind for r in resolved.values()])
    device = resolve_device(args.device)
    progress = not args.no_progress

    results: list[PairResult] = []
    labels: list[str] = []
    total, done = len(ckpts) * len(specs), 0
    for ci, spec_ck in enumerate(ckpts):
        t0 = time.time()
        rc = None
        try:
            rc = resolve_ckpt(spec_ck, cache_dir=args.cache_dir, progress=progress)
            select, shown = choose_network(args.select, spec_ck, rc.select, rc.name)
            name = names[ci] if names else shown
            ck = load_checkpoint(rc.path, trust=args.trust_checkpoint, name=name, seed=args.seed, select=select)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:
            # the name the records would have had: --name, the zoo name, else the file name
            labels.append(names[ci] if names else (rc and rc.name) or _default_name(spec_ck))
            _say(f"[{done + 1}-{done + len(specs)}/{total}] {labels[-1]}: checkpoint FAILED, its {len(specs)} task(s) "
                 f"skipped: {_error_line(e)}", err=True)
            results += [PairResult(ci, s, error=e) for s in specs]
            done += len(specs)
            continue
        labels.append(ck.name)
        _say(f"{ck.name}: loaded {spec_ck} ({ck.format}, {ck.arch}) in {time.time() - t0:.1f} s")
        for spec in specs:
            done += 1
            task = resolved[spec].task
            t1 = time.time()
            res = PairResult(ci, spec)
            try:
                root = roots.root(task.data_kind, task.name)
                outcome = evaluate(
                    ck, spec, root, overrides=overrides[spec], device=device, seed=args.seed, workers=args.workers,
                    cache_dir=args.cache_dir, results_dir=args.results_dir,
                    options={k: v for k, v in options.items() if k in task.options}, name=name,
                    batch_size=args.batch_size, progress=progress, source=rc.source,
                )
                res.record, res.path = outcome.record, str(outcome.path)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as e:
                res.error = e
            res.seconds = time.time() - t1
            results.append(res)
            if res.error is not None:
                _say(f"[{done}/{total}] {ck.name} x {spec}: FAILED: {_error_line(res.error)}", err=True)
            else:
                hl = headline(res.record, tuple(task.metrics))
                shown = f"{hl[0]} {hl[1]:.2f}" if hl else "no metric"
                _say(f"[{done}/{total}] {ck.name} x {res.record['protocol']['id']}: {shown} ({res.seconds:.1f} s) -> {res.path}")
        del ck
    if rank() != 0:
        return 0
    print()
    print(summary_table(results, labels, specs, resolved))
    failed = [r for r in results if r.error is not None]
    if not failed:
        print(f"\n{total} of {total} runs succeeded; records under {args.results_dir}")
        return 0
    print(f"\n{len(failed)} of {total} runs FAILED:", file=sys.stderr)
    for r in failed:
        print(f"  {labels[r.ckpt]} x {r.spec}: {_error_line(r.error)}", file=sys.stderr)
    bugs = [r for r in failed if user_error(r.error) is None]
    for r in bugs:
        print(f"\ntraceback of {labels[r.ckpt]} x {r.spec}:", file=sys.stderr)
        traceback.print_exception(type(r.error), r.error, r.error.__traceback__, file=sys.stderr)
    return 1 if bugs else 2


def summary_table(results: list[PairResult], labels: list[str], specs: list[str], resolved: dict[str, Any]) -> str:
    """Markdown table: one row per checkpoint, one column per task@protocol, each cell the task's headline metric."""
    by_pair = {(r.ckpt, r.spec): r for r in results}
    headers = []
    for s in specs:
        recs = [r.record for r in results if r.spec == s and r.record is not None]
        pid = recs[0]["protocol"]["id"] if recs else s
        metrics = {hl[0] for rec in recs if (hl := headline(rec, tuple(resolved[s].task.metrics)))}
        headers.append(f"{pid} {metrics.pop()}" if len(metrics) == 1 else pid)
    counts: dict[str, int] = {}
    for lab in labels:
        counts[lab] = counts.get(lab, 0) + 1
    rows = []
    for ci, lab in enumerate(labels):
        recs = [r.record for r in results if r.ckpt == ci and r.record is not None]
        if counts[lab] > 1 and recs:  # two checkpoints with one display name: tell them apart by their hash
            lab = f"{lab} [{(recs[0]['checkpoint'].get('sha256') or '')[:8]}]"
        cells = [lab]
        for s in specs:
            r = by_pair.get((ci, s))
            if r is None or r.record is None:
                cells.append("FAILED")
                continue
            hl = headline(r.record, tuple(resolved[s].task.metrics))
            multi = not headers[specs.index(s)].endswith(f" {hl[0]}") if hl else False
            cells.append("-" if hl is None else (f"{hl[0]} {hl[1]:.2f}" if multi else f"{hl[1]:.2f}"))
        rows.append(cells)
    head = ["checkpoint", *headers]
    width = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, width)) + " |"  # noqa: E731
    out = [line(head), "|" + "|".join("-" * (w + 2) for w in width) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)
