"""Global flags that used to crash (--seed -1, a seed past numpy's range, odd --device specs), and errors raised inside
DataLoader workers or other processes: each reaches the user as one line with the fix, exit code 2."""

from __future__ import annotations

import pickle

import pytest

from mopro_bench.errors import BenchError, unwrap_error

ONE_LINE_EVAL = ("eval", "--ckpt", "random:resnet18", "--task", "voc_lowshot", "--no-progress")


@pytest.mark.parametrize(("flag", "value", "expect"), [
    ("--seed", "-1", "--seed -1 is negative"),
    ("--seed", "99999999999999999999999", "is larger than 4294967295"),
    ("--seed", "abc", "invalid int value: 'abc'"),
    ("--workers", "-3", "--workers -3 is negative"),
    ("--device", "cuda:-1", "--device 'cuda:-1' is not a device"),
    ("--device", "cuda:abc", "--device 'cuda:abc' is not a device"),
    ("--device", "", "--device '' is not a device"),
    ("--cache-dir", "", "--cache-dir is empty"),
])
def test_bad_global_flags_are_one_line_exit_2_before_any_work(cli, tmp_path, flag, value, expect):
    # before and after the sub-command; no data exists at --data, so nothing else can have been looked at
    none = tmp_path / "none"
    for argv in ((flag, value, *ONE_LINE_EVAL, "--data", none), (*ONE_LINE_EVAL, "--data", none, flag, value)):
        code, out, err = cli(*argv)
        assert code == 2, err
        assert err.count("\n") == 1 and err.startswith("error: ") and expect in err and "-- fix: " in err, err
        assert "Traceback" not in err and "does not exist" not in err


@pytest.mark.parametrize("seed", ["0", "4294967295"])
def test_the_seed_range_ends_are_accepted(seed):
    from mopro_bench.cli import build_parser, finalize_globals

    args = finalize_globals(build_parser().parse_args(["--seed", seed, "tasks"]))
    assert args.seed == int(seed)
    from mopro_bench.runtime import seed_everything
    from mopro_bench.tasks.lowshot.splits import sample_rng

    seed_everything(args.seed)  # numpy's legacy seed, torch and the split RNG all take the largest allowed seed
    sample_rng(args.seed, 1, 0)


def test_device_cuda_without_a_gpu_is_one_line(cli, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for spec in ("cuda", "cuda:7"):
        code, _, err = cli("--device", spec, "eval", "--ckpt", "random:resnet18", "--task", "voc_lowshot", "--data", tmp_path)
        assert code == 2 and err.count("\n") == 1 and f"--device {spec}: no CUDA device is visible" in err


# ---------------------------------------------------------------------------------------------------- worker errors
def test_bench_error_survives_pickling_with_its_fix():
    e = BenchError("image a.jpg cannot be decoded", "replace the file")
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is BenchError and (back.message, back.fix) == (e.message, e.fix) and str(back) == str(e)
    no_fix = pickle.loads(pickle.dumps(BenchError("plain")))
    assert (no_fix.message, no_fix.fix, str(no_fix)) == ("plain", None, "plain")


def _boom(i):
    raise BenchError(f"item {i} is bad", "fix item " + str(i))


def test_bench_error_from_a_process_pool_keeps_message_and_fix():
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool, pytest.raises(BenchError) as info:
        pool.map(_boom, [7])
    assert (info.value.message, info.value.fix) == ("item 7 is bad", "fix item 7")


class _BadImages:
    def __init__(self, folder):
        self.folder = folder

    def __len__(self):
        return 4

    def __getitem__(self, i):
        from mopro_bench.data.common import ImageList

        return ImageList([self.folder / f"{i}.jpg"])[0]


def test_worker_raised_bench_error_is_unwrapped_to_its_own_line(tmp_path):
    from torch.utils.data import DataLoader

    (tmp_path / "0.jpg").write_bytes(b"")  # zero-byte JPEG: cannot be decoded
    with pytest.raises(BenchError) as info:
        list(DataLoader(_BadImages(tmp_path), batch_size=2, num_workers=1))
    e = info.value
    # torch rebuilds the error from its worker traceback text; without unwrapping it was ~1,000 characters with no fix
    assert e.message.startswith(f"image {tmp_path / '0.jpg'} cannot be decoded") and "Traceback" not in e.message
    assert e.fix == "replace the file; `mopro-bench data check --deep` lists every unreadable image"
    assert len(e.line()) < 400


def test_unwrap_error_reads_the_last_bench_error_line_of_a_traceback_text():
    text = ("process 0 terminated with the following error:\nTraceback (most recent call last):\n  File \"x.py\", line 1\n"
            "mopro_bench.errors.BenchError: the exported backbone does not load -- fix: check the checkpoint\n")
    got = unwrap_error(RuntimeError(text))
    assert isinstance(got, BenchError) and (got.message, got.fix) == ("the exported backbone does not load",
                                                                       "check the checkpoint")
    assert unwrap_error(RuntimeError("Traceback (most recent call last):\nValueError: a bug")) is None
    assert unwrap_error(ZeroDivisionError("a bug")) is None


def test_eval_with_workers_and_a_corrupt_image_prints_one_short_line(synth_root, tmp_path, cli):
    import shutil

    root = tmp_path / "places"
    shutil.copytree(synth_root("places205"), root)
    from mopro_bench.data.places import IMAGE_DIR, SPLIT_DIR

    rel = (root / SPLIT_DIR / "val_places205.csv").read_text().split()[0]
    (root / IMAGE_DIR / rel).write_bytes(b"")
    code, _, err = cli("eval", "--ckpt", "random:resnet18", "--task", "places_lowshot", "--data", root, "--device", "cpu",
                       "--workers", "2", "--no-progress", "--cache-dir", tmp_path / "c", "--results-dir", tmp_path / "r",
                       "--set", "image_size=32", "--set", "resize=36", "--set", "ks=[1]", "--set", "num_samples=1")
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(lines) == 1, err
    assert f"image {root / IMAGE_DIR / rel} cannot be decoded" in lines[0] and "Traceback" not in err
    assert lines[0].endswith("-- fix: replace the file; `mopro-bench data check --deep` lists every unreadable image")
    assert len(lines[0]) < 500


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True])
def test_evaluate_from_python_checks_the_seed_as_the_cli_does(seed, tmp_path):
    from mopro_bench.evaluate import evaluate

    with pytest.raises(BenchError, match="seed"):
        evaluate("random:resnet18", "voc_lowshot", tmp_path, seed=seed, results_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()
