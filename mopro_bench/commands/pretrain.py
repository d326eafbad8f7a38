"""`mopro-bench pretrain`: train MoPro on WebVision-format data (CPU, one GPU, torchrun)"""

from __future__ import annotations

from mopro_bench.commands import not_ready

HELP = "train MoPro on WebVision-format data (CPU, one GPU, torchrun)"


def add_parser(sub, parents):
    p = sub.add_parser("pretrain", parents=parents, help=HELP, description=HELP)
    p.set_defaults(func=not_ready("pretrain", "issue 5"))
    return p
