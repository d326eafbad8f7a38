"""Backbones: torchvision names and shapes, width multiplier, stage features, stride placement."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

from mopro_bench.backbones import ARCHS, Backbone, arch_for_blocks, build_backbone, check_arch, feature_dim, parse_arch
from mopro_bench.errors import BenchError

torch.set_num_threads(1)


def _loaded(sd: dict[str, torch.Tensor], arch: str = "resnet50", **kw) -> Backbone:
    """A backbone holding ``sd`` (built on the meta device: no initialisation work)."""
    with torch.device("meta"):
        bb = build_backbone(arch, **kw)
    bb = bb.to_empty(device="cpu")
    bb.load_state_dict({k: v for k, v in sd.items() if not k.startswith("fc.")})
    return bb.eval()


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("arch", list(ARCHS))
def test_width1_keys_and_shapes_are_torchvision_without_fc(arch):
    with torch.device("meta"):
        ours = build_backbone(arch)
        tv = getattr(torchvision.models, arch)()
    want = {k: s for k, s in _shapes(tv).items() if not k.startswith("fc.")}
    assert _shapes(ours) == want
    assert list(ours.state_dict()) == list(want)  # same order too
    assert ours.feature_dim == tv.fc.in_features == feature_dim(arch)


@pytest.mark.parametrize("width", [2, 4])
def test_width_multiplier_scales_every_stage(width):
    with torch.device("meta"):
        bb = build_backbone("resnet50", width)
        one = build_backbone("resnet50", 1)
    assert bb.feature_dim == 2048 * width == feature_dim("resnet50", width)
    assert bb.stage_channels == {"res2": 256 * width, "res3": 512 * width, "res4": 1024 * width, "res5": 2048 * width}
    assert bb.conv1.weight.shape == (64 * width, 3, 7, 7)
    # the bottleneck's inner width scales; the expansion stays 4
    assert bb.layer1[0].conv1.weight.shape == (64 * width, 64 * width, 1, 1)
    assert bb.layer4[2].conv3.weight.shape == (2048 * width, 512 * width, 1, 1)
    assert list(bb.state_dict()) == list(one.state_dict())  # same names at every width
    assert bb.name == f"resnet50x{width}"


def test_forward_equals_torchvision_with_the_same_weights():
    torch.manual_seed(0)
    tv = torchvision.models.resnet18().eval()
    for m in tv.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    bb = _loaded(tv.state_dict(), "resnet18")
    tv.fc = nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(bb(x), tv(x))


def test_forward_features_strides_and_channels():
    bb = build_backbone("resnet18").eval()
    with torch.no_grad():
        feats = bb.forward_features(torch.randn(1, 3, 64, 64))
        pooled = bb(torch.randn(1, 3, 64, 64))
    assert list(feats) == ["res2", "res3", "res4", "res5"]
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "res2": (1, 64, 16, 16), "res3": (1, 128, 8, 8), "res4": (1, 256, 4, 4), "res5": (1, 512, 2, 2)}
    assert pooled.shape == (1, 512)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # the pooled feature is the mean of res5
        assert torch.allclose(bb(x), bb.forward_features(x)["res5"].mean((2, 3)), atol=1e-6)


def test_stride_in_1x1_matches_a_hand_built_msra_resnet():
    torch.manual_seed(1)
    tv = torchvision.models.resnet50().eval()
    ref = copy.deepcopy(tv)
    for layer in (ref.layer2, ref.layer3, ref.layer4):  # MSRA: the 1x1 reduces resolution, the 3x3 keeps it
        layer[0].conv1.stride, layer[0].conv2.stride = (2, 2), (1, 1)
    ref.fc = nn.Identity()
    bb = _loaded(tv.state_dict(), stride_in_1x1=True)
    plain = _loaded(tv.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = bb(x)
        assert torch.equal(out, ref(x))
        assert not torch.allclose(out, plain(x), atol=1e-3)  # same weights, another function
    assert bb.stride_in_1x1 and not plain.stride_in_1x1
    assert not build_backbone("resnet18", stride_in_1x1=True).stride_in_1x1  # no 1x1 conv in a BasicBlock


def test_parse_and_check_arch():
    assert parse_arch("resnet50") == ("resnet50", 1)
    assert parse_arch("ResNet50x2") == ("resnet50", 2)
    assert parse_arch("resnet50w4") == ("resnet50", 4)
    assert parse_arch("resnet152") == ("resnet152", 1)
    check_arch("resnet50", 5)  # SwAV RN50-w5
    with pytest.raises(BenchError, match="no width 3"):
        check_arch("resnet50", 3)
    with pytest.raises(BenchError, match="has no width 2"):
        check_arch("resnet18", 2)
    with pytest.raises(BenchError, match="unknown architecture 'vit_b16'"):
        build_backbone("vit_b16")


def test_arch_for_blocks():
    assert arch_for_blocks(True, (3, 4, 6, 3)) == "resnet50"
    assert arch_for_blocks(False, (3, 4, 6, 3)) == "resnet34"
    assert arch_for_blocks(True, (3, 4, 23, 3)) == "resnet101"
    assert arch_for_blocks(True, (3, 8, 36, 3)) == "resnet152"
    assert arch_for_blocks(False, (2, 2, 2, 2)) == "resnet18"
    assert arch_for_blocks(True, (3, 4, 5, 3)) is None
