"""One module per CLI sub-command: ``add_parser(subparsers, parents)`` + ``run(args) -> int``.

:data:`COMMANDS` (a :class:`mopro_bench.plugins.Registry`) lists them in ``mopro-bench --help`` order, by module name
(``noise_clean`` is the ``noise-clean`` sub-command), each a lazy ``"mopro_bench.commands.<name>:add_parser"``
reference. Adding a command: write ``commands/<name>.py`` and add its name to :data:`BUILTIN_COMMANDS`.
"""

from __future__ import annotations

import argparse

from mopro_bench.errors import BenchError
from mopro_bench.plugins import Registry

BUILTIN_COMMANDS = (
    "pretrain", "noise_clean", "retrain", "eval", "tasks", "inspect", "export", "data", "leaderboard",
    "compare", "demo", "env", "zoo",
)

COMMANDS: Registry = Registry("command", hint="(see `mopro-bench --help`)")
for _name in BUILTIN_COMMANDS:
    COMMANDS.register(_name, f"mopro_bench.commands.{_name}:add_parser")


def not_ready(command: str, issue: str):
    def run(args: argparse.Namespace) -> int:
        raise BenchError(f"`mopro-bench {command}` is not implemented yet ({issue})", "use a newer mopro-bench")

    return run
