"""Contract test for checkpoint-format plug-ins: every registered format goes through synth -> detect -> load.

For each registered format there must be a layout in :mod:`mopro_bench.checkpoints.synth` that the loader detects as
that format (a new format adds one); that file then loads to the same network -- the ResNet-18 for ResNet layouts,
a small ViT-S / DINOv2-style ViT / ConvNeXt for the ViT and ConvNeXt layouts, each compared with a plain timm model
holding the same weights -- (100% coverage, identical features) and the format's own ``detect`` accepts it. A new
format is tested here by being registered. Which format each layout is detected as is pinned: adding a format must
not take a layout from another one.
"""

from __future__ import annotations

import re

import pytest
import torch

from mopro_bench.checkpoints import load_checkpoint
from mopro_bench.checkpoints.formats import FORMATS, adapters
from mopro_bench.checkpoints.formats.base import Adapter
from mopro_bench.checkpoints.loader import detect_adapter
from mopro_bench.checkpoints.safeload import read_checkpoint
from mopro_bench.checkpoints.synth import CONVNEXT_LAYOUTS, FAMILY_LAYOUTS, LAYOUTS, random_family, random_resnet, write_layout
from tests.checkpoints.test_checkpoints_adapters import _reference

ADAPTERS = adapters()
NAMES = [a.name for a in ADAPTERS]
MSRA = {"detectron2-msra", "detectron2-detector", "caffe2-msra"}  # BGR caffe input, stride in the 1x1 conv
SUFFIX = {"safetensors": ".safetensors", "detectron2-moco": ".pkl", "detectron2-msra": ".pkl", "detectron2-detector": ".pkl",
          "caffe2-msra": ".pkl", "timm-convnext": ".safetensors"}
# the format every synth layout is detected as (a new format must not take one from another format)
DETECTED = {
    "mopro": "mopro", "mopro-bench": "mopro", "moco-v1": "moco", "moco-v2": "moco", "pcl": "moco", "moco-v3": "moco",
    "swav": "swav", "dino": "dino", "dino-backbone": "torchvision", "torchvision": "torchvision",
    "torchvision-old": "torchvision", "timm": "torchvision", "timm-train": "timm", "byol": "torchvision",
    "simclr": "torchvision", "supervised-ddp": "torchvision", "detectron2-moco": "detectron2",
    "detectron2-msra": "detectron2", "detectron2-detector": "detectron2", "caffe2-msra": "caffe2",
    "safetensors": "torchvision",
    "dino-vit": "dino", "dino-vit-backbone": "timm", "moco-v3-vit": "moco", "mae": "mae", "dinov2": "dinov2",
    "timm-vit": "timm", "timm-train-vit": "timm", "convnext-fb": "convnext", "timm-convnext": "timm",
    "timm-train-convnext": "timm",
}
MOCO_V3_HEADS = 12  # moco-v3/vits.py: vit_small has 12 heads (DeiT / DINO / timm: 6)


def timm_reference(model: torch.nn.Module, x: torch.Tensor, **change) -> torch.Tensor:
    """A plain timm model (timm's own class, fixed image size) of ``model``'s configuration (``change``: e.g.
    ``num_heads``) holding its weights: ``forward_head(forward_features(x), pre_logits=True)``."""
    from timm.models.convnext import ConvNeXt
    from timm.models.vision_transformer import VisionTransformer

    cfg = {**model.config, **change}
    if model.family == "vit":
        ref = VisionTransformer(img_size=cfg["img_size"], patch_size=cfg["patch_size"], embed_dim=cfg["embed_dim"],
                                depth=cfg["depth"], num_heads=cfg["num_heads"], mlp_ratio=cfg["mlp_ratio"],
                                qkv_bias=cfg["qkv_bias"], init_values=cfg["init_values"], num_classes=0)
    else:
        ref = ConvNeXt(depths=tuple(cfg["depths"]), dims=tuple(cfg["dims"]), use_grn=cfg["use_grn"],
                       ls_init_value=cfg["ls_init_value"], conv_mlp=cfg.get("conv_mlp", False), num_classes=0)
    ref.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        return ref.eval().forward_head(ref.eval().forward_features(x), pre_logits=True)


