"""The package maps pretrain/ and tasks/ into mopro_bench.*, in editable and in regular (wheel) installs; its data files
(class lists, published.csv) ship inside it."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from tests.conftest import REPO


def test_editable_install_imports_mapped_packages():
    import mopro_bench.pretrain
    import mopro_bench.tasks

    assert mopro_bench.pretrain.__file__.endswith("pretrain/__init__.py")
    assert mopro_bench.tasks.__file__.endswith("tasks/__init__.py")


@pytest.mark.slow
def test_wheel_contains_mapped_packages_and_class_lists(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next(tmp_path.glob("mopro_bench-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("mopro_bench/pretrain/__init__.py", "mopro_bench/tasks/__init__.py", "mopro_bench/cli.py",
                   "mopro_bench/resources/imagenet1k_wnids.txt", "mopro_bench/resources/imagenet_r_wnids.txt",
                   "mopro_bench/resources/published.csv", "mopro_bench/results/__init__.py",
                   "mopro_bench/leaderboard/__init__.py", "mopro_bench/plugins.py",
                   "mopro_bench/checkpoints/formats/__init__.py", "mopro_bench/checkpoints/formats/torchvision.py"):
        assert needed in names, needed
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry).decode()
    # built-in tasks are listed in code (registry.BUILTIN_TASKS), not as entry points (those are for third parties)
    assert "[mopro_bench.tasks]" not in text and "mopro-bench = mopro_bench.cli:main" in text
    # installed (not editable) into a scratch target, the mapped packages import from there
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    code = ("import mopro_bench.tasks, mopro_bench.pretrain, mopro_bench.resources as r; "
            "print(mopro_bench.tasks.__file__, len(r.imagenet1k_wnids()))")
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {code}"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert str(target) in out.stdout and out.stdout.strip().endswith("1000")
    # ... and the installed copy finds every built-in task without entry points
    code = "from mopro_bench.registry import BUILTIN_TASKS, registry; print(sorted(registry()) == sorted(BUILTIN_TASKS))"
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {code}"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr[-2000:]
    # the published numbers ship as package data: the leaderboard's default file is the installed copy and loads
    code = ("from mopro_bench.leaderboard import DEFAULT_PUBLISHED, load_published; "
            "print(DEFAULT_PUBLISHED); print(len(load_published(DEFAULT_PUBLISHED)))")
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {code}"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    where, n = out.stdout.split()
    assert where.startswith(str(target)) and int(n) > 0
