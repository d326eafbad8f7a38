"""ImageNet protocols as their sources define them: best-of-epochs reporting, fp32, BatchNorm groups, and MoPro's
as-released per-process subsets (issue 15 items 1 and 5)."""

from __future__ import annotations

import contextlib
import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mopro_bench.checkpoints import load_checkpoint
from mopro_bench.errors import BenchError
from mopro_bench.evaluate import evaluate
from mopro_bench.registry import get_task
from mopro_bench.tasks.imagenet.finetune import TrainConfig, grouped_forward_loss
from mopro_bench.tasks.imagenet.subsets import (
    as_released_epoch_order,
    draw_as_released,
    expected_union_fraction,
    resolve_as_released,
)

TINY = {"image_size": 32, "resize": 36}


@pytest.fixture(scope="module")
def imagenet(synth_root):
    return synth_root("imagenet")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("imagenet_protocols_cache")


def run(ck, task, root, tmp_path, cache, overrides=None, **options):
    return evaluate(ck, task, root, overrides=overrides or {}, device="cpu", workers=0, cache_dir=cache,
                    results_dir=tmp_path / "results", options=options, progress=False).record


# ------------------------------------------------------------------------------------------------ protocol constants
def test_published_protocols_evaluate_every_epoch_report_the_best_and_train_in_fp32():
    for spec, epochs in (("imagenet_1pct@mopro", 40), ("imagenet_10pct@mopro", 40), ("imagenet_1pct@mopro-as-released", 40),
                         ("imagenet_1pct@swav", 20), ("imagenet_10pct@swav", 20), ("imagenet_linear@moco", 100)):
        p = get_task(spec).protocol
        assert (p.eval_every, p.report, p.precision, p.epochs) == (1, "best-epoch", "fp32", epochs), spec
    mopro, released = get_task("imagenet_1pct@mopro").protocol, get_task("imagenet_1pct@mopro-as-released").protocol
    assert (mopro.bn_batch, mopro.sync_bn, mopro.subset_source, mopro.num_ranks) == (32, False, "file-or-seeded", 0)
    assert (released.subset_source, released.num_ranks, released.bn_batch) == ("as-released", 8, 32)
    assert released.params() | {"subset_source": None, "num_ranks": None} == mopro.params() | {"subset_source": None,
                                                                                                "num_ranks": None}
    swav = get_task("imagenet_1pct@swav").protocol
    assert swav.sync_bn and swav.bn_batch == 0  # SyncBN: BatchNorm over the global batch
    assert (swav.classifier_init, swav.head_init, mopro.head_init) == ("fresh", "torch-default", "normal")
    from mopro_bench.tasks.imagenet.task import IMAGENET_1PCT

    ck = load_checkpoint("random:resnet18")  # no classifier: both start fresh, each with its source's init
    w_swav = IMAGENET_1PCT._head(swav, ck)[0].weight
    w_mopro = IMAGENET_1PCT._head(mopro, ck)[0].weight
    bound = 1 / math.sqrt(512)  # nn.Linear: kaiming-uniform(a=sqrt 5) = U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert w_swav.abs().max() <= bound and w_swav.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert w_mopro.std().item() == pytest.approx(0.01, rel=0.02)
    assert get_task("imagenet_linear@fast").protocol.report == "last-epoch"  # the project's own protocol: no selection
    # bf16 is another protocol: its id carries a hash and never meets the published row
    assert get_task("imagenet_1pct@mopro", {"precision": "bf16"}).protocol_id.startswith("imagenet_1pct@mopro+")


def test_best_epoch_is_the_headline_and_per_image_hits_come_from_it():
    from mopro_bench.registry import RunContext
    from mopro_bench.tasks.imagenet.finetune import ParamGroup
    from mopro_bench.tasks.imagenet.scoring import HitTrainer
    from mopro_bench.tasks.imagenet.task import _fit_summary, _trainer_per_image
    from tests.tasks.imagenet.test_imagenet_finetune import Blobs, small_net

    net = small_net()
    cfg = TrainConfig(epochs=4, batch_size=12, milestones=(2,), gamma=-1.0, momentum=0.0, eval_every=1)  # ascent from 3
    trainer = HitTrainer(net, [ParamGroup("all", list(net.parameters()), 0.2)], Blobs(), Blobs(seed=1), cfg,
                         RunContext(seed=3, progress=False), run_key={})
    fit = trainer.fit()
    top1 = [h["top1"] for h in fit.history]
    assert len(top1) == 4 and max(top1) > top1[-1]  # the setting separates best from last
    best = max(range(4), key=lambda i: (top1[i], -i))
    m, d = _fit_summary(fit, "best-epoch")
    assert (m["top1"], m["top5"], d["reported_epoch"]) == (top1[best], fit.history[best]["top5"], best + 1)
    assert m["best_top1"] == top1[best] and m["last_top1"] == top1[-1]
    _trainer_per_image(trainer, fit, [str(i) for i in range(48)], d)
    hits = np.array(d["per_image"]["top1"]["correct"])
    assert 100.0 * hits.mean() == pytest.approx(m["top1"])  # the per-image vector is the reported epoch's
    assert d["per_image"]["source"] == f"val evaluation after epoch {best + 1}"
    m, d = _fit_summary(fit, "last-epoch")
    assert (m["top1"], d["reported_epoch"]) == (top1[-1], 4)
    _trainer_per_image(trainer, fit, [str(i) for i in range(48)], d)
    assert 100.0 * np.mean(d["per_image"]["top1"]["correct"]) == pytest.approx(top1[-1])


