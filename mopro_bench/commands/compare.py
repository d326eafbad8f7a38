"""`mopro-bench compare`: compare two checkpoints or result files task by task, with uncertainty"""

from __future__ import annotations

from mopro_bench.commands import not_ready

HELP = "compare two checkpoints or result files task by task, with uncertainty"


def add_parser(sub, parents):
    p = sub.add_parser("compare", parents=parents, help=HELP, description=HELP)
    p.set_defaults(func=not_ready("compare", "issue 10"))
    return p
