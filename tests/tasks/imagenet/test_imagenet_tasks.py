"""ImageNet tasks end to end on generated data (CPU, 32-px crops, protocol constants shrunk with overrides)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mopro_bench.checkpoints import Head, load_checkpoint
from mopro_bench.data.common import ImageList, eval_transform
from mopro_bench.data.imagenet import ImageNetFolder
from mopro_bench.errors import BenchError
from mopro_bench.evaluate import evaluate
from mopro_bench.features import extract_features
from mopro_bench.io import sha256_file
from mopro_bench.registry import RunContext
from mopro_bench.tasks.imagenet.finetune import fit_linear_on_features
from mopro_bench.tasks.imagenet.subsets import read_simclr_list, subset_sha256

TINY = {"image_size": 32, "resize": 36}
TRAIN_TINY = {**TINY, "batch_size": 16, "epochs": 1, "milestones": []}


def interrupted_after_first_epoch(monkeypatch, start) -> None:
    """Run ``start()`` with the finetuning loop stopped (an exception) at the end of its first epoch, as a killed run
    would be, leaving its work dir to resume from."""
    import mopro_bench.tasks.imagenet.finetune as ft

    class Stop(Exception):
        pass

    def stop(epoch):
        raise Stop

    orig = ft.SupervisedTrainer.__init__
    monkeypatch.setattr(ft.SupervisedTrainer, "__init__", lambda self, *a, **kw: orig(self, *a, **{**kw, "on_epoch_end": stop}))
    with pytest.raises(Stop):
        start()
    monkeypatch.setattr(ft.SupervisedTrainer, "__init__", orig)


@pytest.fixture(scope="module")
def imagenet(synth_root):
    return synth_root("imagenet")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("imagenet_cache")


def calibrated_resnet18(imagenet) -> dict:
    """random:resnet18 whose BatchNorm running statistics are the generated train set's (a pretrained network's are
    calibrated to its data; a random one's are 0/1, which the first train-mode steps of finetuning would overwrite)."""
    ck = load_checkpoint("random:resnet18")
    bb = ck.backbone.train()
    for m in bb.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    ds = ImageList([p for p, _ in ImageNetFolder(imagenet).samples("train")], transform=eval_transform(32, 36))
    with torch.no_grad():
        for x, _, _ in DataLoader(ds, batch_size=32):
            bb(x)
    return {k: v.clone() for k, v in bb.state_dict().items()}


def make_ck(backbone_state, head_state=None, space="webvision1k"):
    ck = load_checkpoint("random:resnet18")
    ck.backbone.load_state_dict(backbone_state)
    ck.path = ck.name = "random:resnet18+bn-calibrated"  # its own feature-cache identity
    if head_state is not None:
        ck.heads["classifier"] = Head("classifier", {k: v.clone() for k, v in head_state.items()}, num_classes=1000,
                                      class_space=space)
    return ck


@pytest.fixture(scope="module")
def fitted(imagenet, cache):
    """A BN-calibrated random resnet18 and a 1000-way head fitted on its features of the generated train set (what a
    classifier pretrained on the same classes would be), plus the head's val top-1 computed independently."""
    bb_state = calibrated_resnet18(imagenet)
    ck = make_ck(bb_state)
    ds = ImageNetFolder(imagenet)
    tr, va = ds.samples("train"), ds.samples("val")
    ctx = RunContext(cache_dir=cache, progress=False)
    xtr = extract_features(ck, [p for p, _ in tr], ctx, dataset_id="t", image_size=32, resize=36)
    xva = extract_features(ck, [p for p, _ in va], ctx, dataset_id="v", image_size=32, resize=36)
    fit = fit_linear_on_features(xtr, np.array([y for _, y in tr]), xva, np.array([y for _, y in va]), num_classes=1000,
                                 epochs=40, batch_size=64, lr=1e-2, progress=False)
    return bb_state, {"weight": fit.weight, "bias": fit.bias}, fit.final["top1"]


def run(ck, task, root, tmp_path, cache, overrides=None, **options):
    return evaluate(ck, task, root, overrides=overrides or {}, device="cpu", workers=0, cache_dir=cache,
                    results_dir=tmp_path / "results", options=options, progress=False).record


