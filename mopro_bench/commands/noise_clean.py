"""`mopro-bench noise-clean`: write the trained model's cleaned pseudo-labels for the train set"""

from __future__ import annotations

from mopro_bench.commands import not_ready

HELP = "write the trained model's cleaned pseudo-labels for the train set"


def add_parser(sub, parents):
    p = sub.add_parser("noise-clean", parents=parents, help=HELP, description=HELP)
    p.set_defaults(func=not_ready("noise-clean", "issue 5"))
    return p
