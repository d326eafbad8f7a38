"""`compare` on records written by the real tasks: per-image data in dataset order, the synthetic-data flag, and a
paired bootstrap interval with its verdict from the CLI (generated ImageNet, 32-px crops, CPU)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mopro_bench.checkpoints import Head, load_checkpoint
from mopro_bench.checkpoints.heads import save_head
from mopro_bench.data import is_synthetic, synth_marker_path
from mopro_bench.data.imagenet import ImageNetFolder
from mopro_bench.evaluate import evaluate
from mopro_bench.features import extract_features
from mopro_bench.io import sha256_lines
from mopro_bench.registry import RunContext

TINY = ["--set", "image_size=32", "--set", "resize=36"]


def _val_ids(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p, _ in ImageNetFolder(root).samples("val")]


def _hits(rec: dict, metric: str = "top1") -> np.ndarray:
    return np.asarray(rec["details"]["per_image"][metric]["correct"])


def test_compare_reports_a_bootstrap_interval_on_task_records(synth_root, tmp_path, cli):
    torch.set_num_threads(1)
    root = synth_root("imagenet")
    glob = ["--device", "cpu", "--workers", "0", "--cache-dir", tmp_path / "cache"]
    res = tmp_path / "results"

    def ev(*args) -> dict:
        out = tmp_path / f"rec{len(list(tmp_path.glob('rec*.json')))}.json"
        code, _, err = cli(*glob, "eval", "--ckpt", "random:resnet18", "--data", root, *TINY, "--no-progress",
                           "--out", out, *args)
        assert code == 0, err
        return json.loads(out.read_text())

    # a linear head trained on the frozen backbone (@fast, saved) and a random one of the same shape
    lin = ev("--task", "imagenet_linear@fast", "--set", "epochs=20", "--set", "batch_size=64", "--set", "lr=0.01",
             "--results-dir", tmp_path / "linear", "--save-head", tmp_path / "fitted.pt")
    ck = load_checkpoint("random:resnet18")
    g = torch.Generator().manual_seed(3)
    save_head(tmp_path / "random.pt", torch.randn(1000, 512, generator=g) * 0.05, torch.zeros(1000), ck=ck,
              class_space="imagenet1k", protocol="test")
    a = ev("--task", "imagenet_val", "--head", tmp_path / "random.pt", "--name", "random-head", "--results-dir", res)
    b = ev("--task", "imagenet_val", "--head", tmp_path / "fitted.pt", "--name", "fitted-head", "--results-dir", res)
    ids = _val_ids(root)
    for rec in (lin, a, b):
        pi = rec["details"]["per_image"]
        assert rec["data"]["synthetic"] is True
        assert pi["ids_sha256"] == sha256_lines(ids) and pi["n"] == len(ids) == 32
        for m in ("top1", "top5"):
            assert 100 * _hits(rec, m).mean() == pytest.approx(rec["metrics"][m], abs=1e-9)
    # the saved head scored by imagenet_val gives the very hits of the linear probe's last evaluation
    assert (_hits(lin) == _hits(b)).all()
    assert b["metrics"]["top1"] > 35 and a["metrics"]["top1"] < 20  # 8 classes, chance 12.5%

    code, out, err = cli("compare", "random-head", "fitted-head", "--results-dir", res, "--format", "json")
    assert code == 0, err
    rows = {r["metric"]: r for r in json.loads(out)["rows"]}
    assert set(rows) == {"top1", "top5"}
    for m, r in rows.items():
        assert r["test"] == "paired bootstrap over test images" and r["n"] == 32 and r["note"] == ""
        assert r["diff"] == pytest.approx(100 * (_hits(b, m) - _hits(a, m)).mean())
        assert r["low"] <= r["diff"] <= r["high"]
    r = rows["top1"]
    assert r["low"] > 0 and r["p_value"] < 0.05 and r["significant"] is True
    code, out, _ = cli("compare", "random-head", "fitted-head", "--results-dir", res)
    line = next(ln for ln in out.splitlines() if ln.startswith("imagenet_val@mopro") and " top1 " in ln)
    assert "paired bootstrap over test images" in line and line.rstrip().endswith("yes (B better)")

    # the same head under another name: the same hits, a zero difference, not significant
    ev("--task", "imagenet_val", "--head", tmp_path / "fitted.pt", "--name", "fitted-copy", "--results-dir", res)
    code, out, _ = cli("compare", "fitted-head", "fitted-copy", "--results-dir", res, "--format", "json", "--metric", "top1")
    (r,) = json.loads(out)["rows"]
    assert r["test"] == "paired bootstrap over test images"
    assert (r["diff"], r["low"], r["high"], r["significant"]) == (0.0, 0.0, 0.0, False)


def test_finetuning_records_the_last_epochs_hits(synth_root, tmp_path):
    """imagenet_linear@moco: the hits of the last evaluation equal the saved head scored image by image."""
    torch.set_num_threads(1)
    root = synth_root("imagenet")
    cache = tmp_path / "cache"
    rec = evaluate(load_checkpoint("random:resnet18"), "imagenet_linear@moco", root, device="cpu", cache_dir=cache,
                   results_dir=tmp_path / "res", progress=False, options={"save_head": str(tmp_path / "h.pt")},
                   overrides={"image_size": 32, "resize": 36, "batch_size": 32, "epochs": 1, "milestones": [], "lr": 1.0}).record
    pi = rec["details"]["per_image"]
    assert pi["source"] == "val evaluation after epoch 1" and rec["data"]["synthetic"] is True
    ck = load_checkpoint("random:resnet18")
    val = ImageNetFolder(root).samples("val")
    feats = extract_features(ck, [p for p, _ in val], RunContext(cache_dir=cache, progress=False), dataset_id="v",
                             image_size=32, resize=36)
    head = torch.load(tmp_path / "h.pt", weights_only=True)
    logits = torch.from_numpy(feats) @ head["weight"].T + head["bias"]
    labels = np.array([y for _, y in val])
    expect1 = [int(int(np.argmax(row)) == y) for row, y in zip(logits.numpy(), labels)]
    expect5 = [int(y in np.argsort(-row)[:5]) for row, y in zip(logits.numpy(), labels)]
    assert pi["top1"]["correct"] == expect1 and pi["top5"]["correct"] == expect5
    assert 100 * np.mean(expect1) == pytest.approx(rec["metrics"]["top1"])
    assert pi["ids_sha256"] == sha256_lines(_val_ids(root))


def _ddp_worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from mopro_bench.tasks.imagenet.scoring import evaluate_hits

    torch.set_num_threads(1)  # a forked child: keep OpenMP out of it
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        hits = evaluate_hits(_ToyNet(), _ToySet(), torch.device("cpu"), batch_size=2, progress=False).hits
        if rank == 0:
            np.save(out, hits)
    finally:
        dist.destroy_process_group()


class _ToySet(torch.utils.data.Dataset):
    """11 items (shards of 6 and 5): x_i = one-hot-ish scores; label i % 7; every third item is wrong for top-1."""

    def __len__(self):
        return 11

    def __getitem__(self, i):
        x = torch.zeros(7)
        x[(i % 7 + (1 if i % 3 == 0 else 0)) % 7] = 2.0
        x[i % 7] += 1.0
        return x, i % 7, i


class _ToyNet(torch.nn.Module):
    def forward(self, x):
        return x


def test_hits_are_in_dataset_order_under_two_processes(tmp_path):
    import torch.multiprocessing as mp

    init = f"file://{tmp_path / 'store'}"
    # fork: the children need no re-import (seconds on a busy machine)
    mp.start_processes(_ddp_worker, args=(2, init, str(tmp_path / "hits.npy")), nprocs=2, join=True, start_method="fork")
    from mopro_bench.tasks.imagenet.scoring import evaluate_hits

    one = evaluate_hits(_ToyNet(), _ToySet(), torch.device("cpu"), batch_size=2, progress=False)
    two = np.load(tmp_path / "hits.npy")
    assert one.hits is not None and (two == one.hits).all()
    assert one.hits[:, 0].tolist() == [0 if i % 3 == 0 else 1 for i in range(11)] and one.hits[:, 1].all()


def test_robustness_records_per_image_top1(synth_root, tmp_path):
    torch.set_num_threads(1)
    root = synth_root("imagenet-r")
    g = torch.Generator().manual_seed(0)
    ck = load_checkpoint("random:resnet18")
    ck.heads["classifier"] = Head("classifier", {"weight": torch.randn(1000, 512, generator=g), "bias": torch.zeros(1000)},
                                  num_classes=1000, class_space="imagenet1k")
    kw = dict(device="cpu", cache_dir=tmp_path / "cache", results_dir=tmp_path / "res", progress=False)
    small = {"resize": 32, "crop": 32, "calib_bin_size": 4}
    rec = evaluate(ck, "imagenet_r", root, overrides=small, **kw).record
    pi = rec["details"]["per_image"]
    assert pi["n"] == rec["data"]["n_images"] == 32 and pi["ids_sha256"] == rec["data"]["list_sha256"]
    assert 100 * np.mean(pi["top1"]["correct"]) == pytest.approx(rec["metrics"]["top1"])
    assert rec["data"]["synthetic"] is True
    frac = evaluate(ck, "imagenet_r", root, overrides={**small, "percent": False}, **kw).record
    assert frac["details"]["per_image"]["top1"] == {"values": pi["top1"]["correct"], "scale": 1.0}


def test_synthetic_marker(tmp_path):
    from mopro_bench.data.synth import synth

    voc = tmp_path / "voc"
    summary = synth("voc07", voc, trainval=12, test=12)
    assert summary["marker"] == str(synth_marker_path(voc))
    assert is_synthetic(voc) and is_synthetic(voc / "VOCdevkit") and is_synthetic(voc / "VOCdevkit" / "VOC2007")
    marker = json.loads(synth_marker_path(voc).read_text())
    assert marker["kind"] == "voc07" and marker["layout"] == voc.name and len(marker["probe"]) == 3
    # a copy without its marker, and another tree put where a generated one was, are not flagged
    copy = tmp_path / "copy"
    shutil.copytree(voc, copy)
    assert not is_synthetic(copy)
    shutil.copy(synth_marker_path(voc), synth_marker_path(copy))
    assert is_synthetic(copy)
    first = copy / next(iter(marker["probe"]))
    first.write_bytes(first.read_bytes() + b"x")
    assert not is_synthetic(copy)
    assert not is_synthetic(tmp_path / "missing") and not is_synthetic(Path("/"))
