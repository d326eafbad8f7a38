"""voc_lowshot@goyal19(-published): the Goyal 2019 / VISSL settings (pooled res4/res5 maps, class weight +1:2, k to 96)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mopro_bench.backbones import Backbone
from mopro_bench.evaluate import evaluate
from mopro_bench.tasks.lowshot.features import PooledStage
from mopro_bench.tasks.lowshot.protocols import GOYAL19_COSTS, VOC_PROTOCOLS


def test_goyal19_protocols_hold_the_published_settings():
    for name, sel in (("goyal19", "cv"), ("goyal19-published", "test")):
        p = VOC_PROTOCOLS[name]
        assert p.version == "2" and p.cost_selection == sel
        assert (p.class_weight_pos, p.class_weight_neg) == (2.0, 1.0)  # before: 1:1 (fidelity audit section 3)
        assert p.ks == (1, 2, 4, 8, 16, 32, 64, 96) and p.num_samples == 5 and p.costs == GOYAL19_COSTS
        assert p.feature_layer == "res5" and (p.resize, p.image_size, p.resize_mode) == (224, 224, "square")
        assert p.sampling == "positives-and-negatives-per-class" and p.negatives_per_positive == 19
        assert p.difficult_train == p.difficult_test == "ignore" and (p.tol, p.max_iter) == (1e-4, 2000)
    assert "exactly as published" not in VOC_PROTOCOLS["goyal19-published"].description
    assert "Resize([224, 224])" in VOC_PROTOCOLS["goyal19-published"].description
    assert VOC_PROTOCOLS["mopro"].feature_layer == "pool5" and VOC_PROTOCOLS["mopro"].resize_mode == "shorter"


def test_square_resize_squashes_the_whole_image_as_vissl():
    """VISSL's Resize([224, 224]) keeps all of a 2:1 image (squashed); the shorter-side resize + crop cuts its sides."""
    from PIL import Image

    from mopro_bench.data.common import eval_transform

    img = Image.new("RGB", (64, 32))
    img.paste((255, 0, 0), (0, 0, 16, 32))  # red left quarter: inside a squash, outside a centre crop
    sq = eval_transform(32, 32, square=True)(img)
    crop = eval_transform(32, 32)(img)
    ref = eval_transform(32, 32)(img.resize((32, 32), Image.BILINEAR))  # slow obvious: squash first, then the default path
    assert sq.shape == crop.shape == (3, 32, 32)
    torch.testing.assert_close(sq, ref, atol=0.02, rtol=0)  # PIL vs torchvision bilinear (antialias) rounding
    assert sq[0, :, :4].mean() > crop[0, :, :4].mean() + 1.0  # the red band survives only in the squash


def test_pooled_stages_are_vissls_avgpool_at_224():
    torch.manual_seed(0)
    net = Backbone("resnet18").eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        h = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        r4 = net.layer3(net.layer2(net.layer1(h)))
        r5 = net.layer4(r4)
        got4 = PooledStage(net, "res4", 224)(x)
        got5 = PooledStage(net, "res5", 224)(x)
    assert r4.shape[-1] == 14 and r5.shape[-1] == 7
    # slow obvious: res4 windows 8x8 at stride 3 -> 3x3; res5 windows 6x6 at stride 1 -> 2x2; flattened channel-major
    ref4 = torch.stack([r4[:, :, 3 * i:3 * i + 8, 3 * j:3 * j + 8].mean((2, 3)) for i in range(3) for j in range(3)], -1)
    ref5 = torch.stack([r5[:, :, i:i + 6, j:j + 6].mean((2, 3)) for i in range(2) for j in range(2)], -1)
    assert got4.shape == (2, 256 * 9) and got5.shape == (2, 512 * 4)
    torch.testing.assert_close(got4, ref4.flatten(1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got5, ref5.flatten(1), rtol=1e-5, atol=1e-6)
    assert PooledStage(Backbone("resnet50"), "res4", 224).feature_dim == 9216  # VISSL's res4 for ResNet-50
    assert PooledStage(Backbone("resnet50"), "res5", 224).feature_dim == 8192
    assert torch.equal(got5, F.avg_pool2d(r5, 6, 1).flatten(1))


def test_goyal19_runs_on_pooled_maps_with_its_own_cache_entries(synth_root, tmp_path):
    voc = synth_root("voc07")
    ovr = {"image_size": 64, "resize": 64, "ks": [1], "num_samples": 1, "feature_layer": "res4"}
    rec = evaluate("random:resnet18", "voc_lowshot@goyal19-published", voc, overrides=ovr, cache_dir=tmp_path / "c",
                   results_dir=tmp_path / "res", progress=False).record
    assert rec["details"]["features"]["test"][1] == 256 * 9  # res4 of resnet18 pooled to 3x3 (64 px: window scaled)
    assert 0 < rec["metrics"]["mAP_k1"] <= 100
    assert rec["protocol"]["params"]["class_weight_pos"] == 2.0
    base = evaluate("random:resnet18", "voc_lowshot@mopro", voc, overrides={**ovr, "feature_layer": "pool5", "resize": 64},
                    cache_dir=tmp_path / "c", results_dir=tmp_path / "res", progress=False).record
    assert base["details"]["features"]["test"][1] == 512
    assert base["details"]["feature_cache"]["hits"] == 0  # the pooled res4 entries never stand in for pool5 ones
    entries = sorted((tmp_path / "c" / "features").glob("*.npy"))
    assert len(entries) == 4 and sorted({np.load(e).shape[1] for e in entries}) == [512, 2304]


def test_default_k_up_to_96_on_a_small_dataset_exits_2(cli, synth_root, tmp_path):
    voc = synth_root("voc07")
    code, _, err = cli("eval", "--ckpt", "random:resnet18", "--task", "voc_lowshot@goyal19-published", "--data", voc,
                       "--set", "image_size=64", "--set", "resize=64", "--cache-dir", tmp_path / "c", "--results-dir",
                       tmp_path / "res", "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1
    # the tiny VOC has ~107 negatives of aeroplane: k=8 needs 8 * 19 = 152 (before: "needs 8 ... use k <= 107")
    assert "k=8 needs 152 negative images (19 per positive) for class 'aeroplane' but the training split has 107" in err
    assert "use k <= 5 " in err and "--set ks=" in err
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").rglob("*.npy"))  # refused before extraction
