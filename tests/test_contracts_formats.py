"""Contract test for checkpoint-format plug-ins: every registered format goes through synth -> detect -> load.

For each registered format there must be a layout in :mod:`mopro_bench.checkpoints.synth` that the loader detects as
that format (a new format adds one); that file then loads to the same ResNet-18 (100% coverage, identical features)
and the format's own ``detect`` accepts it. A new format is tested here by being registered.
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
from mopro_bench.checkpoints.synth import LAYOUTS, random_resnet, write_layout
from tests.checkpoints.test_checkpoints_adapters import _reference

ADAPTERS = adapters()
NAMES = [a.name for a in ADAPTERS]
MSRA = {"detectron2-msra", "detectron2-detector", "caffe2-msra"}  # BGR caffe input, stride in the 1x1 conv
SUFFIX = {"safetensors": ".safetensors", "detectron2-moco": ".pkl", "detectron2-msra": ".pkl", "detectron2-detector": ".pkl",
          "caffe2-msra": ".pkl"}


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


def test_registry_and_detection_order():
    assert len(set(NAMES)) == len(NAMES) and set(NAMES) == set(FORMATS.names())
    assert [a.priority for a in ADAPTERS] == sorted(a.priority for a in ADAPTERS)
    assert NAMES[-1] == "torchvision"  # the generic fallback is tried last
    for a in ADAPTERS:
        assert isinstance(a, Adapter) and FORMATS.get(a.name) is a
        assert re.fullmatch(r"[a-z0-9_]+", a.name) and a.description and isinstance(a.priority, int)


@pytest.mark.parametrize("name", NAMES)
def test_format_round_trips_a_synth_layout(name, r18):
    layouts = [lay for lay, fmt in r18["detected"].items() if fmt == name]
    assert layouts, f"no layout in checkpoints/synth.py is detected as {name!r}: add one to LAYOUTS/write_layout"
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
