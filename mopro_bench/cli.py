"""``mopro-bench`` command line: one parser, one sub-command module each, one error path.

Every sub-command lives in ``mopro_bench/commands/<name>.py`` with ``add_parser(subparsers, parents)`` and a
``run(args) -> int`` set as ``args.func``; :data:`mopro_bench.commands.COMMANDS` (a plug-in registry) lists them.
A :class:`BenchError` is printed as one line (``error: ... -- fix: ...``) with exit code 2; any other exception is a
bug and keeps its traceback (exit 1).
"""

from __future__ import annotations

import argparse
import os
import sys

from mopro_bench import __version__
from mopro_bench.commands import BUILTIN_COMMANDS
from mopro_bench.commands import COMMANDS as COMMAND_REGISTRY
from mopro_bench.errors import BenchError, unwrap_error

COMMANDS = BUILTIN_COMMANDS  # sub-command module names, in --help order (the registry: mopro_bench.commands.COMMANDS)

GLOBAL_DEFAULTS = {"device": "auto", "seed": 0, "workers": None, "cache_dir": None}


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line naming the fix (exit 2), like every other user error."""

    def error(self, message: str):  # type: ignore[override]
        sys.stderr.write(f"error: {message} -- fix: see `{self.prog} --help`\n")
        raise SystemExit(2)


def global_options(suppress: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    g = p.add_argument_group("global options (before or after the sub-command)")
    g.add_argument("--device", default=d("auto"), help="auto | cpu | cuda | cuda:N (default: auto)")
    g.add_argument("--seed", type=int, default=d(0), help="random seed, 0..4294967295 (default: 0)")
    g.add_argument("--workers", type=int, default=d(None), help="data-loader worker processes (default: min(8, cores))")
    g.add_argument("--cache-dir", default=d(None),
                   help="feature/split cache (default: $MOPRO_BENCH_CACHE or ~/.cache/mopro-bench)")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mopro-bench",
        description="MoPro pretraining and a versioned transfer-evaluation suite for visual backbones.",
        parents=[global_options(suppress=False)],
        epilog="Run `mopro-bench COMMAND --help` for each command. Quick start: `make demo`.",
    )
    parser.add_argument("--version", action="version", version=f"mopro-bench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    parents = [global_options(suppress=True)]
    for _name, add_parser in COMMAND_REGISTRY.items():
        add_parser(sub, parents)
    return parser


def finalize_globals(args: argparse.Namespace) -> argparse.Namespace:
    """Defaults of the global options, and their values checked before any work (one line, exit 2)."""
    from mopro_bench.runtime import check_device_spec, check_seed

    for k, v in GLOBAL_DEFAULTS.items():
        if not hasattr(args, k):
            setattr(args, k, v)
    check_seed(args.seed)
    check_device_spec(args.device)  # the spelling; whether that device exists is checked where it is used
    if args.workers is None:
        args.workers = min(8, os.cpu_count() or 1)
    if args.workers < 0:
        raise BenchError(f"--workers {args.workers} is negative", "use --workers 0 (load in the main process) or more")
    if args.cache_dir is not None and not str(args.cache_dir).strip():
        raise BenchError("--cache-dir is empty (it would put the cache in the current folder)",
                         "pass a folder, or leave the option out for $MOPRO_BENCH_CACHE or ~/.cache/mopro-bench")
    if args.cache_dir is None:
        args.cache_dir = os.environ.get("MOPRO_BENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mopro-bench")
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        finalize_globals(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except BrokenPipeError:  # `mopro-bench tasks | head`: the reader left; nothing is wrong with the run
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so the interpreter's final flush does not fail again
        except OSError:
            pass
        return 0
    except Exception as e:
        # a BenchError, or one that a DataLoader worker / spawned process sent back as traceback text
        err = unwrap_error(e)
        if err is None:
            raise  # a bug: keep the traceback (exit 1)
        sys.stderr.write(f"error: {err.line()}\n")
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
