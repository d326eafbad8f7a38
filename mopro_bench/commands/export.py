"""`mopro-bench export`: export a checkpoint's backbone as a torchvision state dict or detectron2 pickle"""

from __future__ import annotations

from mopro_bench.commands import not_ready

HELP = "export a checkpoint's backbone as a torchvision state dict or detectron2 pickle"


def add_parser(sub, parents):
    p = sub.add_parser("export", parents=parents, help=HELP, description=HELP)
    p.set_defaults(func=not_ready("export", "issue 3"))
    return p
