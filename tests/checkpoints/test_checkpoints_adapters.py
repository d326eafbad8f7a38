"""Every adapter: a file written in its layout from one random ResNet-50 loads back to the same function."""

from __future__ import annotations

import copy
import hashlib
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from mopro_bench.checkpoints import load_checkpoint
from mopro_bench.checkpoints.synth import LAYOUTS, random_resnet, write_layout

torch.set_num_threads(1)

# layout -> (adapter, heads, default network)
EXPECT = {
    "mopro": ("mopro", {"classifier", "projection", "prototypes"}, "encoder_q"),
    "mopro-bench": ("mopro", {"classifier", "projection", "prototypes"}, "encoder_q"),
    "moco-v1": ("moco", {"projection"}, "encoder_q"),
    "moco-v2": ("moco", {"projection"}, "encoder_q"),
    "pcl": ("moco", {"projection"}, "encoder_q"),
    "moco-v3": ("moco", {"projection", "predictor"}, "base_encoder"),
    "swav": ("swav", {"projection", "prototypes"}, None),
    "dino": ("dino", {"projection"}, "teacher"),
    "dino-backbone": ("torchvision", set(), None),
    "torchvision": ("torchvision", {"classifier"}, None),
    "torchvision-old": ("torchvision", {"classifier"}, None),
    "timm": ("torchvision", {"classifier"}, None),
    "timm-train": ("timm", {"classifier"}, "state_dict"),
    "byol": ("torchvision", set(), None),
    "simclr": ("torchvision", {"classifier"}, None),
    "supervised-ddp": ("torchvision", {"classifier"}, None),
    "detectron2-moco": ("detectron2", {"projection"}, None),
    "detectron2-msra": ("detectron2", set(), None),
    "detectron2-detector": ("detectron2", set(), None),
    "caffe2-msra": ("caffe2", {"classifier"}, None),
    "safetensors": ("torchvision", {"classifier"}, None),
}
MSRA = {"detectron2-msra", "detectron2-detector", "caffe2-msra"}  # detectron2's defaults: BGR caffe input, stride in the 1x1 conv
SUFFIX = {"safetensors": ".safetensors", "detectron2-moco": ".pkl", "detectron2-msra": ".pkl", "detectron2-detector": ".pkl",
          "caffe2-msra": ".pkl"}


def _reference(model: nn.Module, x: torch.Tensor, msra: bool = False) -> torch.Tensor:
    ref = copy.deepcopy(model)
    ref.fc = nn.Identity()
    if msra:
        for layer in (ref.layer2, ref.layer3, ref.layer4):
            layer[0].conv1.stride, layer[0].conv2.stride = (2, 2), (1, 1)
    with torch.no_grad():
        return ref.eval()(x)


@pytest.fixture(scope="module")
def r50():
    model = random_resnet("resnet50", seed=0)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    sd = model.state_dict()
    return SimpleNamespace(trunk={k: v for k, v in sd.items() if not k.startswith("fc.")},
                           fc={"weight": sd["fc.weight"], "bias": sd["fc.bias"]}, x=x,
                           ref=_reference(model, x), ref_msra=_reference(model, x, msra=True))


def _out(ck, x):
    with torch.no_grad():
        return ck.backbone.eval()(x)


