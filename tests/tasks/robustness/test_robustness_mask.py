"""The ImageNet-R/-A class mask: built from wnids, checked against the published indices and the dataset folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mopro_bench.data.imagenet_ra import ImageNetRA
from mopro_bench.errors import BenchError
from mopro_bench.resources import imagenet1k_wnids, imagenet_a_wnids, imagenet_r_wnids
from mopro_bench.tasks.robustness.task import compute_logits, imagenet_class_mask, labels_in_subset

LISTS = {"imagenet-r": imagenet_r_wnids, "imagenet-a": imagenet_a_wnids}


@pytest.mark.parametrize("kind", ["imagenet-r", "imagenet-a"])
def test_mask_is_the_sorted_imagenet_position_of_each_wnid(kind):
    wnids = LISTS[kind]()
    mask = imagenet_class_mask(wnids)
    assert len(mask) == 200 and (np.diff(mask) > 0).all()
    names = imagenet1k_wnids()
    assert [names[i] for i in mask] == sorted(wnids)
    # the order of the input list does not matter: the kept columns follow the 1000-class order
    assert np.array_equal(imagenet_class_mask(list(reversed(wnids))), mask)


def test_mask_matches_published_first_indices():
    # first entries of the indices_in_1k lists of the ImageNet-R / ImageNet-A evaluation code
    assert imagenet_class_mask(imagenet_r_wnids())[:12].tolist() == [1, 2, 4, 6, 8, 9, 11, 13, 22, 23, 26, 29]
    assert imagenet_class_mask(imagenet_a_wnids())[:12].tolist() == [6, 11, 13, 15, 17, 22, 23, 27, 30, 37, 39, 42]


@pytest.mark.parametrize("kind", ["imagenet-r", "imagenet-a"])
def test_mask_against_generated_dataset_folders(synth_root, kind):
    root = synth_root(kind)
    ds = ImageNetRA(root, kind)
    mask = imagenet_class_mask(ds.wnids)
    names = imagenet1k_wnids()
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert folders and set(folders) <= set(LISTS[kind]())
    samples = ds.samples()
    assert {p.parent.name for p, _ in samples} == set(folders)
    labels1000 = np.array([y for _, y in samples])
    pos = labels_in_subset(labels1000, mask)
    for (path, y), j in zip(samples, pos):
        assert names[y] == path.parent.name  # the loader's label is the folder's class
        assert names[mask[j]] == path.parent.name  # the kept column of that label is the folder's class
    # an oracle 1000-way classifier that scores each image's folder class (looked up by name) is always right
    by_name = {w: i for i, w in enumerate(names)}
    logits1000 = np.zeros((len(samples), 1000), np.float32)
    logits1000[np.arange(len(samples)), [by_name[p.parent.name] for p, _ in samples]] = 5.0
    assert np.array_equal(logits1000[:, mask].argmax(1), pos)


def test_mask_errors():
    with pytest.raises(BenchError, match="not ImageNet-1k classes"):
        imagenet_class_mask(["n99999999"])
    mask = imagenet_class_mask(imagenet_a_wnids())
    outside = next(i for i in range(1000) if i not in set(mask.tolist()))
    with pytest.raises(BenchError, match="outside the evaluated classes"):
        labels_in_subset(np.array([mask[0], outside]), mask)


def test_compute_logits_keeps_the_masked_columns():
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 1000)
    feats = np.random.default_rng(0).normal(size=(37, 16)).astype(np.float32)
    mask = imagenet_class_mask(imagenet_r_wnids())
    full = lin(torch.from_numpy(feats)).detach().numpy()
    assert np.allclose(compute_logits(lin, feats, mask, chunk=10), full[:, mask], atol=1e-5)
