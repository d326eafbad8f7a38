"""The feature cache is keyed on the images' content: edited, regenerated or replaced images never reuse old features.

Reproduces reliability case 61/62 (images inverted in place scored 15.801 mAP_k1 from the cache instead of the true
14.786): the edited dataset must miss the cache and score exactly what a fresh cache gives.
"""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from mopro_bench import features as FE
from mopro_bench.checkpoints import load_checkpoint
from mopro_bench.errors import BenchError
from mopro_bench.evaluate import evaluate
from mopro_bench.registry import RunContext

torch.set_num_threads(1)
OVR = {"image_size": 32, "resize": 36, "ks": [1], "num_samples": 2}


def _invert_in_place(paths: list[Path], same_size_and_mtime: bool = False) -> None:
    """Replace each image by its inverted (and rotated) version under the same name.

    ``same_size_and_mtime``: also keep the byte size (re-encode small enough, pad after the JPEG end marker, which
    decoders ignore) and put the old mtime back with os.utime -- what a size+mtime-only check cannot see."""
    for p in paths:
        st = p.stat()
        img = ImageOps.invert(Image.open(p).convert("RGB")).rotate(90)
        if not same_size_and_mtime:
            img.save(p, format="JPEG")
            continue
        for q in range(95, 5, -5):
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=q)
            if buf.tell() <= st.st_size:
                break
        data = buf.getvalue()
        assert len(data) <= st.st_size
        p.write_bytes(data + b"\0" * (st.st_size - len(data)))
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        st2 = p.stat()
        assert (st2.st_size, st2.st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def _voc_images(root: Path) -> list[Path]:
    return sorted((root / "VOCdevkit" / "VOC2007" / "JPEGImages").glob("*.jpg"))


def test_images_inverted_in_place_miss_the_cache_and_score_like_a_fresh_cache(synth_root, tmp_path):
    voc = tmp_path / "voc"
    shutil.copytree(synth_root("voc07"), voc)
    shared, fresh = tmp_path / "cache", tmp_path / "fresh"
    kw = dict(overrides=OVR, results_dir=tmp_path / "res", progress=False)
    first = evaluate("random:resnet18", "voc_lowshot", voc, cache_dir=shared, **kw).record
    _invert_in_place(_voc_images(voc))
    before = dict(FE.CACHE_STATS)
    edited = evaluate("random:resnet18", "voc_lowshot", voc, cache_dir=shared, **kw).record
    assert FE.CACHE_STATS["hits"] == before["hits"], "features of the old pixels were reused"
    true = evaluate("random:resnet18", "voc_lowshot", voc, cache_dir=fresh, **kw).record
    assert edited["metrics"]["mAP_k1"] == true["metrics"]["mAP_k1"]
    assert edited["metrics"]["mAP_k1"] != first["metrics"]["mAP_k1"]


@pytest.fixture(scope="module")
def r18():
    return load_checkpoint("random:resnet18")


def _extract(ck, paths, cache, names=None, ctx=None):
    ctx = ctx or RunContext(cache_dir=cache, progress=False)
    return FE.extract_features(ck, paths, ctx, dataset_id="voc07/test", rel_paths=names, image_size=32, resize=36), ctx


def test_same_size_and_restored_mtime_still_miss_the_cache(synth_root, tmp_path, r18, monkeypatch):
    from mopro_bench import fingerprint as F

    monkeypatch.setattr(F, "RACY_SECONDS", 0.0)  # trust the per-file index at once: the stat key must catch the edit
    root = tmp_path / "voc"
    shutil.copytree(synth_root("voc07"), root)
    imgs = _voc_images(root)[:6]
    names = [p.name for p in imgs]
    cache = tmp_path / "cache"
    old, ctx1 = _extract(r18, imgs, cache, names)
    time.sleep(0.05)
    _invert_in_place(imgs[:2], same_size_and_mtime=True)
    misses = FE.CACHE_STATS["misses"]
    new, ctx2 = _extract(r18, imgs, cache, names)
    assert FE.CACHE_STATS["misses"] == misses + 1, "same size + restored mtime reused the old features"
    fresh, _ = _extract(r18, imgs, tmp_path / "fresh", names)
    np.testing.assert_array_equal(new, fresh)
    assert not np.allclose(new[:2], old[:2]) and np.array_equal(new[2:], old[2:])
    fp1, fp2 = ctx1.data_fingerprints["voc07/test"], ctx2.data_fingerprints["voc07/test"]
    assert fp1["n"] == fp2["n"] == 6 and fp1["bytes"] == fp2["bytes"] and fp1["sha256"] != fp2["sha256"]


def test_a_moved_copy_of_the_same_bytes_hits_the_cache_and_records_the_same_fingerprint(synth_root, tmp_path, r18):
    src = _voc_images(synth_root("voc07"))[:5]
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for p in src:
        shutil.copyfile(p, moved / p.name)
    cache = tmp_path / "cache"
    a, ctx_a = _extract(r18, src, cache, [p.name for p in src])
    hits = FE.CACHE_STATS["hits"]
    b, ctx_b = _extract(r18, [moved / p.name for p in src], cache, [p.name for p in src])
    assert FE.CACHE_STATS["hits"] == hits + 1
    np.testing.assert_array_equal(a, b)
    assert ctx_a.data_fingerprints == ctx_b.data_fingerprints
    # another dataset under the same id and names (regenerated with another seed) does not
    other = _voc_images(synth_root("voc07", seed=1))[:5]
    misses = FE.CACHE_STATS["misses"]
    _extract(r18, other, cache, [p.name for p in src])
    assert FE.CACHE_STATS["misses"] == misses + 1


def test_non_finite_features_stop_the_task_and_are_not_cached(synth_root, tmp_path):
    from mopro_bench.checkpoints.synth import random_resnet

    sd = random_resnet("resnet18", seed=0).state_dict()
    sd["layer4.1.bn2.weight"].fill_(3e38)  # finite weights whose output overflows float32
    path = tmp_path / "overflow.pth"
    torch.save(sd, path)
    ck = load_checkpoint(path)  # loads: every tensor is finite
    imgs = _voc_images(synth_root("voc07"))[:3]
    with pytest.raises(BenchError) as e:
        _extract(ck, imgs, tmp_path / "cache")
    assert "non-finite" in str(e.value) and "overflow.pth" in str(e.value) and "voc07/test" in str(e.value)
    assert not list((tmp_path / "cache").rglob("*.npy"))
