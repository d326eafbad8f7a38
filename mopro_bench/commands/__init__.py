"""One module per CLI sub-command: ``add_parser(subparsers, parents)`` + ``run(args) -> int``."""

from __future__ import annotations

import argparse

from mopro_bench.errors import BenchError


def not_ready(command: str, issue: str):
    def run(args: argparse.Namespace) -> int:
        raise BenchError(f"`mopro-bench {command}` is not implemented yet ({issue})", "use a newer mopro-bench")

    return run
