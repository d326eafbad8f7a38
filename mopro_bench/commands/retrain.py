"""`mopro-bench retrain`: classifier retraining (cRT) on cleaned labels, backbone frozen"""

from __future__ import annotations

from mopro_bench.commands import not_ready

HELP = "classifier retraining (cRT) on cleaned labels, backbone frozen"


def add_parser(sub, parents):
    p = sub.add_parser("retrain", parents=parents, help=HELP, description=HELP)
    p.set_defaults(func=not_ready("retrain", "issue 5"))
    return p
