"""`mopro-bench inspect`: show a checkpoint's format, architecture, heads, sha256 and coverage"""

from __future__ import annotations

from mopro_bench.commands import not_ready

HELP = "show a checkpoint's format, architecture, heads, sha256 and coverage"


def add_parser(sub, parents):
    p = sub.add_parser("inspect", parents=parents, help=HELP, description=HELP)
    p.set_defaults(func=not_ready("inspect", "issue 3"))
    return p
