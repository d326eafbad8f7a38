"""CLI spine: every sub-command has a real --help; user errors are one line with exit code 2, bugs keep tracebacks."""

from __future__ import annotations

import pytest

from mopro_bench.cli import COMMANDS, build_parser
from tests.conftest import run_cli_subprocess


@pytest.mark.parametrize("command", [c.replace("_", "-") for c in COMMANDS])
def test_every_subcommand_has_help(cli, command):
    code, out, _ = cli(command, "--help")
    assert code == 0 and f"mopro-bench {command}" in out and "--device" in out


def test_global_options_before_or_after_the_subcommand(monkeypatch):
    parser = build_parser()
    a = parser.parse_args(["--seed", "3", "--device", "cpu", "tasks"])
    b = parser.parse_args(["tasks", "--seed", "3", "--device", "cpu"])
    assert (a.seed, a.device) == (b.seed, b.device) == (3, "cpu")


def test_cache_dir_env_default(monkeypatch, tmp_path):
    from mopro_bench.cli import finalize_globals

    monkeypatch.setenv("MOPRO_BENCH_CACHE", str(tmp_path))
    args = finalize_globals(build_parser().parse_args(["tasks"]))
    assert args.cache_dir == str(tmp_path) and args.workers >= 1
    args = finalize_globals(build_parser().parse_args(["--cache-dir", "/x", "tasks"]))
    assert args.cache_dir == "/x"


def test_unknown_task_is_one_line_exit_2_in_a_real_process(tmp_path):
    proc = run_cli_subprocess("eval", "--ckpt", "random:resnet18", "--task", "no_such_task", "--data", str(tmp_path))
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: unknown task 'no_such_task'") and "fix: use one of:" in lines[0]
    assert "Traceback" not in proc.stderr


def test_usage_error_is_one_line_exit_2(cli):
    code, _, err = cli("eval", "--task", "x")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: eval needs a checkpoint -- fix: pass --ckpt")


@pytest.mark.parametrize("flag,value,why", [
    ("--batch-size", "-5", "is not a positive integer"),  # was a DataLoader ValueError traceback (exit 1)
    ("--batch-size", "0", "is not a positive integer"),  # was silently the default batch size (exit 0)
    ("--batch-size", "abc", "is not an integer"),
    ("--num-gpus", "0", "is not a positive integer"),
    ("--num-machines", "-1", "is not a positive integer"),
    ("--machine-rank", "-1", "is not 0 or more"),
])
def test_eval_numeric_flags_are_checked_before_any_work(cli, tmp_path, flag, value, why):
    code, out, err = cli("eval", "--ckpt", "random:resnet18", "--task", "voc_lowshot", "--data", tmp_path, f"{flag}={value}")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: argument {flag}: ") and why in err and "Traceback" not in err


def test_bad_device_and_bad_set(cli, tmp_path):
    code, _, err = cli("--device", "tpu", "eval", "--ckpt", "random:resnet18", "--task", "x", "--data", tmp_path)
    assert code == 2 and err.startswith("error: --device 'tpu' is not a device -- fix: use auto, cpu, cuda or cuda:N")
    code, _, err = cli("eval", "--ckpt", "random:resnet18", "--task", "x", "--data", tmp_path, "--set", "novalue")
    assert code == 2 and "--set 'novalue' is not KEY=VALUE" in err


def test_bugs_keep_their_traceback(monkeypatch):
    import mopro_bench.commands.env as env_cmd

    def boom(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(env_cmd, "run", boom)
    from mopro_bench.cli import main

    with pytest.raises(ZeroDivisionError):
        main(["env"])  # not swallowed: the console script exits 1 with the traceback


def test_env_reports_versions(cli):
    code, out, _ = cli("env")
    assert code == 0 and "torch" in out and "detectron2" in out and "python" in out


@pytest.mark.parametrize("setting", ["optim.epochs=NaN", "optim.epochs=Infinity", "optim.lr=-Infinity"])
def test_non_finite_set_values_are_one_line_exit_2(cli, tmp_path, setting):
    # was: `--set optim.epochs=NaN` -> ValueError traceback from int(nan) in the override parser
    code, _, err = cli("pretrain", "--data", tmp_path, "--out", tmp_path / "o", "--set", setting)
    assert code == 2 and "is not valid" in err and "finite" in err and len(err.strip().splitlines()) == 1, err