def test_head_from_a_matching_classifier_starts_above_chance_and_fresh_does_not(imagenet, tmp_path, cache, fitted):
    bb, state, fitted_top1 = fitted
    assert fitted_top1 > 35  # 8 classes: chance 12.5%
    rec = run(make_ck(bb, state), "imagenet_1pct@mopro", imagenet, tmp_path, cache, {**TINY, "epochs": 0})
    assert rec["details"]["classifier_init"]["rule_applied"] == "checkpoint"
    assert rec["metrics"]["top1"] == pytest.approx(fitted_top1)  # epoch 0 = the checkpoint's classifier, centre crop
    # same checkpoint, classifier in another class space -> a fresh head, at chance or below
    rec = run(make_ck(bb, state, "webvision5k"), "imagenet_1pct@mopro", imagenet, tmp_path, cache, {**TINY, "epochs": 0})
    assert rec["details"]["classifier_init"]["rule_applied"] == "fresh"
    assert "webvision5k" in rec["details"]["classifier_init"]["text"]
    assert rec["metrics"]["top1"] <= 25
    # training from it (head at the protocol's lr; the backbone held still because a *random* backbone's gradients
    # explode, unlike a pretrained one's) keeps the initialised head well above chance
    rec = run(make_ck(bb, state), "imagenet_1pct@mopro", imagenet, tmp_path, cache,
              {**TRAIN_TINY, "batch_size": 4, "lr_backbone": 0.0})
    assert rec["metrics"]["top1"] > 30
    assert rec["selection"].startswith("best epoch")  # @mopro reports the best of the evaluated epochs, as MoPro does
    assert rec["details"]["best_epoch"] == 1
    assert rec["metrics"]["best_top1"] == rec["metrics"]["top1"] == rec["metrics"]["last_top1"]  # one epoch


@pytest.mark.slow
def test_fresh_head_learns(imagenet, tmp_path, cache, fitted):
    bb, _, _ = fitted
    rec = run(make_ck(bb), "imagenet_10pct@mopro", imagenet, tmp_path, cache,
              {**TINY, "fraction": 0.5, "epochs": 4, "batch_size": 16, "milestones": [3], "lr_head": 0.02,
               "lr_backbone": 0.001, "eval_every": 2})
    assert rec["details"]["classifier_init"]["rule_applied"] == "fresh"
    assert rec["details"]["evaluated_epochs"] == [2, 4]
    assert rec["metrics"]["top1"] > 30  # 8 classes: chance 12.5%
    assert rec["metrics"]["best_top1"] >= rec["metrics"]["top1"]
    assert rec["data"]["subset_size"] == 64 and rec["data"]["subset_per_class_min"] == 8


@pytest.mark.parametrize("task,lst,n,lrs", [("imagenet_1pct@swav", "1percent.txt", 8, (0.02, 5.0)),
                                            ("imagenet_10pct@swav", "10percent.txt", 16, (0.01, 0.2))])
def test_swav_honours_the_simclr_list(imagenet, tmp_path, cache, task, lst, n, lrs):
    lst = Path(f"{imagenet}.subsets") / lst
    names = read_simclr_list(lst)
    rec = run(load_checkpoint("random:resnet18"), task, imagenet, tmp_path, cache,
              {**TRAIN_TINY, "batch_size": 4, "lr_backbone": 1e-4, "lr_head": 1e-3}, subset_file=str(lst))
    d = rec["data"]
    assert d["subset_source"] == "file" and d["subset_size"] == len(names) == n
    assert d["subset_sha256"] == subset_sha256(names) and d["subset_file"] == str(lst)
    assert rec["details"]["history"][0]["samples"] == len(names)  # the epoch saw exactly the listed images
    assert rec["details"]["classifier_init"]["rule_applied"] == "fresh"
    assert "nn.Linear's default init" in rec["details"]["classifier_init"]["text"]  # as SwAV's eval_semisup.py
    from mopro_bench.registry import get_task

    p = get_task(task).protocol
    assert (p.lr_backbone, p.lr_head, p.epochs, p.milestones, p.gamma, p.weight_decay) == (*lrs, 20, (12, 16), 0.2, 0.0)


@pytest.mark.slow
def test_task_resume_after_interruption(imagenet, tmp_path, cache, monkeypatch):
    over = {**TRAIN_TINY, "epochs": 2, "batch_size": 4, "fraction": 0.25, "lr_backbone": 1e-4, "lr_head": 1e-2}
    ref = run(load_checkpoint("random:resnet18"), "imagenet_1pct@mopro", imagenet, tmp_path / "ref", cache, over)
    interrupted_after_first_epoch(
        monkeypatch, lambda: run(load_checkpoint("random:resnet18"), "imagenet_1pct@mopro", imagenet, tmp_path / "b", cache,
                                 over))
    with pytest.raises(BenchError, match="interrupted run .*--resume"):
        run(load_checkpoint("random:resnet18"), "imagenet_1pct@mopro", imagenet, tmp_path / "b", cache, over)
    rec = run(load_checkpoint("random:resnet18"), "imagenet_1pct@mopro", imagenet, tmp_path / "b", cache, over, resume=True)
    assert rec["details"]["resumed_from_epoch"] == 1
    assert rec["metrics"] == ref["metrics"]
    assert [h["loss"] for h in rec["details"]["history"]] == [h["loss"] for h in ref["details"]["history"]]


