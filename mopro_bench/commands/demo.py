"""`mopro-bench demo`: generate data, pretrain a tiny MoPro, evaluate it and a random baseline, print the leaderboard"""

from __future__ import annotations

from mopro_bench.commands import not_ready

HELP = "generate data, pretrain a tiny MoPro, evaluate it and a random baseline, print the leaderboard"


def add_parser(sub, parents):
    p = sub.add_parser("demo", parents=parents, help=HELP, description=HELP)
    p.set_defaults(func=not_ready("demo", "issue 10"))
    return p
