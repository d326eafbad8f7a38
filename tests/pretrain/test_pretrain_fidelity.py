"""Pretrainer defaults against the reference code (strong-view order, conv1 width of wide ResNets, precision), the
settings that make each difference explicit, config validation, and the unseen-prototype mask with relabelled samples."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mopro_bench.errors import BenchError
from mopro_bench.pretrain.config import PretrainConfig, from_dict, make_config
from mopro_bench.pretrain.data import strong_transform
from mopro_bench.pretrain.model import Encoder, MoPro
from mopro_bench.pretrain.trainer import StepEnv, mopro_step


def _op_names(cfg) -> list[str]:
    return [type(t).__name__ for t in strong_transform(cfg.aug).transforms]


def test_strong_view_order_is_the_references_by_default_and_settable():
    # reference (MoPro DataLoader/dataloader.py, transform_strong): RRC, RandomGrayscale, ColorJitter, flip
    assert _op_names(make_config()) == ["RandomResizedCrop", "RandomGrayscale", "ColorJitter", "RandomHorizontalFlip",
                                        "ToTensor", "Normalize"]
    old = make_config({"aug.strong_order": "flip-jitter-gray"})
    assert _op_names(old) == ["RandomResizedCrop", "RandomHorizontalFlip", "ColorJitter", "RandomGrayscale", "ToTensor",
                              "Normalize"]
    with pytest.raises(BenchError, match="strong_order"):
        make_config({"aug.strong_order": "jitter-first"})


def test_the_order_changes_the_image():
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    img = Image.fromarray((torch.rand(40, 40, 3, generator=g) * 255).to(torch.uint8).numpy())
    outs = {}
    for order in ("gray-jitter-flip", "flip-jitter-gray"):
        cfg = make_config({"aug.strong_order": order, "aug.image_size": 32, "aug.grayscale_p": 1.0})
        torch.manual_seed(3)
        outs[order] = strong_transform(cfg.aug)(img)
    # grayscale first: the jitter's saturation/hue act on a gray image, which stays gray (all channels equal)
    # before normalisation; jitter first, then grayscale: also gray. Both gray, but different values.
    assert not torch.allclose(outs["gray-jitter-flip"], outs["flip-jitter-gray"])


def test_wide_resnet_keeps_a_64_channel_stem_by_default():
    with torch.device("meta"):  # shapes only, no initialisation work
        m = Encoder("resnet50", 2, num_class=4, low_dim=8)
        wide = Encoder("resnet50", 2, num_class=4, low_dim=8, wide_stem=True)
        one = Encoder("resnet18", 1, num_class=4, low_dim=8, wide_stem=True)
    assert m.conv1.weight.shape[0] == 64 and m.bn1.num_features == 64  # reference resnet.py: conv1 stays 64 wide
    assert m.layer1[0].conv1.weight.shape[:2] == (128, 64) and m.feature_dim == 4096
    assert wide.conv1.weight.shape[0] == 128 and wide.layer1[0].conv1.weight.shape[1] == 128 and wide.feature_dim == 4096
    assert one.conv1.weight.shape[0] == 64  # no effect at width 1


def test_defaults_match_the_reference_and_are_recorded():
    c = PretrainConfig()
    assert (c.aug.strong_order, c.model.wide_stem, c.run.precision) == ("gray-jitter-flip", False, "fp32")
    d = c.to_dict()
    assert d["aug"]["strong_order"] == "gray-jitter-flip" and d["model"]["wide_stem"] is False
    assert d["run"]["precision"] == "fp32"
    assert from_dict(d) == c
    # a config saved before these settings existed means the old behaviour, not today's defaults
    for sec, key in (("aug", "strong_order"), ("model", "wide_stem")):
        del d[sec][key]
    old = from_dict(d)
    assert (old.aug.strong_order, old.model.wide_stem) == ("flip-jitter-gray", True)


@pytest.mark.parametrize("key,value,match", [
    ("optim.lr", float("nan"), "finite"), ("optim.lr", float("inf"), "finite"), ("optim.lr", 0.0, "positive"),
    ("optim.lr", -0.1, "positive"), ("optim.momentum", 1.0, r"\[0, 1\)"), ("optim.weight_decay", -1e-4, ">= 0"),
    ("mopro.temperature", float("nan"), "finite"), ("mopro.temperature", 0.0, "positive"),
    ("mopro.moco_m", 1.5, r"\[0, 1\]"), ("mopro.w_proto", float("inf"), "finite"), ("optim.gamma", 0.0, r"\(0, 1\]"),
    ("data.batch_size", 0, "positive"), ("optim.epochs", 0, "positive"), ("mopro.start_clean_epoch", -1, ">= 0"),
    ("optim.milestones", [40, 20], "increasing"), ("aug.crop_scale", [0.5, float("nan")], "finite"),
    ("data.batch_size", 16384, "queue_size"),
])
def test_settings_are_validated_up_front(key, value, match):
    with pytest.raises(BenchError, match=match):
        make_config({key: value})


def test_relabelled_to_a_class_without_prototype_gets_a_finite_loss():
    """mask_unseen_protos: the mask must spare the cleaned label, not the given one (was: loss inf)."""
    torch.manual_seed(0)
    model = MoPro("resnet18", 1, num_class=6, low_dim=8, queue_size=16)
    with torch.no_grad():
        model.prototypes.copy_(F.normalize(torch.randn(6, 8), dim=1))
        model.prototypes[5].zero_()  # class 5 has no prototype yet
        model.encoder_q.classifier.weight.zero_()
        model.encoder_q.classifier.bias.copy_(torch.tensor([0, 0, 0, 0, 0, 30.0]))  # the classifier says class 5
    cfg = make_config({"model.arch": "resnet18", "model.num_class": 6, "model.low_dim": 8, "mopro.queue_size": 16,
                       "data.batch_size": 8, "aug.image_size": 32, "mopro.start_clean_epoch": 0, "mopro.pseudo_th": 0.4})
    x_q, x_k = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)
    target = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    protos = model.prototypes.clone()
    with torch.no_grad():
        _, q = model.encoder_q(x_q)
    opt = torch.optim.SGD(model.encoder_q.parameters(), lr=0.0)
    stats = mopro_step(model, model.encoder_q, opt, x_q, x_k, target, epoch=1, step=0, env=StepEnv(cfg))
    assert stats[7] == 8  # every sample relabelled to class 5 (soft score 0.5 + 0.5 * 0 > 0.4)
    # expected: logits q . P^T / T with the other unseen classes (none here besides 5) masked; class 5 keeps logit 0
    logits = q @ protos.t() / 0.1
    want = F.cross_entropy(logits, torch.full((8,), 5)).item()
    assert math.isfinite(stats[3].item()) and stats[3].item() == pytest.approx(want, rel=1e-5)
