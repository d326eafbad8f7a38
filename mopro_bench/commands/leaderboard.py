"""`mopro-bench leaderboard`: render tables and plots from a directory of result records."""

from __future__ import annotations

import sys

from mopro_bench.leaderboard import DEFAULT_OUT_DIR, DEFAULT_PUBLISHED, make_leaderboard
from mopro_bench.results import DEFAULT_RESULTS_DIR

HELP = "render tables and plots from a directory of result records"
DESCRIPTION = """Build one table per task@protocol from the result records in RESULTS_DIR: rows are checkpoints (name +
short SHA-256), columns the task's metrics, cells the mean ± std over seeds (or, for a single record, the task's
own spread such as the low-shot split draws). Published numbers (mopro_bench/resources/published.csv) appear beside the
measured rows, marked `published†` with their source, and only in the table of the exact protocol they were
published under; a protocol whose constants were changed (`task@proto+hash`) or whose definition changed gets a
table of its own. A row is one experiment (`experiment.key`: checkpoint bytes, head file, options, data content),
never records of different experiments pooled as seeds; rows measured on partial or generated data
(`data.complete` false) are listed apart under each table, never beside the published rows. Writes
OUT_DIR/leaderboard.md and leaderboard.csv (and leaderboard.html with --format html), and prints the table in
--format. A stale or invalid record is refused (exit 2) naming the file and the field."""


def add_parser(sub, parents):
    p = sub.add_parser("leaderboard", parents=parents, help=HELP, description=DESCRIPTION)
    p.add_argument("--results-dir", default=str(DEFAULT_RESULTS_DIR), help="directory of result records (default: %(default)s)")
    p.add_argument("--task", help="only this task (all its protocols) or this exact task@protocol")
    p.add_argument("--format", choices=["md", "csv", "html"], default="md", help="what to print (default: md)")
    p.add_argument("--out-dir", default=str(DEFAULT_OUT_DIR), help="where the tables and plots go (default: %(default)s)")
    p.add_argument("--no-write", action="store_true", help="print only; write no files")
    p.add_argument("--plots", action="store_true",
                   help="also draw lowshot.png (curves of every checkpoint) and calibration.png into --out-dir")
    p.add_argument("--published", default=str(DEFAULT_PUBLISHED), help="published numbers CSV (default: %(default)s)")
    p.add_argument("--no-published", action="store_true", help="measured rows only")
    p.add_argument("--all-published", action="store_true",
                   help="also show tables of protocols that have published numbers but no results yet")
    p.add_argument("--skip-invalid", action="store_true",
                   help="leave stale/invalid records out (with a warning) instead of refusing")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    out = make_leaderboard(
        args.results_dir, task=args.task, fmt=args.format, out_dir=None if args.no_write else args.out_dir,
        published=None if args.no_published else args.published, all_published=args.all_published,
        plots=args.plots, skip_invalid=args.skip_invalid,
    )
    sys.stdout.write(out.text if out.text.endswith("\n") else out.text + "\n")
    if out.loaded.skipped:
        print(f"note: {len(out.loaded.skipped)} JSON file(s) that are not result records were ignored", file=sys.stderr)
    for path in out.written:
        print(f"wrote {path}", file=sys.stderr)
    return 0
