"""Shared fixtures. Generated datasets are made once per test session (tiny scale) and reused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """``synth_root(kind, scale="tiny", seed=0, **kw) -> Path``: a generated dataset in the real layout (cached)."""
    cache: dict = {}

    def make(kind: str, scale: str = "tiny", seed: int = 0, **kw) -> Path:
        key = (kind, scale, seed, tuple(sorted(kw.items())))
        if key not in cache:
            from mopro_bench.data.synth import synth

            out = tmp_path_factory.mktemp(kind.replace("-", "_")) / "root"
            synth(kind, out, seed=seed, scale=scale, **kw)
            cache[key] = out
        return cache[key]

    return make


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: ``code, out, err = cli("tasks")``."""

    def run(*argv: str) -> tuple[int, str, str]:
        from mopro_bench.cli import main

        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse usage errors / --help
            code = int(e.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def run_cli_subprocess(*argv: str, cwd: Path | None = None, timeout: int = 300, env: dict | None = None):
    """Run ``python -m mopro_bench ...`` in a fresh process (exit code and stderr exactly as a user sees them)."""
    return subprocess.run([sys.executable, "-m", "mopro_bench", *map(str, argv)], cwd=cwd or REPO, capture_output=True,
                          text=True, timeout=timeout, env=env)
