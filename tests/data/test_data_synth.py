"""Generated datasets: determinism, real layouts, WebVision noise truth, COCO boxes/masks matching the drawn objects."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mopro_bench.data import DATASETS, KINDS, render
from mopro_bench.data.synth import family_wnids, synth, truth_path
from mopro_bench.errors import BenchError
from mopro_bench.resources import imagenet1k_wnids, imagenet_a_wnids, imagenet_r_wnids

SIZES = {kind: DATASETS.get(kind).synth_sizes for kind in DATASETS}  # synth defaults per kind and scale


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


SMALLER = {"webvision": {"classes": 3, "train_per_class": 4, "val_per_class": 1},
           "imagenet": {"classes": 3, "train_per_class": 3, "val_per_class": 1},
           "imagenet-r": {"classes": 3, "per_class": 2}, "imagenet-a": {"classes": 3, "per_class": 2},
           "voc07": {"trainval": 12, "test": 12}, "places205": {"train_per_class": 1, "val_per_class": 1},
           "coco": {"train": 4, "val": 3}}


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_bytes_other_seed_other_images(kind, tmp_path):
    kw = SMALLER[kind]
    synth(kind, tmp_path / "a" / "root", seed=0, **kw)
    synth(kind, tmp_path / "b" / "root", seed=0, **kw)
    synth(kind, tmp_path / "c" / "root", seed=1, **kw)
    a, b, c = (_tree(tmp_path / x / "root") for x in "abc")
    assert a == b
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")  # files kept outside the layout (truth, subset lists) too
    jpgs = [k for k in a if k.lower().endswith((".jpg", ".jpeg"))]
    assert jpgs and sum(a[k] != c.get(k) for k in jpgs) >= 0.9 * len(jpgs)


def test_family_classes_are_shared_by_imagenet_r_and_a():
    fam = family_wnids()
    assert list(fam) == sorted(set(imagenet_r_wnids()) & set(imagenet_a_wnids()))
    assert len(fam) == 86 and set(fam) <= set(imagenet1k_wnids())


def test_imagenet_family_sets_use_the_same_classes(synth_root):
    wn = synth_root("webvision")
    classes = json.loads(truth_path(wn).read_text())["classes"]
    assert classes == list(family_wnids()[: SIZES["webvision"]["tiny"]["classes"]])
    for kind in ("imagenet-r", "imagenet-a"):
        assert sorted(p.name for p in synth_root(kind).iterdir()) == classes
    assert sorted(p.name for p in (synth_root("imagenet") / "val").iterdir()) == classes


def test_webvision_noise_truth(synth_root):
    root = synth_root("webvision")
    truth_file = truth_path(root)
    assert truth_file.parent == root.parent and not any(p.name.endswith("truth.json") for p in root.rglob("*"))
    truth = json.loads(truth_file.read_text())
    listed = {}
    for name in ("train_filelist_google.txt", "train_filelist_flickr.txt"):
        for line in (root / "info" / name).read_text().splitlines():
            rel, lab = line.split()
            listed[rel] = int(lab)
    assert set(truth["train"]) == set(listed)
    n = len(listed)
    kinds = [t["kind"] for t in truth["train"].values()]
    assert kinds.count("ood") == round(0.1 * n) and kinds.count("flip") == round(0.3 * n)
    for rel, t in truth["train"].items():
        assert t["given"] == listed[rel]
        if t["kind"] == "clean":
            assert t["true"] == t["given"]
        elif t["kind"] == "flip":
            assert t["true"] != t["given"] and t["true"] in truth["labels"]
        else:
            assert t["true"] == -1 and t["given"] in truth["labels"]
    # labels are ImageNet-1k indices of the class wnids
    assert truth["labels"] == [imagenet1k_wnids().index(w) for w in truth["classes"]]


def test_webvision_rates_and_corrupt_files(tmp_path):
    out = tmp_path / "wv"
    s = synth("webvision", out, seed=3, noise=0.5, ood=0.25, corrupt=2, classes=4, train_per_class=8, val_per_class=1)
    assert s["counts"] == {"train": 32, "val": 4, "flip": 16, "ood": 8, "corrupt": 2}
    truth = json.loads(truth_path(out).read_text())
    assert len(truth["corrupt"]) == 2
    for rel in truth["corrupt"]:
        with pytest.raises(OSError):
            Image.open(out / rel).load()


def test_voc07_every_class_has_positives_and_some_difficult(synth_root):
    from mopro_bench.data.voc import VOC07

    voc = VOC07(synth_root("voc07"))
    tv, te = voc.labels("trainval"), voc.labels("test")
    assert tv.shape == (120, 20) and te.shape == (120, 20)
    assert (tv == 1).sum(0).min() >= 2 and (te == 1).sum(0).min() >= 2
    assert (tv == 0).sum() > 0 and set(np.unique(tv)) == {-1, 0, 1}
    assert not set(voc.ids("trainval")) & set(voc.ids("test"))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_coco_boxes_and_masks_match_drawn_objects(synth_root):
    from pycocotools.coco import COCO

    root = synth_root("coco")
    coco = COCO(str(root / "annotations" / "instances_val2017.json"))
    assert sorted(coco.getCatIds()) == [1, 2, 3, 17, 18]
    assert len(coco.getImgIds()) == SIZES["coco"]["tiny"]["val"]
    checked = 0
    for img_id in coco.getImgIds():
        info = coco.loadImgs(img_id)[0]
        img = np.asarray(Image.open(root / "val2017" / info["file_name"]).convert("RGB"), dtype=np.float32)
        assert img.shape[:2] == (info["height"], info["width"])
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img_id)):
            mask = coco.annToMask(ann).astype(bool)
            ys, xs = np.nonzero(mask)
            x, y, w, h = ann["bbox"]
            # the box is the mask's extent (to rasterisation precision) and the area is the mask area
            assert abs(xs.min() - x) <= 1.5 and abs(ys.min() - y) <= 1.5
            assert abs(xs.max() + 1 - (x + w)) <= 1.5 and abs(ys.max() + 1 - (y + h)) <= 1.5
            assert ann["area"] == pytest.approx(mask.sum(), rel=0.02)
            # the pixels under the mask are the object's saturated colour: the hue of its category, unlike the background
            inner = img[mask]
            sat = (inner.max(1) - inner.min(1)) / np.maximum(inner.max(1), 1)
            assert np.median(sat) > 0.4
            cat = [c["id"] for c in coco.loadCats(coco.getCatIds())].index(ann["category_id"])
            hue = render.coco_look(cat).hue
            mr, mg, mb = np.median(inner, axis=0) / 255.0
            import colorsys

            h_obs = colorsys.rgb_to_hsv(mr, mg, mb)[0]
            assert min(abs(h_obs - hue), 1 - abs(h_obs - hue)) < 0.08
            checked += 1
    assert checked >= 10


@pytest.mark.slow  # importing detectron2 alone takes ~10 s
def test_coco_loads_in_detectron2_when_installed(synth_root):
    d2 = pytest.importorskip("detectron2.data.datasets")
    root = synth_root("coco")
    dicts = d2.load_coco_json(str(root / "annotations" / "instances_train2017.json"), str(root / "train2017"), "synth_coco_train")
    assert len(dicts) == SIZES["coco"]["tiny"]["train"] and all(d["annotations"] for d in dicts)


def test_synth_refuses_bad_options(tmp_path):
    with pytest.raises(BenchError, match="unknown dataset kind 'voc'"):
        synth("voc", tmp_path / "a")
    with pytest.raises(BenchError, match="synth voc07 does not take noise"):
        synth("voc07", tmp_path / "a", noise=0.2)
    with pytest.raises(BenchError, match="leaves no clean images"):
        synth("webvision", tmp_path / "a", noise=0.6, ood=0.4)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(BenchError, match="already exists and is not empty"):
        synth("imagenet-r", tmp_path / "full")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
