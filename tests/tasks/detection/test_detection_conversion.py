"""A checkpoint exported for detectron2 fills every weight of detectron2's R50-FPN backbone, and computes the same."""

from __future__ import annotations

import pickle

import pytest
import torch

from mopro_bench.checkpoints import load_checkpoint
from mopro_bench.checkpoints.detectron2 import export_detectron2
from mopro_bench.checkpoints.synth import random_resnet, write_layout
from mopro_bench.errors import BenchError
from mopro_bench.tasks.detection.config import build_cfg, plan_run
from mopro_bench.tasks.detection.task import MOCO_C4, MOPRO


@pytest.fixture(scope="module")
def d2():
    try:
        import detectron2  # noqa: F401
        from detectron2.checkpoint import DetectionCheckpointer  # noqa: F401
        from detectron2.modeling import build_model  # noqa: F401
    except Exception as e:  # not installed, or a broken install
        pytest.skip(f"detectron2 cannot be imported ({type(e).__name__}: {e}); install it with `make setup-detection`")


def _tv_to_d2(k: str) -> str:
    """torchvision -> detectron2 trunk names, spelled out independently of the exporter."""
    if k.startswith("conv1."):
        return "stem.conv1." + k[6:]
    if k.startswith("bn1."):
        return "stem.conv1.norm." + k[4:]
    stage, block, part, leaf = k.split(".", 3)
    res = {"layer1": "res2", "layer2": "res3", "layer3": "res4", "layer4": "res5"}[stage]
    if part == "downsample":
        sub, leaf = leaf.split(".", 1)
        part = "shortcut" if sub == "0" else "shortcut.norm"
    elif part.startswith("bn"):
        part = f"conv{part[2]}.norm"
    return f"{res}.{block}.{part}.{leaf}"


def _cfg(ck, pkl, device="cuda", proto=MOPRO):
    # the protocol's real network (SyncBN in backbone and FPN); built on CPU below, which SyncBN allows
    plan = plan_run(proto, ck, device=device, num_gpus=1, num_classes=80, train_dataset="unused_train",
                    val_dataset="unused_val", weights=str(pkl), output_dir=str(pkl.parent))
    cfg = build_cfg(proto, plan)
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    return cfg


@pytest.mark.slow
def test_exported_checkpoint_fills_detectron2_r50_fpn(d2, tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    # a MoCo v2 checkpoint (random weights and BN statistics) -> our import -> detectron2 pickle
    trunk = {k: v for k, v in random_resnet("resnet50", seed=3).state_dict().items() if not k.startswith("fc.")}
    src = write_layout("moco-v2", trunk, tmp_path / "moco_v2.pth.tar")
    ck = load_checkpoint(src)
    pkl = export_detectron2(ck, tmp_path / "r50.pkl")
    cfg = _cfg(ck, pkl)
    assert cfg.MODEL.RESNETS.NORM == "SyncBN" and cfg.MODEL.RESNETS.DEPTH == 50

    torch.manual_seed(0)
    model = build_model(cfg).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    checkpointer = DetectionCheckpointer(model)
    reports = []
    load_model = checkpointer._load_model
    checkpointer._load_model = lambda c: reports.append(load_model(c)) or reports[-1]
    checkpointer.load(str(pkl))
    (inc,) = reports

    prefix = "backbone.bottom_up."
    trunk_keys = {k for k in model.state_dict() if k.startswith(prefix) and not k.endswith("num_batches_tracked")}
    assert len(trunk_keys) == len([k for k in trunk if not k.endswith("num_batches_tracked")]) == 265
    # detectron2's own report: nothing of the trunk missing, nothing unused, no shape skipped
    assert not [k for k in inc.missing_keys if k.startswith(prefix) and not k.endswith("num_batches_tracked")]
    assert inc.unexpected_keys == [] and inc.incorrect_shapes == []
    # everything outside the trunk (FPN, RPN, ROI heads) is left at its initialisation, and reported as such
    assert {k.split(".")[0] for k in inc.missing_keys if not k.startswith(prefix)} == {"backbone", "proposal_generator",
                                                                                        "roi_heads"}
    # tensor equality with the source checkpoint, by independently derived names; nothing left at init
    state = model.state_dict()
    for k, v in trunk.items():
        if k.endswith("num_batches_tracked"):
            continue
        name = prefix + _tv_to_d2(k)
        assert torch.equal(state[name], v), name
        assert not torch.equal(state[name], before[name]) or v.abs().sum() == 0, f"{name} kept its initial value"

    # same function: detectron2's ResNet (eval mode) and our backbone give the same stage outputs
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = ck.backbone.eval().forward_features(x)
        theirs = model.backbone.bottom_up(x)
    for stage in ("res2", "res3", "res4", "res5"):
        assert torch.allclose(ours[stage], theirs[stage], atol=1e-4, rtol=1e-4), stage


def test_backbone_load_check_names_what_is_missing(d2, tmp_path):
    from mopro_bench.tasks.detection.runner import check_backbone_load

    ck = load_checkpoint("random:resnet50")
    pkl = export_detectron2(ck, tmp_path / "r50.pkl")
    report = check_backbone_load(_cfg(ck, pkl, device="cpu"))
    assert report["backbone_loaded"] == report["backbone_tensors"] == 265 and not report["backbone_missing"]
    assert report["randomly_initialised_modules"] > 0  # FPN + heads
    # drop one tensor and corrupt a shape: both are named, nothing is silently left at init
    obj = pickle.loads(pkl.read_bytes())
    del obj["model"]["res4.2.conv2.weight"]
    obj["model"]["res5.0.shortcut.norm.bias"] = obj["model"]["res5.0.shortcut.norm.bias"][:7]
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps(obj))
    with pytest.raises(BenchError, match=r"res4\.2\.conv2\.weight") as e:
        check_backbone_load(_cfg(ck, bad, device="cpu"))
    assert "res5.0.shortcut.norm.bias" in str(e.value)


def test_c4_takes_res5_of_the_checkpoint_into_its_roi_head(d2, tmp_path):
    from detectron2.modeling import build_model

    from mopro_bench.tasks.detection.runner import TRUNK_KEY, check_backbone_load

    ck = load_checkpoint("random:resnet50")
    pkl = export_detectron2(ck, tmp_path / "r50.pkl")
    cfg = _cfg(ck, pkl, proto=MOCO_C4)
    report = check_backbone_load(cfg)  # stem/res2-4 in the backbone, res5 in the ROI head: all 265 filled
    assert report["backbone_loaded"] == report["backbone_tensors"] == 265
    model = build_model(cfg)
    assert isinstance(model.roi_heads.res5.norm, torch.nn.SyncBatchNorm)  # MoCo's extra norm after res5
    # the extra norm is new (initialised, not looked for in the checkpoint); res5's blocks are the checkpoint's
    assert not TRUNK_KEY.match("roi_heads.res5.norm.weight") and TRUNK_KEY.match("roi_heads.res5.2.conv3.norm.weight")
    from detectron2.checkpoint import DetectionCheckpointer

    DetectionCheckpointer(model).load(str(pkl))
    assert torch.equal(model.roi_heads.res5[2].conv3.weight, ck.backbone.layer4[2].conv3.weight)
    assert torch.equal(model.backbone.res4[5].conv2.norm.running_var, ck.backbone.layer3[5].bn2.running_var)
