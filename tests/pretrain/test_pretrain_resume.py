"""Exact resume: a run stopped by SIGTERM, then killed by SIGKILL, then resumed ends with the same state as an
uninterrupted run (CPU, workers 0)."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from mopro_bench.pretrain.checkpoint import list_checkpoints
from mopro_bench.pretrain.trainer import FAULT_ENV, run_pretrain
from tests.conftest import run_cli_subprocess

SETTINGS = {"model.arch": "resnet18", "model.num_class": 100, "model.low_dim": 16, "aug.image_size": 32,
            "data.batch_size": 16, "mopro.queue_size": 32, "model.bn_splits": 2, "optim.epochs": 2, "optim.lr": 0.01,
            "mopro.start_clean_epoch": 1, "mopro.proto_start_epoch": 0, "mopro.pseudo_th": 0.05, "run.log_every": 1,
            "run.eval_every": 0}


def _set_args(extra=None):
    out = []
    for k, v in {**SETTINGS, **(extra or {})}.items():
        out += ["--set", f"{k}={json.dumps(v)}"]
    return out


def _cli(root, out, *args, fault=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    return run_cli_subprocess("pretrain", "--data", root, "--out", out, "--device", "cpu", "--workers", "0", "--no-progress",
                              *args, env=env, timeout=600)


def _final_state(out):
    ck = torch.load(list_checkpoints(out)[-1], weights_only=True)
    log = [{k: v for k, v in r.items() if k != "seconds"} for r in json.loads((out / "log.json").read_text())]
    return ck, log


@pytest.mark.slow
def test_sigterm_then_sigkill_then_resume_matches_uninterrupted(synth_root, tmp_path):
    root = synth_root("webvision", train_per_class=6)  # 48 images: 3 steps per epoch, 6 steps in all
    # interrupted run, part 1: SIGTERM after step 2 (mid-epoch 0) -> checkpoint at step 2, clean exit
    r1 = _cli(root, tmp_path / "b", *_set_args(), fault="term@2")
    assert r1.returncode == 0, r1.stderr
    assert "stopped by signal" in r1.stdout
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["checkpoint_step000000002.pth.tar"]
    # part 2: resume, checkpoint every 2 steps, SIGKILL after step 5 (checkpoints: 3 = end of epoch 0, 4 = mid-epoch 1)
    r2 = _cli(root, tmp_path / "b", "--resume", "auto", *_set_args({"ckpt.every_steps": 2}), fault="kill@5")
    assert r2.returncode == -signal.SIGKILL, (r2.returncode, r2.stderr)
    assert "resumed from" in r2.stdout and "step 2)" in r2.stdout
    assert list_checkpoints(tmp_path / "b")[-1].name == "checkpoint_step000000004.pth.tar"
    # part 3: resume to the end
    r3 = _cli(root, tmp_path / "b", "--resume", "auto", *_set_args())
    assert r3.returncode == 0, r3.stderr
    assert "step 4)" in r3.stdout
    # the uninterrupted reference, same environment (one thread)
    ra = _cli(root, tmp_path / "a", *_set_args())
    assert ra.returncode == 0, ra.stderr
    a, log_a = _final_state(tmp_path / "a")
    b, log_b = _final_state(tmp_path / "b")
    assert a["step"] == b["step"] == 6 and a["epoch"] == b["epoch"] == 2
    assert a["state_dict"].keys() == b["state_dict"].keys()
    worst = max((a["state_dict"][k].double() - b["state_dict"][k].double()).abs().max().item() for k in a["state_dict"])
    assert worst <= 1e-6, worst
    moms = [(a["optimizer"]["state"][i]["momentum_buffer"] - b["optimizer"]["state"][i]["momentum_buffer"]).abs().max().item()
            for i in a["optimizer"]["state"]]
    assert max(moms) <= 1e-6
    assert len(log_a) == len(log_b) == 2
    for ra_, rb_ in zip(log_a, log_b):
        assert ra_.keys() == rb_.keys()
        for k in ra_:
            if isinstance(ra_[k], (int, float)) and not isinstance(ra_[k], bool):
                assert ra_[k] == pytest.approx(rb_[k], rel=1e-6, abs=1e-6), k
            else:  # text (e.g. a cleaning-collapse warning) and flags: the resumed run says the same
                assert ra_[k] == rb_[k], k
    assert log_a[1]["relabelled"] > 0  # cleaning ran (epochs 1, 2), so the resumed epoch stats include it
    steps_b = [json.loads(line)["step"] for line in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    assert steps_b == list(range(1, 7))  # redone steps are not logged twice


def test_resume_refuses_a_different_model(synth_root, tmp_path):
    from mopro_bench.errors import BenchError

    root = synth_root("webvision", train_per_class=6)
    out = tmp_path / "r"
    settings = {**SETTINGS, "optim.epochs": 1, "data.batch_size": 24, "mopro.queue_size": 48, "model.bn_splits": 1}
    res = run_pretrain(settings, root, out, device="cpu", workers=0, progress=False)
    assert res.status == "done" and res.step == 2
    with pytest.raises(BenchError, match="already holds checkpoints"):
        run_pretrain(settings, root, out, device="cpu", workers=0, progress=False)
    with pytest.raises(BenchError, match="differs from the checkpoint"):
        run_pretrain({**settings, "model.low_dim": 32}, root, out, device="cpu", workers=0, resume="auto", progress=False)
    # a finished run resumed with more epochs continues from its last checkpoint
    res2 = run_pretrain({"optim.epochs": 2}, root, out, device="cpu", workers=0, resume="auto", progress=False)
    assert res2.step == 4
    ck = torch.load(list_checkpoints(out)[-1], weights_only=True)
    assert ck["mopro_bench"]["config"]["model"]["low_dim"] == 16 and ck["epoch"] == 2


def test_dataloader_workers_do_not_change_the_run(synth_root, tmp_path):
    """Augmentations are seeded per (seed, epoch, image), so worker processes give bit-identical training."""
    root = synth_root("webvision", train_per_class=4)
    settings = {**SETTINGS, "optim.epochs": 1}
    states = []
    for w in (0, 2):
        run_pretrain(settings, root, tmp_path / f"w{w}", device="cpu", workers=w, progress=False)
        states.append(torch.load(list_checkpoints(tmp_path / f"w{w}")[-1], weights_only=True)["state_dict"])
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
