"""Every loader on its generated dataset; WebVision skips corrupt training images, evaluation sets fail loudly."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from mopro_bench.data import DATASETS
from mopro_bench.data.common import ImageList
from mopro_bench.data.imagenet import ImageNetFolder, read_subset_file
from mopro_bench.data.imagenet_ra import ImageNetRA
from mopro_bench.data.places import Places205
from mopro_bench.data.synth import truth_path
from mopro_bench.data.voc import VOC07, VOC_CLASSES
from mopro_bench.data.webvision import WebVision, WebVisionTrain, write_annotation
from mopro_bench.errors import BenchError
from mopro_bench.resources import imagenet1k_wnids, imagenet_r_wnids

SIZES = {kind: DATASETS.get(kind).synth_sizes for kind in DATASETS}  # synth defaults per kind and scale


def test_voc07_loader_reads_labels_and_accepts_root_variants(synth_root):
    root = synth_root("voc07")
    voc = VOC07(root)
    assert len(VOC_CLASSES) == 20 and VOC_CLASSES[0] == "aeroplane" and VOC_CLASSES[-1] == "tvmonitor"
    ids = voc.ids("trainval")
    labels = voc.labels("trainval")
    assert labels.dtype == np.int8 and labels.shape == (len(ids), 20)
    # labels agree with the per-class files, line by line
    for c in (0, 7, 19):
        lines = (root / "VOCdevkit/VOC2007/ImageSets/Main" / f"{VOC_CLASSES[c]}_trainval.txt").read_text().split("\n")
        assert [int(ln.split()[1]) for ln in lines if ln] == labels[:, c].tolist()
    assert voc.image_path(ids[0]) == root / "VOCdevkit/VOC2007/JPEGImages" / f"{ids[0]}.jpg" and voc.image_path(ids[0]).is_file()
    for alt in (root / "VOCdevkit", root / "VOCdevkit" / "VOC2007"):
        assert VOC07(alt).ids("test") == voc.ids("test")
    with pytest.raises(BenchError, match="unknown VOC07 split 'train'"):
        voc.ids("train")


def test_places_loader(synth_root):
    root = synth_root("places205")
    ds = Places205(root)
    tr, va = ds.samples("train"), ds.samples("val")
    sz = SIZES["places205"]["tiny"]
    assert len(tr) == 205 * sz["train_per_class"] and len(va) == 205 * sz["val_per_class"]
    assert {y for _, y in tr} == set(range(205))
    rel, y = tr[0]
    assert ds.image_path(rel) == root / "data/vision/torralba/deeplearning/images256" / rel and ds.image_path(rel).is_file()


def test_imagenet_loader_labels_are_imagenet_indices_and_subsets(synth_root):
    root = synth_root("imagenet")
    ds = ImageNetFolder(root)
    tr = ds.samples("train")
    wnids = imagenet1k_wnids()
    assert all(wnids[y] == p.parent.name for p, y in tr)
    assert len(tr) == 8 * SIZES["imagenet"]["tiny"]["train_per_class"]
    names = read_subset_file(root.parent / "root.subsets" / "10percent.txt")
    sub = ds.subset(root.parent / "root.subsets" / "10percent.txt")
    assert [p.name for p, _ in sub] == names and len(names) == 8 * 2
    assert all(p.name.startswith(wnids[y]) for p, y in sub)


def test_imagenet_loader_refuses_foreign_folder(tmp_path, synth_root):
    root = tmp_path / "in"
    shutil.copytree(synth_root("imagenet"), root)
    (root / "val" / "cats").mkdir()
    with pytest.raises(BenchError, match=r"has 1 folder\(s\) that are not ImageNet-1k wnids \(first: cats\)"):
        ImageNetFolder(root).samples("val")


@pytest.mark.parametrize("kind", ["imagenet-r", "imagenet-a"])
def test_imagenet_ra_loader_maps_by_wnid(kind, synth_root):
    ds = ImageNetRA(synth_root(kind), kind)
    assert len(ds.wnids) == 200 and ds.indices == [imagenet1k_wnids().index(w) for w in ds.wnids]
    s = ds.samples()
    assert len(s) == 8 * SIZES[kind]["tiny"]["per_class"]
    assert all(imagenet1k_wnids()[y] == p.parent.name for p, y in s)
    if kind == "imagenet-r":
        assert ds.wnids == list(imagenet_r_wnids())


def test_webvision_lists_num_class_and_annotation(synth_root, tmp_path):
    root = synth_root("webvision")
    ds = WebVision(root)
    tr, va = ds.train_samples(), ds.val_samples()
    assert len(tr) == 8 * 16 and len(va) == 8 * 4
    assert all(ds.path(r).is_file() for r, _ in tr + va) and va[0][0].startswith("val_images_256/")
    labels = sorted({y for _, y in tr})
    cut = labels[4]
    assert {y for _, y in WebVision(root, num_class=cut).train_samples()} == set(labels[:4])
    ann = write_annotation(tmp_path / "pseudo.json", [tr[0][0], tr[1][0], tr[2][0]], [labels[0], labels[7], 999])
    assert WebVision(root, annotation=ann).train_samples() == [(tr[0][0], labels[0]), (tr[1][0], labels[7]), (tr[2][0], 999)]
    assert WebVision(root, num_class=999, annotation=ann).train_samples() == [(tr[0][0], labels[0]), (tr[1][0], labels[7])]
    ann.write_text(json.dumps({"images": ["a.jpg"], "labels": []}))
    with pytest.raises(BenchError, match="1 images but 0 labels"):
        WebVision(root, annotation=ann).train_samples()


def test_webvision_train_skips_and_counts_corrupt_images(tmp_path, caplog):
    from mopro_bench.data.synth import synth

    root = tmp_path / "wv"
    synth("webvision", root, classes=3, train_per_class=4, val_per_class=1, corrupt=2)
    corrupt = set(json.loads(truth_path(root).read_text())["corrupt"])
    ds = WebVision(root)
    views = lambda img: (torch.zeros(1), torch.ones(1))  # a transform may return several views
    train = WebVisionTrain(ds, views)
    bad_idx = sorted(i for i, (r, _) in enumerate(train.samples) if r in corrupt)
    assert len(bad_idx) == 2
    with caplog.at_level(logging.WARNING, logger="mopro_bench.data.webvision"):
        out = [train[i] for i in range(len(train))]
    assert train.skipped == 2 and train.bad == set(bad_idx)
    assert sum("skipping unreadable training image" in r.getMessage() for r in caplog.records) == 2
    for i, (x, y, j) in enumerate(out):
        assert isinstance(x, tuple) and len(x) == 2
        assert j not in bad_idx and y == train.samples[j][1]
        assert j == (i if i not in bad_idx else min(k for k in range(i, len(train)) if k not in bad_idx))
    # a DataLoader with workers does not crash either
    in_workers = WebVisionTrain(ds, lambda img: torch.zeros(3))
    loader = torch.utils.data.DataLoader(in_workers, batch_size=4, num_workers=2)
    assert sum(len(b[1]) for b in loader) == len(train)
    assert in_workers.skipped == 2  # counted in the worker processes, visible in the parent


def test_evaluation_list_fails_loudly_naming_the_file(tmp_path, synth_root):
    root = tmp_path / "wv"
    shutil.copytree(synth_root("webvision"), root)
    ds = WebVision(root)
    rel, y = ds.val_samples()[0]
    data = ds.path(rel).read_bytes()
    ds.path(rel).write_bytes(data[: len(data) // 4])
    lst = ImageList([ds.path(r) for r, _ in ds.val_samples()], [y for _, y in ds.val_samples()])
    with pytest.raises(BenchError, match=rf"image {ds.path(rel)} cannot be decoded"):
        lst[0]
    assert isinstance(lst[1][0], Image.Image)