@pytest.fixture(scope="module")
def r18(tmp_path_factory):
    """Every synth layout of one random ResNet-18, written once, with the format the loader detects for it."""
    model = random_resnet("resnet18", seed=0)
    sd = model.state_dict()
    trunk = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    fc = {"weight": sd["fc.weight"], "bias": sd["fc.bias"]}
    root = tmp_path_factory.mktemp("layouts")
    files, detected = {}, {}
    for layout in LAYOUTS:
        path = write_layout(layout, trunk, root / f"{layout}{SUFFIX.get(layout, '.pth')}", fc=fc, arch="resnet18",
                            low_dim=16)
        files[layout] = path
        detected[layout] = detect_adapter(read_checkpoint(path).obj, str(path)).name
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    refs = {"ref": _reference(model, x), "ref_msra": _reference(model, x, msra=True)}
    return {"files": files, "detected": detected, "x": x, **refs}


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    """Every ViT / ConvNeXt synth layout, written once from small random trunks (ViT-S depth 2 at 32 px; a DINOv2-like
    ViT-S/14 with LayerScale at 42 px; ConvNeXt widths 96..768, depths 1-1-2-1), with the plain-timm reference output."""
    vit = random_family("vit_small_patch16_224", seed=1, depth=2, img_size=32)
    dv2 = random_family("vit_small_patch16_224", seed=2, depth=2, img_size=42, patch_size=14, init_values=1e-5)
    cnx = random_family("convnext_tiny", seed=3, depths=[1, 1, 2, 1])
    root = tmp_path_factory.mktemp("family_layouts")
    files, detected, refs, xs = {}, {}, {}, {}
    for layout in FAMILY_LAYOUTS:
        model = dv2 if layout == "dinov2" else cnx if layout in CONVNEXT_LAYOUTS else vit
        path = write_layout(layout, model.state_dict(), root / f"{layout}{SUFFIX.get(layout, '.pth')}")
        files[layout] = path
        detected[layout] = detect_adapter(read_checkpoint(path).obj, str(path)).name
        n = model.config.get("img_size", 32)
        xs[layout] = torch.randn(2, 3, n, n, generator=torch.Generator().manual_seed(0))
        heads = {"num_heads": MOCO_V3_HEADS} if layout == "moco-v3-vit" else {}
        refs[layout] = timm_reference(model, xs[layout], **heads)
    return {"files": files, "detected": detected, "refs": refs, "x": xs}


def test_every_layout_is_detected_as_pinned(r18, families):
    assert set(DETECTED) == set(LAYOUTS) | set(FAMILY_LAYOUTS)
    assert {**r18["detected"], **families["detected"]} == DETECTED


def test_registry_and_detection_order():
    assert len(set(NAMES)) == len(NAMES) and set(NAMES) == set(FORMATS.names())
    assert [a.priority for a in ADAPTERS] == sorted(a.priority for a in ADAPTERS)
    assert NAMES[-1] == "torchvision"  # the generic fallback is tried last
    for a in ADAPTERS:
        assert isinstance(a, Adapter) and FORMATS.get(a.name) is a
        assert re.fullmatch(r"[a-z0-9_]+", a.name) and a.description and isinstance(a.priority, int)


@pytest.mark.parametrize("name", NAMES)
def test_format_round_trips_a_synth_layout(name, r18, families):
    layouts = [lay for lay, fmt in r18["detected"].items() if fmt == name]
    others = [lay for lay, fmt in families["detected"].items() if fmt == name]
    assert layouts or others, f"no layout in checkpoints/synth.py is detected as {name!r}: add one to LAYOUTS/write_layout"
    if others:  # the format's first ViT / ConvNeXt layout
        _family_round_trip(name, others[0], families)
    if not layouts:
        return
    layout = layouts[0]
    path = r18["files"][layout]
    obj = read_checkpoint(path).obj
    assert FORMATS.get(name).detect(obj)  # the format's own detect accepts it
    ck = load_checkpoint(path)
    assert ck.format == name and ck.meta["adapter"] == name
    assert (ck.arch, ck.width) == ("resnet18", 1)
    assert ck.coverage["percent"] == 100.0 and ck.coverage["loaded"] + len(ck.coverage["filled"]) == ck.coverage["expected"]
    with torch.no_grad():
        out = ck.backbone.eval()(r18["x"])
    ref = r18["ref_msra"] if layout in MSRA else r18["ref"]
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max(), layout  # caffe2 folds frozen BN: float rounding
    for sel in ck.meta["selectable"]:
        assert load_checkpoint(path, select=sel).meta["select"] == sel


def _family_round_trip(name: str, layout: str, families) -> None:
    path = families["files"][layout]
    assert FORMATS.get(name).detect(read_checkpoint(path).obj)
    ck = load_checkpoint(path)
    assert ck.format == name and ck.family in ("vit", "convnext")
    assert ck.coverage["percent"] == 100.0 and ck.coverage["loaded"] == ck.coverage["expected"]
    with torch.no_grad():
        out = ck.backbone.eval()(families["x"][layout])
    torch.testing.assert_close(out, families["refs"][layout], rtol=0, atol=1e-5, msg=layout)
    for sel in ck.meta["selectable"]:
        assert load_checkpoint(path, select=sel).meta["select"] == sel


def test_a_registered_format_is_used_by_the_loader_in_priority_order(r18, tmp_path):
    from mopro_bench.checkpoints.formats.torchvision import TorchvisionAdapter

    class ToyAdapter(TorchvisionAdapter):
        name = "toy"
        description = "a torchvision dict with a 'toy' marker"
        priority = 5  # before every built-in

        def detect(self, obj):
            return "toy" in obj and super().detect(obj)

    path = tmp_path / "toy.pth"
    torch.save({"toy": 1, "state_dict": read_checkpoint(r18["files"]["torchvision"]).obj}, path)
    FORMATS.register("toy", ToyAdapter())
    try:
        assert adapters()[0].name == "toy"
        assert load_checkpoint(path).format == "toy"
    finally:
        FORMATS.unregister("toy")
    assert load_checkpoint(path).format == "torchvision" and "toy" not in [a.name for a in adapters()]