def test_swav_without_list_is_refused_and_seeded_draw_reproducible(imagenet, tmp_path, cache, cli):
    code, _, err = cli("--device", "cpu", "--workers", "0", "--cache-dir", cache, "eval", "--ckpt", "random:resnet18",
                       "--task", "imagenet_1pct@swav", "--data", imagenet, "--results-dir", tmp_path, "--no-progress")
    assert code == 2 and "no --subset-file" in err and "subset_source=seeded" in err
    a = run(load_checkpoint("random:resnet18"), "imagenet_1pct@mopro", imagenet, tmp_path / "a", cache,
            {**TRAIN_TINY, "epochs": 0, "fraction": 0.25})
    b = run(load_checkpoint("random:resnet18"), "imagenet_1pct@mopro", imagenet, tmp_path / "b", cache,
            {**TRAIN_TINY, "epochs": 0, "fraction": 0.25})
    assert a["data"]["subset_sha256"] == b["data"]["subset_sha256"]
    assert a["data"]["subset_per_class_min"] == a["data"]["subset_per_class_max"] == 4
    saved = Path(next(f for f in a["artifacts"] if f.endswith(".subset.txt")))
    assert saved.is_file() and subset_sha256(read_simclr_list(saved)) == a["data"]["subset_sha256"]
    assert a["data"]["subset_file"] is None and a["data"]["subset_file_sha256"] == sha256_file(saved)


def test_linear_moco_runs_and_saves_a_head(imagenet, tmp_path, cache):
    ck = load_checkpoint("random:resnet18")
    before = copy.deepcopy(ck.backbone.state_dict())
    head = tmp_path / "head.pt"
    rec = run(ck, "imagenet_linear@moco", imagenet, tmp_path, cache, {**TRAIN_TINY, "batch_size": 32, "lr": 1.0},
              save_head=str(head))
    assert set(rec["metrics"]) == {"top1", "top5", "best_top1", "last_top1"}
    assert rec["protocol"]["params"]["backbone_bn"] == "eval"
    for k, v in ck.backbone.state_dict().items():  # the checkpoint's backbone is untouched
        assert torch.equal(v, before[k]), k
    obj = torch.load(head, weights_only=True)
    assert obj["weight"].shape == (1000, 512) and obj["protocol"] == "imagenet_linear@moco"


def test_linear_fast_head_is_scored_identically_by_imagenet_val(imagenet, tmp_path, cache):
    head = tmp_path / "fast_head.pt"
    rec = run(load_checkpoint("random:resnet18"), "imagenet_linear@fast", imagenet, tmp_path, cache,
              {**TINY, "epochs": 20, "batch_size": 64, "lr": 1e-2}, save_head=str(head))
    assert rec["metrics"]["top1"] > 35  # chance 12.5%
    assert rec["details"]["evaluated_epochs"] == list(range(1, 21))
    assert rec["metrics"]["best_top1"] == max(h["top1"] for h in rec["details"]["history"])
    val = run(load_checkpoint("random:resnet18"), "imagenet_val", imagenet, tmp_path, cache, TINY, head=str(head))
    assert val["metrics"]["top1"] == pytest.approx(rec["metrics"]["top1"], abs=100 / 32 + 1e-6)  # at most one image
    assert val["details"]["classifier"]["source"] == str(head)


def test_imagenet_val_and_webvision_val_score_the_own_classifier(imagenet, synth_root, tmp_path, cache, fitted):
    bb, state, fitted_top1 = fitted
    rec = run(make_ck(bb, state, "imagenet1k"), "imagenet_val", imagenet, tmp_path, cache, TINY)
    assert rec["metrics"]["top1"] == pytest.approx(fitted_top1)
    assert rec["metrics"]["top5"] >= rec["metrics"]["top1"]
    wv = synth_root("webvision")  # same class looks, same label space: the head transfers
    rec = run(make_ck(bb, state, "webvision1k"), "webvision_val", wv, tmp_path, cache, TINY)
    assert rec["metrics"]["top1"] > 25 and rec["data"]["num_class"] == 1000


def test_imagenet_val_without_classifier_names_imagenet_linear(imagenet, tmp_path, cache, cli):
    code, out, err = cli("--device", "cpu", "--workers", "0", "--cache-dir", cache, "eval", "--ckpt", "random:resnet18",
                         "--task", "imagenet_val", "--data", imagenet, "--results-dir", tmp_path, "--no-progress")
    lines = [ln for ln in err.splitlines() if not ln.startswith("warning:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "has no classifier" in lines[0] and "imagenet_linear" in lines[0] and "--head" in lines[0]
    code, _, err = cli("--device", "cpu", "eval", "--ckpt", "random:resnet18", "--task", "webvision_val",
                       "--data", imagenet, "--results-dir", tmp_path, "--head", "x.pt")
    assert code == 2 and "--head does not apply to task webvision_val" in err