def test_every_layout_is_covered():
    assert set(EXPECT) == set(LAYOUTS)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_loads_to_the_same_resnet50(layout, r50, tmp_path):
    path = tmp_path / f"{layout}{SUFFIX.get(layout, '.pth')}"
    write_layout(layout, r50.trunk, path, fc=r50.fc)
    try:
        ck = load_checkpoint(path)
        fmt, heads, select = EXPECT[layout]
        assert ck.format == fmt
        assert (ck.arch, ck.width) == ("resnet50", 1)
        assert ck.meta["select"] == select
        assert set(ck.heads) == heads
        assert ck.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        out = _out(ck, r50.x)
        assert out.shape == (1, 2048)
        if layout == "caffe2-msra":  # frozen BN folded into scale/shift: equal up to float rounding
            assert (out - r50.ref_msra).abs().max() <= 1e-5 * r50.ref_msra.abs().max()
            assert len(ck.coverage["derived"]) == 2 * 53
        else:
            assert torch.equal(out, r50.ref_msra if layout in MSRA else r50.ref), layout
            assert ck.coverage["derived"] == []
        # coverage: every backbone tensor came from the file, except num_batches_tracked where the file has none
        cov = ck.coverage
        assert cov["expected"] == 318 and cov["percent"] == 100.0
        assert cov["loaded"] + len(cov["filled"]) == 318
        n_bn = 53
        assert len(cov["filled"]) == (n_bn if layout in ("torchvision-old", *MSRA) else 0)
        if layout in MSRA:
            assert (ck.preprocess.channel_order, ck.preprocess.scale) == ("BGR", 255.0)
            assert ck.preprocess.mean == pytest.approx((103.53, 116.28, 123.675))
            assert ck.backbone.stride_in_1x1 and bool(ck.meta["warnings"]) == layout.startswith("detectron2")
        else:
            assert (ck.preprocess.channel_order, ck.preprocess.scale) == ("RGB", 1.0)
            assert ck.preprocess.mean == (0.485, 0.456, 0.406) and not ck.backbone.stride_in_1x1
            assert ck.meta["warnings"] == []
        if "classifier" in heads and fmt != "mopro":  # the supervised fc, as an ImageNet-1k classifier
            lin = ck.classifier(("imagenet1k",))
            assert torch.equal(lin.weight, r50.fc["weight"]) and torch.equal(lin.bias, r50.fc["bias"])
            assert ck.heads["classifier"].class_space == "imagenet1k"
        rec = ck.record()
        assert rec["format"] == fmt and rec["sha256"] == ck.sha256 and rec["select"] == select
    finally:
        path.unlink()


def test_mopro_heads_and_class_spaces(tmp_path):
    model = random_resnet("resnet18", seed=3)
    trunk = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    for layout, num_class, space in (("mopro", 1000, "webvision1k"), ("mopro", 5000, "webvision5k"),
                                     ("mopro", 17, "custom")):
        p = tmp_path / f"{layout}{num_class}.pth"
        write_layout(layout, trunk, p, num_class=num_class, low_dim=16, arch="resnet18")
        ck = load_checkpoint(p)
        raw = torch.load(p, weights_only=True)["state_dict"]
        h = ck.heads["classifier"]
        assert (h.num_classes, h.class_space) == (num_class, space)
        assert torch.equal(h.state_dict["weight"], raw["module.encoder_q.classifier.weight"])
        assert torch.equal(ck.heads["prototypes"].state_dict["prototypes"], raw["module.prototypes"])
        assert ck.heads["prototypes"].state_dict["prototypes"].shape == (num_class, 16)
        assert set(ck.heads["projection"].state_dict) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
        assert ck.coverage["ignored"] == {"encoder_k": 126, "queue": 2}
        # a WebVision-1k classifier is usable where an ImageNet-1k one is expected; a 5k one is not
        assert (ck.classifier(("imagenet1k", "webvision1k")) is not None) == (space == "webvision1k")
        with torch.no_grad():
            x = torch.randn(2, 3, 64, 64)
            logits = ck.classifier()(ck.backbone.eval()(x))
        assert logits.shape == (2, num_class)


@pytest.fixture(scope="module")
def two_nets():
    a, b = random_resnet("resnet18", seed=10), random_resnet("resnet18", seed=11)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    strip = lambda m: {k: v for k, v in m.state_dict().items() if not k.startswith("fc.")}  # noqa: E731
    return SimpleNamespace(a=strip(a), b=strip(b), x=x, ref_a=_reference(a, x), ref_b=_reference(b, x))


