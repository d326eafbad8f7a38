"""Export: torchvision state dicts and detectron2 pickles, and the round trip back through the importer."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from mopro_bench.checkpoints import load_checkpoint
from mopro_bench.checkpoints.detectron2 import (
    CAFFE_PREPROCESS,
    d2_pixel_config,
    d2_to_tv_key,
    detectron2_payload,
    export_detectron2,
    to_detectron2,
    tv_to_d2_key,
)
from mopro_bench.checkpoints.safeload import RestrictedUnpickler
from mopro_bench.checkpoints.synth import _d2_name, random_resnet, write_layout

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def r50(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    model = random_resnet("resnet50", seed=7)
    path = d / "supervised.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_key_names():
    assert tv_to_d2_key("conv1.weight") == "stem.conv1.weight"
    assert tv_to_d2_key("bn1.running_mean") == "stem.conv1.norm.running_mean"
    assert tv_to_d2_key("layer1.0.conv3.weight") == "res2.0.conv3.weight"
    assert tv_to_d2_key("layer1.0.bn3.bias") == "res2.0.conv3.norm.bias"
    assert tv_to_d2_key("layer3.5.bn2.running_var") == "res4.5.conv2.norm.running_var"
    assert tv_to_d2_key("layer2.0.downsample.0.weight") == "res3.0.shortcut.weight"
    assert tv_to_d2_key("layer4.0.downsample.1.weight") == "res5.0.shortcut.norm.weight"
    with pytest.raises(ValueError):
        tv_to_d2_key("fc.weight")
    assert d2_to_tv_key("res5.0.shortcut.norm.running_mean") == "layer4.0.downsample.1.running_mean"
    assert d2_to_tv_key("roi_heads.box_head.fc1.weight") is None
    for arch in ("resnet18", "resnet50", "resnet101"):
        with torch.device("meta"):
            keys = [k for k in getattr(torchvision.models, arch)().state_dict() if not k.startswith("fc.")]
        d2 = [tv_to_d2_key(k) for k in keys]
        assert len(set(d2)) == len(keys)
        assert [d2_to_tv_key(k) for k in d2] == keys
        assert d2 == [_d2_name(k) for k in keys]  # agrees with the published converters' string edits


def test_caffe2_blob_names():
    from mopro_bench.checkpoints.formats.caffe2 import caffe2_to_tv_key

    assert caffe2_to_tv_key("conv1_w") == "conv1.weight"
    assert caffe2_to_tv_key("res_conv1_bn_s") == "bn1.weight"
    assert caffe2_to_tv_key("res_conv1_bn_b") == "bn1.bias"
    assert caffe2_to_tv_key("res2_0_branch2a_w") == "layer1.0.conv1.weight"
    assert caffe2_to_tv_key("res3_1_branch2b_bn_s") == "layer2.1.bn2.weight"
    assert caffe2_to_tv_key("res5_0_branch1_w") == "layer4.0.downsample.0.weight"
    assert caffe2_to_tv_key("res5_0_branch1_bn_b") == "layer4.0.downsample.1.bias"
    assert caffe2_to_tv_key("res4_5_branch2c_bn_rm") == "layer3.5.bn3.running_mean"
    assert caffe2_to_tv_key("pred_w") is None and caffe2_to_tv_key("res2_0_branch2a_bn_s_momentum") is None


def test_detectron2_round_trip_is_identical(r50, tmp_path):
    model, path = r50
    ck = load_checkpoint(path)
    out = tmp_path / "backbone.pkl"
    export_detectron2(ck, out)
    with open(out, "rb") as fh:
        obj = RestrictedUnpickler(fh, encoding="latin1").load()  # plain numpy + builtins: detectron2 needs no mopro_bench
    assert obj["__author__"] == "mopro-bench" and obj["matching_heuristics"] is True
    m = obj["model"]
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in m.values())
    assert "res5.2.conv3.norm.running_var" in m and "stem.conv1.norm.weight" in m and "res2.0.shortcut.weight" in m
    assert not any("num_batches_tracked" in k or k.startswith("fc") for k in m)
    assert len(m) == 318 - 53
    np.testing.assert_array_equal(m["res4.3.conv2.weight"], model.state_dict()["layer3.3.conv2.weight"].numpy())
    meta = obj["mopro_bench"]
    assert meta["detectron2_config"]["INPUT.FORMAT"] == "RGB"
    assert meta["detectron2_config"]["MODEL.PIXEL_MEAN"] == pytest.approx([123.675, 116.28, 103.53])
    assert meta["detectron2_config"]["MODEL.PIXEL_STD"] == pytest.approx([58.395, 57.12, 57.375])
    assert meta["source"]["sha256"] == ck.sha256

    back = load_checkpoint(out)
    assert (back.format, back.arch, back.width) == ("detectron2", "resnet50", 1)
    assert back.preprocess == ck.preprocess and not back.backbone.stride_in_1x1
    assert back.meta["preprocess_source"] == "recorded in the file by mopro-bench export" and back.meta["warnings"] == []
    a, b = ck.backbone.state_dict(), back.backbone.state_dict()
    assert list(a) == list(b)
    for k in a:
        if k.endswith("num_batches_tracked"):  # not carried by detectron2 files; filled, and reported
            assert k in back.coverage["filled"]
        else:
            assert torch.equal(a[k], b[k]), k
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ck.backbone(x), back.backbone(x))
    # exporting the re-imported file gives the same arrays
    again = detectron2_payload(back)["model"]
    assert all(np.array_equal(again[k], m[k]) for k in m)


def test_msra_preprocess_and_stride_survive_the_round_trip(tmp_path):
    sd = {k: v for k, v in random_resnet("resnet50", seed=8).state_dict().items() if not k.startswith("fc.")}
    src = tmp_path / "msra.pkl"
    write_layout("detectron2-msra", sd, src)
    ck = load_checkpoint(src)
    assert ck.preprocess == CAFFE_PREPROCESS and ck.backbone.stride_in_1x1
    out = tmp_path / "again.pkl"
    export_detectron2(ck, out)
    back = load_checkpoint(out)
    assert back.preprocess == CAFFE_PREPROCESS and back.backbone.stride_in_1x1 and back.meta["warnings"] == []
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ck.backbone(x), back.backbone(x))
    assert d2_pixel_config(CAFFE_PREPROCESS) == {"INPUT.FORMAT": "BGR", "MODEL.PIXEL_MEAN": [103.53, 116.28, 123.675],
                                                 "MODEL.PIXEL_STD": [1.0, 1.0, 1.0]}
    # a torchvision file cannot express the stride placement: refused, not silently wrong
    from mopro_bench.checkpoints.export import export_torchvision
    from mopro_bench.errors import BenchError

    with pytest.raises(BenchError, match="stride in the 1x1"):
        export_torchvision(ck, tmp_path / "no.pth")
    assert not (tmp_path / "no.pth").exists()


def test_cli_export_torchvision_loads_into_torchvision(cli, r50, tmp_path):
    model, path = r50
    mopro = tmp_path / "mopro.pth.tar"
    write_layout("mopro", {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}, mopro, fc=None)
    out = tmp_path / "tv.pth"
    code, stdout, err = cli("export", "--ckpt", mopro, "--format", "torchvision", "--out", out)
    assert code == 0, err
    assert f"wrote {out}" in stdout and "from mopro" in stdout
    sd = torch.load(out, weights_only=True)
    tv = torchvision.models.resnet50().eval()
    res = tv.load_state_dict(sd, strict=False)
    assert sorted(res.missing_keys) == ["fc.bias", "fc.weight"] and res.unexpected_keys == []
    ref = copy.deepcopy(model).eval()
    ref.fc = nn.Identity()
    tv.fc = nn.Identity()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(tv(x), ref(x))

    out2 = tmp_path / "tv_fc.pth"
    code, _, err = cli("export", "--ckpt", path, "--format", "torchvision", "--out", out2, "--with-classifier")
    assert code == 0, err
    full = torchvision.models.resnet50().eval()
    full.load_state_dict(torch.load(out2, weights_only=True), strict=True)
    with torch.no_grad():
        assert torch.equal(full(x), model(x))


def test_cli_export_detectron2_and_errors(cli, r50, tmp_path):
    _, path = r50
    out = tmp_path / "d2" / "r50.pkl"
    code, stdout, err = cli("export", "--ckpt", path, "--format", "detectron2", "--out", out)
    assert code == 0, err
    assert "INPUT.FORMAT RGB" in stdout and "MODEL.RESNETS.STRIDE_IN_1X1 False" in stdout
    code, stdout, _ = cli("inspect", "--ckpt", out)
    assert code == 0 and "format       detectron2" in stdout and "recorded in the file" in stdout

    def one_line(code, out_, err_, needle):
        assert code == 2 and len(err_.strip().splitlines()) == 1 and needle in err_, err_

    one_line(*cli("export", "--ckpt", out, "--format", "torchvision", "--out", out), "is the checkpoint being exported")
    one_line(*cli("export", "--ckpt", out, "--format", "torchvision", "--out", tmp_path), "is a directory")
    one_line(*cli("export", "--ckpt", out, "--format", "torchvision", "--out", tmp_path / "x.pth", "--with-classifier"),
             "has no classifier head")
    one_line(*cli("export", "--ckpt", path, "--format", "onnx", "--out", tmp_path / "x.onnx"), "invalid choice")


def test_to_detectron2_is_a_library_function():
    bb_sd = {k: v for k, v in random_resnet("resnet18", seed=1).state_dict().items() if not k.startswith("fc.")}
    d2 = to_detectron2(bb_sd)
    assert len(d2) == len(bb_sd) - 20  # 20 BatchNorms' num_batches_tracked dropped
    assert np.array_equal(d2["res3.1.conv2.norm.running_mean"], bb_sd["layer2.1.bn2.running_mean"].numpy())
    d2["res3.1.conv2.norm.running_mean"][0] = 123.0  # a copy, not a view of the model's memory
    assert bb_sd["layer2.1.bn2.running_mean"][0] != 123.0
    with pytest.raises(ValueError, match="fc.weight"):
        to_detectron2({"fc.weight": torch.zeros(2, 2)})
    pickle.dumps(d2)
