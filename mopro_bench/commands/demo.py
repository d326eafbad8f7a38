"""`mopro-bench demo`: generate data, pretrain a tiny MoPro, evaluate it and a random baseline, print the leaderboard"""

from __future__ import annotations

from mopro_bench.commands import not_ready


def add_parser(sub, parents):
    p = sub.add_parser("demo", parents=parents, help="generate data, pretrain a tiny MoPro, evaluate it and a random baseline, print the leaderboard", description="generate data, pretrain a tiny MoPro, evaluate it and a random baseline, print the leaderboard")
    p.set_defaults(func=not_ready("demo", "issue 10"))
    return p
