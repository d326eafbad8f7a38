"""Two gloo processes under torchrun == one process with the same global batch.

What makes them comparable: the global batch and its order are the same (GlobalBatchSampler: process r takes the
r-th chunk of each global batch; all_gather restores the one-process order), the key shuffle permutation is drawn
from (seed, step) on every process, the label losses are normalised by the global kept count, and BatchNorm sees
the same groups -- each of the 2 processes normalises its 8 images as one BN batch (bn_splits=1), the single process
splits its 16 images into 2 contiguous BN groups (bn_splits=2). What still differs, by design: BatchNorm *running*
statistics (each process keeps its own; the single process averages the groups' -- rank 0's are saved), so those
buffers are not compared, and sums happen in another order (BN over a reshaped batch, gloo all-reduce of the
gradients). With T = 0.1 such rounding differences grow by ~10x per step in float32, so the comparison runs in
float64 (run.precision=fp64), where they stay far below the 1e-9 tolerance.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from mopro_bench.pretrain.checkpoint import list_checkpoints
from mopro_bench.pretrain.trainer import run_pretrain

SETTINGS = {"model.arch": "resnet18", "model.num_class": 100, "model.low_dim": 16, "aug.image_size": 32,
            "data.batch_size": 16, "mopro.queue_size": 32, "optim.epochs": 2, "optim.lr": 0.01,
            "mopro.start_clean_epoch": 1, "mopro.proto_start_epoch": 0, "mopro.pseudo_th": 0.05, "run.log_every": 1,
            "run.eval_every": 0, "run.precision": "fp64"}


def _steps(out):
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(synth_root, tmp_path):
    root = synth_root("webvision", train_per_class=4)  # 32 images: 2 steps per epoch, 4 steps in all
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "mopro_bench",
           "pretrain", "--data", str(root), "--out", str(tmp_path / "ddp"), "--device", "cpu", "--workers", "0",
           "--no-progress"]
    for k, v in {**SETTINGS, "model.bn_splits": 1}.items():
        cmd += ["--set", f"{k}={json.dumps(v)}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "on 2 process(es) x 1 BN group(s)" in r.stdout
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = run_pretrain({**SETTINGS, "model.bn_splits": 2}, root, tmp_path / "one", device="cpu", workers=0, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert res.step == 4
    one, ddp = _steps(tmp_path / "one"), _steps(tmp_path / "ddp")
    assert [s["step"] for s in one] == [s["step"] for s in ddp] == [1, 2, 3, 4]
    for a, b in zip(one, ddp):
        for k in ("loss", "loss_inst", "loss_cls", "loss_proto", "acc_inst", "samples", "kept", "relabelled"):
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-6), (a["step"], k)  # logged as float32
    assert sum(s["relabelled"] for s in one) > 0  # cleaning ran in epoch 1
    a = torch.load(list_checkpoints(tmp_path / "one")[-1], weights_only=True)["state_dict"]
    b = torch.load(list_checkpoints(tmp_path / "ddp")[-1], weights_only=True)["state_dict"]
    assert torch.equal(a["queue_ptr"], b["queue_ptr"])
    for k in a:
        if "running_" in k or "num_batches_tracked" in k:
            continue  # per-process BN statistics: see the module docstring
        assert torch.allclose(a[k], b[k], rtol=0, atol=1e-9), (k, (a[k] - b[k]).abs().max())
