"""`mopro-bench inspect`: show a checkpoint's format, architecture, heads, sha256 and coverage"""

from __future__ import annotations

from mopro_bench.commands import not_ready


def add_parser(sub, parents):
    p = sub.add_parser("inspect", parents=parents, help="show a checkpoint's format, architecture, heads, sha256 and coverage", description="show a checkpoint's format, architecture, heads, sha256 and coverage")
    p.set_defaults(func=not_ready("inspect", "issue 3"))
    return p
