"""Issue 19's acceptance: a ViT-S/16 and a ConvNeXt-T, random weights written in their projects' published layouts,
run end to end on generated data through every task whose protocols accept their family -- low-shot VOC / Places,
linear probe, 1% / 10% finetuning (ViT), ImageNet-R / -A -- and the features the tasks used are a plain timm forward.
Real-size networks (22M / 28M parameters) on 32-px crops keep it to seconds per task."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from mopro_bench.checkpoints import load_checkpoint
from mopro_bench.checkpoints.synth import random_family, write_layout
from mopro_bench.data.common import ImageList, eval_transform
from mopro_bench.data.voc import VOC07
from mopro_bench.features import CACHE_STATS
from mopro_bench.registry import RunContext, get_task
from mopro_bench.tasks.lowshot.features import svm_features

pytestmark = pytest.mark.slow
torch.set_num_threads(1)

SMALL = ["--set", "image_size=32", "--set", "resize=37"]
LOWSHOT = ["--set", "voc_lowshot:ks=[1,2]", "--set", "voc_lowshot:num_samples=2", "--set", "places_lowshot:ks=[1]",
           "--set", "places_lowshot:num_samples=2"]
LINEAR = ["--set", "imagenet_linear:epochs=1", "--set", "imagenet_linear:batch_size=32"]
IBOT = [a for kv in ("epochs=1", "batch_size=8", "ra_ranks=2", "ra_round=8", "warmup_epochs=0") for a in ("--set", kv)]
ROBUST = [a for t in ("imagenet_r", "imagenet_a") for kv in ("crop=32", "resize=37", "calib_bin_size=8")
          for a in ("--set", f"{t}:{kv}")]


@pytest.fixture(scope="module")
def roots(synth_root):
    return {k: synth_root(k) for k in ("voc07", "places205", "imagenet", "imagenet-r", "imagenet-a")}


def _eval(cli, tmp_path, ckpt, tasks, roots, *sets):
    kinds = {"voc07", "places205", "imagenet", "imagenet-r", "imagenet-a"}
    data = [a for k in sorted(kinds) for a in ("--data", f"{k}={roots[k]}")]
    code, out, err = cli("--device", "cpu", "--workers", "0", "--cache-dir", str(tmp_path / "cache"), "eval",
                         "--ckpt", str(ckpt), "--task", ",".join(tasks), *data, "--results-dir", str(tmp_path / "res"),
                         "--no-progress", *sets)
    assert code == 0, err[-3000:]
    recs = [json.loads(p.read_text()) for p in (tmp_path / "res").rglob("*.json")]
    return {r["protocol"]["id"].split("+")[0]: r for r in recs}


def _check(recs, tasks, family, fmt, arch):
    assert sorted(recs) == sorted(tasks)
    for tid, r in recs.items():
        ck = r["checkpoint"]
        assert (ck["family"], ck["format"], ck["arch"]) == (family, fmt, arch), tid
        assert ck["coverage"]["loaded"] == ck["coverage"]["expected"], tid  # 100% of the trunk, nothing partial
        assert r["metrics"] and all(math.isfinite(v) for v in r["metrics"].values()), (tid, r["metrics"])
        assert family in r["protocol"]["families"], tid


def test_vit_s16_in_published_layouts_through_every_vit_task(cli, roots, tmp_path):
    vit = random_family("vit_small_patch16_224", seed=1)
    trunk = vit.state_dict()
    dino = write_layout("dino-vit", trunk, tmp_path / "dino" / "checkpoint.pth")  # DINO's training checkpoint
    tasks = ["voc_lowshot@mopro-vit", "places_lowshot@mopro-vit", "imagenet_linear@dino"]
    _eval(cli, tmp_path / "a", dino, tasks, roots, *SMALL, *LOWSHOT, *LINEAR)
    subsets = Path(f"{roots['imagenet']}.subsets")  # the SimCLR lists iBOT trains on, as data synth writes them
    for task, lst in (("imagenet_1pct@ibot", "1percent.txt"), ("imagenet_10pct@ibot", "10percent.txt")):
        recs = _eval(cli, tmp_path / "a", dino, [task], roots, *SMALL, *IBOT, "--subset-file", str(subsets / lst))
        tasks.append(task)
    _check(recs, tasks, "vit", "dino", "vit_small_patch16_224")
    assert recs["voc_lowshot@mopro-vit"]["details"]["backbone"]["feature_layer"] == "cls"
    assert recs["imagenet_1pct@ibot"]["data"]["subset_source"] == "file"

    # the low-shot features in the cache are timm's: same weights in timm's own ViT, the protocol's bicubic transform
    ck = load_checkpoint(dino)
    ctx = RunContext(cache_dir=tmp_path / "a" / "cache", progress=False)
    proto = get_task("voc_lowshot@mopro-vit", {"image_size": 32, "resize": 37}).protocol
    voc = VOC07(roots["voc07"])
    hits = CACHE_STATS["hits"]
    cached = svm_features(ck, voc.paths("test"), voc.ids("test"), ctx, proto, "voc07/test", "VOC07 test")
    assert CACHE_STATS["hits"] == hits + 1  # read back from the cache the task wrote, not recomputed
    ref = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, dynamic_img_size=True).eval()
    ref.load_state_dict(trunk, strict=True)
    ds = ImageList(voc.paths("test")[:6], transform=eval_transform(32, 37, ck.preprocess, interpolation="bicubic"))
    with torch.no_grad():
        f = ref(torch.stack([ds[i][0] for i in range(len(ds))])).double().numpy()
    f /= np.linalg.norm(f, axis=1, keepdims=True) + proto.feature_norm_eps
    np.testing.assert_allclose(cached[:6], f, rtol=0, atol=1e-5)

    # ImageNet-R / -A score a classifier: the same ViT as a timm hub file with its 1000-way head
    hub = write_layout("timm-vit", trunk, tmp_path / "hub" / "pytorch_model.bin")
    recs = _eval(cli, tmp_path / "b", hub, ["imagenet_r@hendrycks", "imagenet_a@hendrycks"], roots, *ROBUST)
    _check(recs, ["imagenet_r@hendrycks", "imagenet_a@hendrycks"], "vit", "timm", "vit_small_patch16_224")

    # and the ResNet protocols refuse it, one line each, no record
    code, _, err = cli("--cache-dir", str(tmp_path / "cache"), "eval", "--ckpt", str(dino), "--task", "voc_lowshot@mopro",
                       "--data", str(roots["voc07"]), "--results-dir", str(tmp_path / "c"), "--no-progress")
    assert code == 2 and "use voc_lowshot@mopro-vit" in err and not list((tmp_path / "c").rglob("*.json"))


def test_convnext_t_in_facebooks_layout_through_every_convnext_task(cli, roots, tmp_path):
    cnx = random_family("convnext_tiny", seed=2)
    fb = write_layout("convnext-fb", cnx.state_dict(), tmp_path / "convnext_tiny_1k_224.pth")  # {"model": ...} + head
    tasks = ["voc_lowshot@mopro", "places_lowshot@mopro", "imagenet_linear@fast", "imagenet_r@hendrycks",
             "imagenet_a@hendrycks"]
    recs = _eval(cli, tmp_path, fb, tasks, roots, *SMALL, *LOWSHOT, *ROBUST,
                 "--set", "imagenet_linear:epochs=2")
    _check(recs, tasks, "convnext", "convnext", "convnext_tiny")
    assert recs["voc_lowshot@mopro"]["checkpoint"]["heads"]["classifier"]["class_space"] == "imagenet1k"
    # the ImageNet-R logits are timm's ConvNeXt-T with the same weights and head
    ref = timm.create_model("convnext_tiny", pretrained=False, num_classes=1000).eval()
    ck = load_checkpoint(fb)
    sd = dict(ck.backbone.state_dict())
    sd.update({f"head.fc.{k}": v for k, v in ck.heads["classifier"].state_dict.items()})
    ref.load_state_dict(sd, strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours = ck.classifier()(ck.backbone.eval()(x))
        torch.testing.assert_close(ours, ref(x), rtol=0, atol=1e-4)
    # a ConvNeXt has no published 1% / 10% protocol: refused, naming none to use
    code, _, err = cli("--cache-dir", str(tmp_path / "cache"), "eval", "--ckpt", str(fb), "--task", "imagenet_1pct",
                       "--data", str(roots["imagenet"]), "--results-dir", str(tmp_path / "c"), "--no-progress")
    assert code == 2 and "has no protocol for convnext backbones" in err, err
    assert Path(fb).is_file()
