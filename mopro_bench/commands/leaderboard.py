"""`mopro-bench leaderboard`: render tables and plots from a directory of result records"""

from __future__ import annotations

from mopro_bench.commands import not_ready

HELP = "render tables and plots from a directory of result records"


def add_parser(sub, parents):
    p = sub.add_parser("leaderboard", parents=parents, help=HELP, description=HELP)
    p.set_defaults(func=not_ready("leaderboard", "issue 10"))
    return p
