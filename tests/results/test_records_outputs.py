"""Output locations (issue 14 item 9; reliability cases 69-73): checked before any work, kept in a fallback file
when writing fails at the end, symlinks written through (never replaced), files created with 0666 & ~umask."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from mopro_bench import io as mio
from mopro_bench.errors import BenchError
from tests.leaderboard.test_leaderboard_tables import _fast_records, make_record, put  # noqa: F401 (fixture)

VOC_TINY = ["--set", "image_size=32", "--set", "resize=36", "--set", "ks=[1]", "--set", "num_samples=1"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    """Case 73: before, every file was 0600 (mkstemp) whatever the umask."""
    old = os.umask(umask)
    try:
        for p in (mio.atomic_write_json(tmp_path / "r.json", {"a": 1}), mio.atomic_torch_save(tmp_path / "c.pt", {"w": 1}),
                  mio.atomic_write_bytes(tmp_path / "sub" / "f.npy", b"x")):
            assert stat.S_IMODE(p.stat().st_mode) == mode, p
    finally:
        os.umask(old)


def test_symlink_destinations_are_written_through(tmp_path):
    """Case 72: before, `--out LINK` replaced the link with a regular 0600 file."""
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    mio.atomic_write_json(link, {"new": 1})
    assert link.is_symlink() and json.loads(target.read_text()) == {"new": 1}
    dangling = tmp_path / "later.json"
    dangling.symlink_to(tmp_path / "made" / "by-write.json")
    mio.atomic_write_text(dangling, "hi")
    assert dangling.is_symlink() and (tmp_path / "made" / "by-write.json").read_text() == "hi"
    dev = tmp_path / "stdout-like"
    dev.symlink_to(os.devnull)  # a device (like /dev/stdout): written into directly, no temp file next to it
    mio.atomic_write_json(dev, {"x": 1})
    assert dev.is_symlink() and os.path.realpath(dev) == os.devnull
    if Path("/proc/self/fd").is_dir():  # the tester's stand-in for /dev/stdout: a link to /proc/self/fd/N (a pipe)
        r, w = os.pipe()
        try:
            pipe_link = tmp_path / "stdout"
            pipe_link.symlink_to(f"/proc/self/fd/{w}")
            mio.atomic_write_json(pipe_link, {"piped": 1})
            assert json.loads(os.read(r, 1000)) == {"piped": 1} and pipe_link.is_symlink()
        finally:
            os.close(r)
            os.close(w)


def test_output_checks(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    (tmp_path / "adir").mkdir()
    with pytest.raises(BenchError, match="adir is a directory"):
        mio.check_writable_file(tmp_path / "adir", "--out")
    with pytest.raises(BenchError, match="afile is a file, not a directory"):
        mio.check_writable_file(afile / "o.json", "--out")
    with pytest.raises(BenchError, match="afile is a file, not a directory"):
        mio.check_writable_dir(afile / "res", "results directory")
    with pytest.raises(BenchError, match="afile is a file, not a directory"):
        mio.check_dir_creatable(afile, "--out-dir")
    mio.check_dir_creatable(tmp_path / "new" / "deeper", "--out-dir")
    assert not (tmp_path / "new").exists()  # checked, nothing created
    assert mio.check_writable_file(tmp_path / "deep" / "o.json") and (tmp_path / "deep").is_dir()
    assert [p.name for p in (tmp_path / "deep").iterdir()] == []  # the probe file is gone


@pytest.mark.parametrize("flag, where, message", [
    ("--results-dir", "afile/res", "results directory .* cannot be created: .*afile is a file"),
    ("--out", "adir", "--out .*adir is a directory"),
    ("--out", "afile/o.json", "afile is a file, not a directory"),
    ("--work-dir", "afile", "--work-dir .*afile cannot be created: .*afile is a file"),
    ("--cache-dir", "afile", "cache directory .*afile cannot be created"),
])
def test_eval_refuses_unwritable_outputs_before_any_work(synth_root, tmp_path, cli, flag, where, message):
    """Case 69/70: before, a PermissionError/IsADirectoryError traceback after features and SVMs were computed."""
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    args = {"--results-dir": tmp_path / "res", "--cache-dir": tmp_path / "cache"}
    args[flag] = tmp_path / where
    extra = [x for k, v in args.items() for x in (k, v)] + ([flag, tmp_path / where] if flag not in args else [])
    code, out, err = cli("eval", "--ckpt", "random:resnet18", "--task", "voc_lowshot", "--data", synth_root("voc07"),
                         "--device", "cpu", "--workers", "0", "--no-progress", *VOC_TINY, *extra)
    assert code == 2 and "Traceback" not in err, err
    line = next(ln for ln in err.splitlines() if ln.startswith("error:"))
    assert __import__("re").search(message, line), line
    assert not (tmp_path / "cache" / "features").exists()  # refused before extracting anything


def test_leaderboard_and_compare_check_outputs_first(tmp_path, cli):
    res = tmp_path / "res"
    a = put(res, make_record())
    (tmp_path / "afile").write_text("x")
    code, _, err = cli("leaderboard", "--results-dir", res, "--out-dir", tmp_path / "afile")
    assert code == 2 and "--out-dir" in err and "is a file" in err and "Traceback" not in err
    (tmp_path / "adir").mkdir()
    code, out, err = cli("compare", a, a, "--out", tmp_path / "adir")
    assert code == 2 and out == "" and "--out" in err and "is a directory" in err


def test_record_kept_in_a_fallback_file_when_the_final_write_fails(tmp_path, monkeypatch):
    from mopro_bench.results import store as ev

    rec = make_record()

    def refuse(record, path):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ev, "write_record", refuse)
    monkeypatch.setattr(ev.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    with pytest.raises(BenchError) as e:
        ev.write_outputs(rec, tmp_path / "res" / "x-seed0.json", None)
    kept = tmp_path / "tmp" / "mopro-bench-unsaved" / "x-seed0.json"
    assert f"the record was saved to {kept}" in e.value.message and "Permission denied" in e.value.message
    assert json.loads(kept.read_text()) == rec
