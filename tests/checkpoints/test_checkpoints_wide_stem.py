"""Wide ResNets with MoPro's 64-channel stem (pretrain's default ``model.wide_stem=false``) and SimCLR/SwAV's 64*width
stem both import: the width is read from the first block, the stem from conv1, and the network computes the same."""

from __future__ import annotations

import pytest
import torch

from mopro_bench.backbones import build_backbone
from mopro_bench.checkpoints import load_checkpoint
from mopro_bench.errors import BenchError

torch.set_num_threads(1)


@pytest.mark.parametrize("wide_stem", [False, True])
def test_wide_resnet_stem_roundtrip(tmp_path, wide_stem):
    torch.manual_seed(0)
    net = build_backbone("resnet50", 2, wide_stem=wide_stem).eval()
    assert net.conv1.weight.shape[0] == (128 if wide_stem else 64)  # resnet50x2: 64*2 or 64
    path = tmp_path / "r50x2.pth"
    torch.save(net.state_dict(), path)
    ck = load_checkpoint(path)
    assert ck.backbone.width == 2 and ck.backbone.conv1.weight.shape[0] == net.conv1.weight.shape[0]
    assert ck.coverage["architecture"]["wide_stem"] is wide_stem
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(ck.backbone(x), net(x))


def test_stem_that_fits_no_width_is_refused(tmp_path):
    sd = build_backbone("resnet50", 2, wide_stem=False).state_dict()
    sd["conv1.weight"] = torch.zeros(192, 3, 7, 7)  # neither 64 nor 64*2
    path = tmp_path / "odd.pth"
    torch.save(sd, path)
    with pytest.raises(BenchError, match="neither 64 nor 64\\*width"):
        load_checkpoint(path)