@pytest.mark.parametrize("layout,other", [("mopro", "encoder_k"), ("mopro-bench", "encoder_k"), ("moco-v2", "encoder_k"),
                                          ("moco-v3", "momentum_encoder"), ("dino", "student"),
                                          ("timm-train", "state_dict_ema")])
def test_select_the_other_network(layout, other, two_nets, tmp_path):
    p = tmp_path / "two.pth"
    write_layout(layout, two_nets.a, p, second=two_nets.b, arch="resnet18", low_dim=16)
    default = load_checkpoint(p)
    assert torch.equal(_out(default, two_nets.x), two_nets.ref_a)
    assert default.name == "two.pth" and default.identity == default.sha256
    chosen = load_checkpoint(p, select=other)
    assert torch.equal(_out(chosen, two_nets.x), two_nets.ref_b)
    assert chosen.meta["select"] == other and chosen.record()["select"] == other
    assert chosen.name == f"two.pth#{other}"
    assert chosen.sha256 == default.sha256 and chosen.identity != default.identity  # feature caches stay apart
    by_spec = load_checkpoint(f"{p}#{other}")
    assert torch.equal(_out(by_spec, two_nets.x), two_nets.ref_b)
    assert default.meta["select"] in default.meta["selectable"] and other in default.meta["selectable"]


def test_random_baseline_is_seeded_and_says_so():
    a = load_checkpoint("random:resnet18", seed=0)
    b = load_checkpoint("random:resnet18", seed=0)
    c = load_checkpoint("random:resnet18", seed=1)
    assert a.format == "random" and a.sha256 is None and a.coverage["loaded"] == 0
    assert torch.equal(a.backbone.conv1.weight, b.backbone.conv1.weight)
    assert not torch.equal(a.backbone.conv1.weight, c.backbone.conv1.weight)


@pytest.mark.slow
def test_width2_mopro_bench_checkpoint(tmp_path):
    """A ResNet-50 (2x) from our Backbone, saved the way the pretrainer does: width inferred, same output."""
    from mopro_bench.backbones import build_backbone

    torch.manual_seed(5)
    bb = build_backbone("resnet50", 2).eval()
    with torch.no_grad():
        for m in bb.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = bb(x)
    p = tmp_path / "mopro_x2.pth"
    write_layout("mopro-bench", bb.state_dict(), p, arch="resnet50x2", width=2, num_class=10, low_dim=16)
    del bb
    ck = load_checkpoint(p)
    assert (ck.format, ck.arch, ck.width, ck.backbone.feature_dim) == ("mopro", "resnet50", 2, 4096)
    assert ck.heads["classifier"].state_dict["weight"].shape == (10, 4096)
    assert ck.meta["source"] == "mopro-bench pretrain" and ck.meta["warnings"] == []
    assert torch.equal(_out(ck, x), ref)
    assert load_checkpoint(p, arch="resnet50x2").width == 2


def test_our_pretrainer_model_loads(tmp_path):
    """The real pretrainer's MoPro module, saved in its checkpoint layout, loads with encoder_q as the backbone."""
    model_mod = pytest.importorskip("mopro_bench.pretrain.model")
    from mopro_bench.backbones import Backbone

    torch.manual_seed(0)
    m = model_mod.MoPro("resnet18", 1, num_class=10, low_dim=16, queue_size=32).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.1)
    obj = {"mopro_bench": {"kind": "pretrain", "version": 1, "arch": "resnet18", "width": 1, "num_class": 10, "low_dim": 16,
                           "class_space": "custom", "config": {"aug": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}},
           "epoch": 1, "arch": "resnet18", "state_dict": m.state_dict(), "optimizer": {}, "step": 1}
    p = tmp_path / "ours.pth"
    torch.save(obj, p)
    ck = load_checkpoint(p)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(_out(ck, x), Backbone.forward(m.encoder_q, x))
    assert ck.heads["classifier"].class_space == "custom" and ck.heads["classifier"].num_classes == 10
    assert ck.preprocess.mean == (0.5, 0.5, 0.5) and ck.preprocess.std == (0.25, 0.25, 0.25)
