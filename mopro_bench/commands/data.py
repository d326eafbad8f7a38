"""`mopro-bench data`: check a dataset layout or generate a small one in the same layout"""

from __future__ import annotations

from mopro_bench.commands import not_ready

HELP = "check a dataset layout or generate a small one in the same layout"


def add_parser(sub, parents):
    p = sub.add_parser("data", parents=parents, help=HELP, description=HELP)
    p.set_defaults(func=not_ready("data", "issue 4"))
    return p