def test_mopro_task_evaluates_every_epoch_in_fp32(imagenet, tmp_path, cache):
    over = {**TINY, "batch_size": 8, "epochs": 2, "milestones": [], "fraction": 0.25, "bn_batch": 0}
    rec = run(load_checkpoint("random:resnet18"), "imagenet_1pct@mopro", imagenet, tmp_path, cache, over)
    hist = rec["details"]["history"]
    assert [h["epoch"] for h in hist if "top1" in h] == [1, 2]  # evaluated every epoch
    m, d = rec["metrics"], rec["details"]
    assert m["top1"] == max(h["top1"] for h in hist) and m["last_top1"] == hist[-1]["top1"]
    assert rec["selection"].startswith("best epoch") and "last_top1" in rec["metric_definitions"]
    assert d["precision"] == "fp32" and d["amp"] is None


# ------------------------------------------------------------------------------------------------ BatchNorm groups
def test_grouped_batchnorm_normalises_each_group_and_only_group_0_moves_running_stats():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    x, y = torch.randn(8, 3, 6, 6), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    ce = nn.CrossEntropyLoss()
    a, b = copy.deepcopy(net), copy.deepcopy(net)
    loss = grouped_forward_loss(a, x, y, 2, ce, contextlib.nullcontext())
    # slow obvious version: two separate forwards, mean of the two mean losses; only the first updates the stats
    l0 = ce(b(x[0::2]), y[0::2])
    stats = (b[1].running_mean.clone(), b[1].running_var.clone())
    l1 = ce(b(x[1::2]), y[1::2])
    assert loss.item() == pytest.approx(((l0 + l1) / 2).item(), rel=1e-6)
    assert torch.allclose(a[1].running_mean, stats[0]) and torch.allclose(a[1].running_var, stats[1])
    assert not torch.allclose(b[1].running_mean, stats[0])  # the second forward would have moved them
    assert a[1].momentum == 0.1  # restored
    whole = ce(copy.deepcopy(net)(x), y)
    assert abs(whole.item() - loss.item()) > 1e-6  # grouping changes the normalisation, hence the number
    assert grouped_forward_loss(a, x[:3], y[:3], 4, ce, contextlib.nullcontext()) is None  # single-image groups only


def test_bn_batch_and_precision_are_checked():
    from mopro_bench.registry import RunContext
    from mopro_bench.tasks.imagenet.finetune import ParamGroup, SupervisedTrainer, bn_groups

    assert bn_groups(256, 32) == 8 and bn_groups(32, 32) == 1 and bn_groups(64, 0) == 1
    with pytest.raises(BenchError, match="multiple of bn_batch"):
        bn_groups(48, 32)
    net = nn.Linear(2, 2)
    with pytest.raises(BenchError, match="precision"):
        SupervisedTrainer(net, [ParamGroup("h", list(net.parameters()), 0.1)], [], None,
                          TrainConfig(epochs=1, batch_size=2, precision="fp16"), RunContext(), run_key={})


# ------------------------------------------------------------------------------------------------ as released
def fake_train(n_classes: int, per_class: int) -> list[tuple[Path, int]]:
    return [(Path(f"train/n{c:08d}/n{c:08d}_{i}.JPEG"), c) for c in range(n_classes) for i in range(per_class)]


@pytest.mark.parametrize("fraction,ranks", [(0.01, 8), (0.1, 4)])
def test_as_released_union_has_the_expected_size(fraction, ranks):
    train = fake_train(100, 200)  # N = 20,000
    n = len(train)
    per = draw_as_released(train, fraction, ranks, seed=0)
    assert len(per) == ranks and all(len(r) == int(fraction * n) and len(set(r)) == len(r) for r in per)
    union = {i for r in per for i in r}
    expected = n * expected_union_fraction(fraction, ranks)
    assert expected_union_fraction(0.01, 8) == pytest.approx(0.0773, abs=1e-4)  # "1%" on 8 GPUs: 7.7% of the labels
    assert expected_union_fraction(0.1, 8) == pytest.approx(0.5695, abs=1e-4)  # "10%" on 8 GPUs: 57%
    assert expected_union_fraction(0.1, 4) == pytest.approx(0.3439, abs=1e-4)
    # the union of W independent uniform draws: its size has a standard deviation well under sqrt(expected)
    assert abs(len(union) - expected) < 4 * math.sqrt(expected)
    # not class-balanced: per-class counts of one rank's draw vary (a balanced draw would give the same count)
    counts = np.bincount([train[i][1] for i in per[0]], minlength=100)
    assert counts.max() - counts.min() >= 2


