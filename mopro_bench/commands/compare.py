"""`mopro-bench compare`: compare two checkpoints or result files task by task, with uncertainty."""

from __future__ import annotations

import sys

from mopro_bench.io import atomic_write_text, check_writable_file
from mopro_bench.metrics.stats import DEFAULT_ALPHA, DEFAULT_N_BOOT
from mopro_bench.results import DEFAULT_RESULTS_DIR

HELP = "compare two checkpoints or result files task by task, with uncertainty"
DESCRIPTION = """Compare A and B on every task@protocol both were evaluated on. A and B are result files (*.json), or
checkpoints looked up in RESULTS_DIR by display name, SHA-256 prefix (6+ hex digits) or checkpoint path. For each
metric: B-A, its interval and a two-sided test -- a paired bootstrap over test images where the records carry
per-image data, a paired t-test over runs (e.g. the low-shot split draws) or seeds where they can be paired, Welch's
t-test otherwise -- and whether the difference is significant at --alpha. Bootstrap resamples are seeded with
--seed, so the output is reproducible. Only records of one experiment (same checkpoint bytes, head file, options and
data content; `experiment.key`) are pooled as seeds, and A and B are paired only on the same data and options: a
checkpoint evaluated on two datasets gives one comparison per dataset."""


def add_parser(sub, parents):
    p = sub.add_parser("compare", parents=parents, help=HELP, description=DESCRIPTION)
    p.add_argument("a", metavar="A", help="result file, or checkpoint name / SHA-256 prefix / path")
    p.add_argument("b", metavar="B", help="result file, or checkpoint name / SHA-256 prefix / path")
    p.add_argument("--results-dir", default=str(DEFAULT_RESULTS_DIR), help="where to look checkpoints up (default: %(default)s)")
    p.add_argument("--task", help="only this task (all its protocols) or this exact task@protocol")
    p.add_argument("--metric", action="append", help="only this metric (repeatable)")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="significance level, two-sided (default: %(default)s)")
    p.add_argument("--bootstrap", type=int, default=DEFAULT_N_BOOT, help="bootstrap resamples (default: %(default)s)")
    p.add_argument("--correction", choices=["none", "holm"], default="none",
                   help="multiple-comparison correction over all rows (default: none)")
    p.add_argument("--format", choices=["text", "md", "csv", "json"], default="text", help="output format (default: text)")
    p.add_argument("--out", help="also write the output to this file")
    p.add_argument("--skip-invalid", action="store_true", help="ignore stale/invalid records in --results-dir")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from mopro_bench.compare import RENDERERS, compare, resolve_side

    if args.out:  # before any work: an unwritable --out is one line, exit 2
        check_writable_file(args.out, "--out")
    cache: dict = {}
    a = resolve_side(args.a, args.results_dir, task=args.task, skip_invalid=args.skip_invalid, _cache=cache)
    b = resolve_side(args.b, args.results_dir, task=args.task, skip_invalid=args.skip_invalid, _cache=cache)
    report = compare(a, b, alpha=args.alpha, n_boot=args.bootstrap, seed=args.seed, correction=args.correction,
                     metrics=args.metric)
    text = RENDERERS[args.format](report)
    sys.stdout.write(text)
    if args.out:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
