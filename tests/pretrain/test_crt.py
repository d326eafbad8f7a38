"""cRT (`retrain`): the reference's defaults, its square-root class-balanced sampler, and no fake result when the
cleaned list is smaller than a batch. Also `noise-clean` with a truth file of another dataset."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from mopro_bench.errors import BenchError
from mopro_bench.pretrain.crt import CRTConfig, crt_lr, sqrt_balanced_order, sqrt_replication, validate_crt

QUICK = ["--arch", "resnet18", "--image-size", "32", "--batch-size", "16", "--epochs", "1", "--set", "mopro.queue_size=32",
         "--set", "model.num_class=100", "--set", "model.low_dim=16", "--set", "model.bn_splits=2", "--set",
         "run.eval_every=0", "--device", "cpu", "--workers", "0", "--no-progress"]
RUN = ["--device", "cpu", "--workers", "0", "--no-progress"]


def test_defaults_are_the_reference_code():
    c = CRTConfig()  # MoPro classifier_retrain.py / dataloader_balance.py
    assert (c.epochs, c.lr, c.schedule, c.milestones, c.gamma) == (16, 0.01, "step", (5, 10), 0.1)
    assert (c.momentum, c.weight_decay, c.batch_size, c.crop_scale, c.sampling) == (0.9, 0.0, 256, (0.2, 1.0), "sqrt")
    assert [crt_lr(c, e) for e in (0, 4, 5, 9, 10, 15)] == pytest.approx([0.01, 0.01, 0.001, 0.001, 1e-4, 1e-4])
    for bad in ({"lr": float("nan")}, {"lr": 0.0}, {"momentum": 1.0}, {"sampling": "inverse"}, {"schedule": "poly"},
                {"batch_size": 0}, {"crop_scale": (0.0, 1.0)}):
        from mopro_bench.config import apply_overrides

        with pytest.raises(BenchError, match="is not valid"):
            validate_crt(apply_overrides(CRTConfig(), bad))


def test_sqrt_replication_matches_the_formula():
    # copies per image of class c = floor(10 * sqrt(n_max / n_c)), n_max = 64
    labels = [0] * 64 + [1] * 16 + [2] * 4 + [3] * 1 + [4] * 50 + [5] * 7
    assert sqrt_replication(labels) == {0: 10, 1: 20, 2: 40, 3: 80, 4: 11, 5: 30}  # sqrt(64/50)=1.13, sqrt(64/7)=3.02
    # a class's share of the replicated list grows like sqrt(n_c): 640 : 320 : 160 : 80 for n = 64 : 16 : 4 : 1
    copies = sqrt_replication(labels)
    pool = Counter({c: n * copies[c] for c, n in Counter(labels).items()})
    assert [pool[c] for c in range(4)] == [640, 320, 160, 80]


def test_sqrt_balanced_epoch_is_a_truncated_shuffle_of_the_replicated_list():
    labels = [0] * 1280 + [1] * 320 + [2] * 80 + [3] * 20  # copies 10, 20, 40, 80 -> pool 12800 : 6400 : 3200 : 1600
    order = sqrt_balanced_order(labels, seed=0, epoch=0)
    assert len(order) == len(labels)
    per_image = Counter(order.tolist())
    copies = sqrt_replication(labels)
    assert all(k <= copies[labels[i]] for i, k in per_image.items())  # never more often than it was replicated
    got = Counter(labels[i] for i in order.tolist())
    share = torch.tensor([12800, 6400, 3200, 1600], dtype=torch.float64) / 24000
    expected = share * len(labels)
    sd = (len(labels) * share * (1 - share)).sqrt()
    for c in range(4):  # hypergeometric draw: within 4 standard deviations
        assert abs(got[c] - expected[c]) < 4 * sd[c], (c, got[c], float(expected[c]))
    # vs the plain list (1280 : 320 : 80 : 20) the rare classes are boosted, vs class-uniform (425 each) not fully
    assert got[3] > 20 * 3 and got[3] < 425 / 2 and got[0] > 425
    assert torch.equal(order, sqrt_balanced_order(labels, seed=0, epoch=0))
    assert not torch.equal(order, sqrt_balanced_order(labels, seed=0, epoch=1))


def test_retrain_refuses_fewer_images_than_a_batch_and_truth_of_other_data(cli, synth_root, tmp_path):
    root = synth_root("webvision", train_per_class=4)  # 32 images
    run = tmp_path / "run"
    code, _, err = cli("pretrain", "--data", root, "--out", run, *QUICK)
    assert code == 0, err
    ckpt = run / "last.pth.tar"

    # noise-clean with a truth file of other data / not JSON: pseudo-labels are written first, then exit 2
    other = tmp_path / "other.truth.json"
    other.write_text(json.dumps({"train": {"google/elsewhere.jpg": {"kind": "clean", "true": 0}}}))
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    pl = tmp_path / "pl.json"
    for truth, message in ((other, "is not this dataset's"), (garbage, "is not valid JSON")):
        pl.unlink(missing_ok=True)
        code, stdout, err = cli("noise-clean", "--data", root, "--ckpt", ckpt, "--out", pl, "--truth", truth,
                                "--set", "mopro.pseudo_th=0.2", *RUN)
        assert code == 2 and message in err and f"pseudo-labels written to {pl}" in err, err
        assert len(err.strip().splitlines()) == 1 and "32 images: kept" in stdout
        assert json.loads(pl.read_text())["meta"]["total"] == 32

    n = len(json.loads(pl.read_text())["images"])
    assert 8 <= n <= 32
    # default batch 256 > the kept images: refused up front, nothing written (was: 0 steps, loss 0.0000, a checkpoint)
    code, _, err = cli("retrain", "--data", root, "--ckpt", ckpt, "--annotation", pl, "--out", tmp_path / "crt", *RUN)
    assert code == 2 and f"has {n} images, fewer than one batch (256)" in err and f"batch_size={n}" in err, err
    assert not (tmp_path / "crt" / "checkpoint_crt.pth.tar").exists()

    code, _, err = cli("retrain", "--data", root, "--ckpt", ckpt, "--annotation", pl, "--out", tmp_path / "crt", *RUN,
                       "--set", "epochs=2", "--set", "batch_size=8", "--set", "milestones=[1]")
    assert code == 0, err
    log = json.loads((tmp_path / "crt" / "crt_log.json").read_text())
    assert [r["steps"] for r in log] == [n // 8] * 2 and [r["lr"] for r in log] == pytest.approx([0.01, 0.001])
    meta = torch.load(tmp_path / "crt" / "checkpoint_crt.pth.tar", weights_only=True)["mopro_bench"]["crt"]["config"]
    assert meta["sampling"] == "sqrt" and meta["weight_decay"] == 0.0 and meta["crop_scale"] == [0.2, 1.0]
