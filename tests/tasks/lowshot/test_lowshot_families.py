"""Low-shot SVMs on every backbone family: ViTs on ``@mopro-vit`` (CLS token after the final LayerNorm, bicubic
resize), ConvNeXts on ``@mopro`` (pooled feature), refusals of the wrong family or feature layer (exit 2, one line),
and the cached features against a plain timm forward of the same weights on the same transformed images."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mopro_bench.results import read_record, validate_record

VIT = "random:vit_small_patch16_224"
VOC_SET = ["--set", "image_size=32", "--set", "resize=37", "--set", "ks=[1,2]", "--set", "num_samples=2"]
PLACES_SET = ["--set", "image_size=32", "--set", "resize=36", "--set", "ks=[1,2]", "--set", "num_samples=2"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("familycache")


def _run(cli, tmp_path, cache, *argv):
    code, out, err = cli("eval", *argv, "--cache-dir", cache, "--results-dir", tmp_path / "res", "--no-progress")
    assert code == 0, err
    rec = read_record(out.strip().splitlines()[-1].split("result: ")[1])
    validate_record(rec)
    assert rec["metrics"] and all(math.isfinite(v) for v in rec["metrics"].values())
    return rec


def _cached(cache: Path, dataset: str) -> tuple[dict, np.ndarray]:
    """The one feature-cache entry of ``dataset`` (its key's description and the array)."""
    metas = [(p, json.loads(p.read_text())) for p in sorted((Path(cache) / "features").glob("*.json"))]
    hits = [(p, m) for p, m in metas if m["dataset"] == dataset]
    assert len(hits) == 1, [m["dataset"] for _, m in metas]
    return hits[0][1], np.load(hits[0][0].with_suffix(".npy"))


def test_vit_protocols_are_mopros_svm_constants_on_the_cls_token():
    from mopro_bench.registry import get_task

    for task in ("voc_lowshot", "places_lowshot"):
        mopro, vit = get_task(f"{task}@mopro").protocol, get_task(f"{task}@mopro-vit").protocol
        a, b = mopro.params(), vit.params()
        assert {k: b[k] for k in b if a.get(k) != b[k]} == {"feature": b["feature"], "feature_layer": "cls",
                                                                "interpolation": "bicubic"}
        assert set(b) - set(a) == {"interpolation"} and (b["resize"], b["image_size"]) == (256, 224)
        assert vit.families == ("vit",) and mopro.families == ("resnet", "convnext")
        assert get_task(f"{task}@mopro-vit", {"interpolation": "bilinear"}).protocol_id.startswith(f"{task}@mopro-vit+")
    for g in ("goyal19", "goyal19-published"):
        assert get_task(f"voc_lowshot@{g}").protocol.families == ("resnet",)


@pytest.mark.slow
def test_vit_end_to_end_on_voc_and_places(cli, synth_root, tmp_path, cache):
    from mopro_bench.backbones.vit import VisionTransformerBackbone

    voc = _run(cli, tmp_path, cache, "--ckpt", VIT, "--task", "voc_lowshot@mopro-vit", "--data", synth_root("voc07"),
               *VOC_SET)
    places = _run(cli, tmp_path, cache, "--ckpt", VIT, "--task", "places_lowshot@mopro-vit", "--data",
                  synth_root("places205"), *PLACES_SET)
    for rec, metric, test_id in ((voc, "mAP", "voc07/test#cls"), (places, "top1", "places205/val#cls")):
        assert rec["protocol"]["name"] == "mopro-vit" and rec["protocol"]["families"] == ["vit"]
        assert rec["protocol"]["id"].startswith(f"{rec['task']}@mopro-vit+")  # tiny sizes: a modified protocol
        assert rec["protocol"]["params"]["interpolation"] == "bicubic" and rec["protocol"]["params"]["costs"] == [0.5]
        assert rec["checkpoint"]["family"] == "vit" and set(rec["metrics"]) == {
            f"{metric}_k1", f"{metric}_k1_std", f"{metric}_k2", f"{metric}_k2_std"}
        b = rec["details"]["backbone"]
        assert (b["family"], b["feature_layer"], b["interpolation"], b["feature_dim"]) == ("vit", "cls", "bicubic", 384)
        assert b["feature"] == b["svm_feature"] == VisionTransformerBackbone.feature
        assert rec["details"]["features"]["test"][1] == 384
        assert test_id in rec["data"]["fingerprints"]  # the CLS features' own cache / data id
    assert voc["protocol"]["params"]["class_weight_pos"] == 2.0 and voc["details"]["lowshot"]["2"]["runs"][0]["n_train"] == 40
    assert places["details"]["lowshot"]["1"]["runs"][0]["n_train"] == 205
    meta, _ = _cached(cache, "voc07/test#cls")
    assert meta["transform"] == "resize37-centercrop32-bicubic"


@pytest.mark.slow
def test_convnext_on_the_pooled_feature_protocol(cli, synth_root, tmp_path):
    """ConvNeXt on voc_lowshot@mopro: the protocol's bilinear transform, the pooled feature (GAP -> head LayerNorm),
    equal to a plain timm ConvNeXt's pre-logits on the same weights and images."""
    import timm.models.convnext as tc

    from mopro_bench.backbones.convnext import ConvNeXtBackbone
    from mopro_bench.checkpoints import load_checkpoint
    from mopro_bench.data.common import eval_transform, load_rgb
    from mopro_bench.data.voc import VOC07

    cache = tmp_path / "cache"
    root = synth_root("voc07")
    rec = _run(cli, tmp_path, cache, "--ckpt", "random:convnext_tiny", "--task", "voc_lowshot", "--data", root, *VOC_SET)
    assert rec["protocol"]["name"] == "mopro" and rec["checkpoint"]["family"] == "convnext"
    b = rec["details"]["backbone"]
    assert (b["family"], b["feature_layer"], b["interpolation"], b["feature_dim"]) == ("convnext", "pool5", "bilinear", 768)
    assert b["feature"] == ConvNeXtBackbone.feature
    meta, cached = _cached(cache, "voc07/test")  # the ResNet protocols' cache id and transform, unchanged
    assert meta["transform"] == "resize37-centercrop32"
    ck = load_checkpoint("random:convnext_tiny", seed=0)
    ref_net = tc.ConvNeXt(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), num_classes=0).eval()
    ref_net.load_state_dict(ck.backbone.state_dict())
    tf = eval_transform(32, 37, ck.preprocess)
    x = torch.stack([tf(load_rgb(p)) for p in VOC07(root).paths("test")])
    with torch.no_grad():
        ref = ref_net(x).numpy()
    np.testing.assert_allclose(cached, ref, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_vit_cached_features_are_a_plain_timm_forward(synth_root, tmp_path):
    """The ViT protocol's features (in the cache and as the SVMs get them) are timm's VisionTransformer forward
    (CLS token after the final norm) of the same weights on eval_transform(..., interpolation="bicubic") images,
    at 48 px (a 3x3 patch grid: position embeddings resampled from 14x14); bilinear images would differ."""
    from timm.models.vision_transformer import VisionTransformer

    from mopro_bench.checkpoints import load_checkpoint
    from mopro_bench.data.common import eval_transform, load_rgb
    from mopro_bench.data.voc import VOC07
    from mopro_bench.evaluate import evaluate
    from mopro_bench.registry import RunContext, get_task
    from mopro_bench.tasks.lowshot.features import svm_features

    root, cache = synth_root("voc07"), tmp_path / "cache"
    ovr = {"image_size": 48, "resize": 55, "ks": [1], "num_samples": 1}
    rec = evaluate(VIT, "voc_lowshot@mopro-vit", root, overrides=ovr, cache_dir=cache, results_dir=tmp_path / "res",
                   progress=False).record
    assert rec["details"]["features"]["test"][1] == 384
    meta, cached = _cached(cache, "voc07/test#cls")
    assert meta["transform"] == "resize55-centercrop48-bicubic"

    ck = load_checkpoint(VIT, seed=0)
    ref_net = VisionTransformer(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6, num_classes=0,
                                dynamic_img_size=True).eval()
    ref_net.load_state_dict(ck.backbone.state_dict())
    voc = VOC07(root)
    images = [load_rgb(p) for p in voc.paths("test")]

    def forward(interpolation):
        tf = eval_transform(48, 55, ck.preprocess, interpolation=interpolation)
        with torch.no_grad():
            return ref_net(torch.stack([tf(im) for im in images])).numpy()

    ref = forward("bicubic")
    np.testing.assert_allclose(cached, ref, atol=1e-5, rtol=0)
    assert np.abs(forward("bilinear") - cached).max() > 1e-3  # the interpolation reaches the images
    # what the SVMs are given: the same features (a cache hit), each divided by its L2 norm + 1e-5
    proto = get_task("voc_lowshot@mopro-vit", ovr).protocol
    used = svm_features(ck, voc.paths("test"), voc.ids("test"), RunContext(cache_dir=cache), proto, "voc07/test", "t")
    np.testing.assert_allclose(used, ref / (np.linalg.norm(ref, axis=1, keepdims=True) + 1e-5), atol=1e-6, rtol=0)


def _one_line_error(cli, tmp_path, *argv) -> str:
    code, out, err = cli("eval", *argv, "--cache-dir", tmp_path / "c", "--results-dir", tmp_path / "res", "--no-progress")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, (code, err)
    assert not (tmp_path / "res").exists() or not list((tmp_path / "res").rglob("*.json"))
    return lines[0]


@pytest.mark.parametrize("ckpt, task, extra, expect", [
    ("random:vit_tiny_patch16_224", "voc_lowshot@mopro", (), "fix: use voc_lowshot@mopro-vit"),
    ("random:vit_tiny_patch16_224", "voc_lowshot@goyal19", (), "fix: use voc_lowshot@mopro-vit"),
    ("random:vit_tiny_patch16_224", "places_lowshot", (), "fix: use places_lowshot@mopro-vit"),
    ("random:resnet18", "voc_lowshot@mopro-vit", (), "defined for vit backbones; random:resnet18 is a resnet"),
    ("random:convnext_tiny", "voc_lowshot@goyal19-published", (), "fix: use voc_lowshot@mopro"),
    ("random:convnext_tiny", "voc_lowshot", ("feature_layer=res5",), "feature_layer=res5 average-pools a ResNet stage"),
    ("random:resnet18", "voc_lowshot", ("feature_layer=cls",), "belongs to the ViT protocols -- fix: use voc_lowshot@mopro-vit"),
    ("random:vit_tiny_patch16_224", "voc_lowshot@mopro-vit", ("feature_layer=pool5",), "feature_layer='pool5' is not a"),
    ("random:vit_tiny_patch16_224", "places_lowshot@mopro-vit", ("interpolation=nearest",),
     "interpolation='nearest' must be one of bilinear, bicubic"),
])
def test_wrong_family_or_feature_is_one_line_exit_2(cli, synth_root, tmp_path, ckpt, task, extra, expect):
    data = synth_root("places205" if task.startswith("places") else "voc07")
    sets = [a for s in extra for a in ("--set", s)]
    line = _one_line_error(cli, tmp_path, "--ckpt", ckpt, "--task", task, "--data", data, *sets)
    assert (line.endswith(expect) if expect.startswith("fix:") else expect in line), line