def test_as_released_is_deterministic_per_seed_and_independent_of_the_listing_order():
    train = fake_train(20, 50)
    a, b = draw_as_released(train, 0.1, 8, seed=3), draw_as_released(train, 0.1, 8, seed=3)
    assert a == b
    assert draw_as_released(train, 0.1, 8, seed=4) != a
    shuffled = list(reversed(train))
    c = draw_as_released(shuffled, 0.1, 8, seed=3)
    assert [[shuffled[i] for i in r] for r in c] == [[train[i] for i in r] for r in a]
    assert draw_as_released(train, 0.1, 4, seed=3) == a[:4]  # rank r's draw does not depend on how many there are
    sub = resolve_as_released(train, 0.1, 8, seed=3)
    assert len(sub.indices) == 8 * 100 and sub.extra["subset_union_size"] == len(set(sub.indices))
    assert sub.record()["subset_source"] == "as-released" and len(sub.record()["subset_rank_sha256"]) == 8


def test_as_released_epoch_order_gives_each_group_one_process_share():
    n, w = 13, 4
    for epoch in range(3):
        order = as_released_epoch_order(n, w, epoch, seed=0)
        assert len(order) == w * math.ceil(n / w)
        for r in range(w):
            mine = order[r::w]  # the strided BatchNorm group / DDP shard r
            assert all(r * n <= i < (r + 1) * n for i in mine)
            assert len(set(mine)) == len(mine) or n % w  # distinct unless padded by wrapping
        assert as_released_epoch_order(n, w, epoch, seed=0) == order
    assert as_released_epoch_order(n, w, 0, seed=0) != as_released_epoch_order(n, w, 1, seed=0)
    # over the epochs every process sees all of its own list
    seen = {i for e in range(30) for i in as_released_epoch_order(n, w, e, seed=0)}
    assert seen == set(range(n * w))


def test_as_released_task_trains_on_the_per_process_subsets(imagenet, tmp_path, cache):
    over = {**TINY, "batch_size": 4, "bn_batch": 2, "num_ranks": 2, "fraction": 0.25, "epochs": 1, "milestones": [],
            "lr_backbone": 1e-4, "lr_head": 1e-2}
    rec = run(load_checkpoint("random:resnet18"), "imagenet_1pct@mopro-as-released", imagenet, tmp_path, cache, over)
    d = rec["data"]
    n_train = d["train_images_total"]
    per = int(0.25 * n_train)
    assert d["subset_source"] == "as-released" and d["subset_ranks"] == 2 and d["subset_per_rank_size"] == per
    assert per <= d["subset_union_size"] <= 2 * per
    assert rec["details"]["history"][0]["samples"] == 2 * math.ceil(per / 2)  # one epoch = each process's share
    with pytest.raises(BenchError, match="subset-file does not apply"):
        run(load_checkpoint("random:resnet18"), "imagenet_1pct@mopro-as-released", imagenet, tmp_path / "c", cache, over,
            subset_file=str(Path(f"{imagenet}.subsets") / "1percent.txt"))
    # the record keeps the content fingerprints of the images the task read itself (the union of the subsets)
    fps = rec["data"]["fingerprints"]
    assert fps["imagenet/train-subset"]["n"] == d["subset_union_size"] and fps["imagenet/val"]["n"] == d["val_images"]



@pytest.mark.slow
def test_as_released_on_two_gloo_processes_matches_one_process_with_two_bn_groups(imagenet, tmp_path, cache):
    """num_ranks=2 as released: two DDP processes (each its own subset, BN over its own 2 images) and one process that
    splits every batch of 4 into 2 strided BatchNorm groups train on the same images in the same order and end with
    the same numbers. The crop is made deterministic (scale 1, no flip): augmentation draws differ per process."""
    import json
    import os
    import subprocess
    import sys

    over = {**TINY, "batch_size": 4, "bn_batch": 2, "num_ranks": 2, "fraction": 0.125, "epochs": 2, "milestones": [1],
            "lr_backbone": 1e-3, "lr_head": 1e-2, "crop_scale": [1.0, 1.0], "hflip": False}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "mopro_bench",
           "--device", "cpu", "--workers", "0", "--cache-dir", str(cache), "eval", "--ckpt", "random:resnet18",
           "--task", "imagenet_1pct@mopro-as-released", "--data", str(imagenet), "--results-dir", str(tmp_path / "ddp"),
           "--no-progress", "--out", str(tmp_path / "ddp.json")]
    for k, v in over.items():
        cmd += ["--set", f"{k}={json.dumps(v)}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    one = run(load_checkpoint("random:resnet18"), "imagenet_1pct@mopro-as-released", imagenet, tmp_path / "one", cache, over)
    assert ddp["details"]["world_size"] == 2 and one["details"]["world_size"] == 1
    assert ddp["data"]["subset_sha256"] == one["data"]["subset_sha256"]  # the same subsets whatever the world size
    hd, ho = ddp["details"]["history"], one["details"]["history"]
    assert [h["samples"] for h in hd] == [h["samples"] for h in ho]
    for a, b in zip(hd, ho):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4), (a, b)
        assert (a["top1"], a["top5"]) == pytest.approx((b["top1"], b["top5"]), abs=100 / 32 + 1e-9)  # at most 1 image
