"""coco_maskrcnn protocols and the detectron2 config built from them."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from mopro_bench.backbones import Preprocess
from mopro_bench.errors import BenchError
from mopro_bench.registry import get_task
from mopro_bench.tasks.detection.config import effective_schedule, plan_run
from mopro_bench.tasks.detection.task import COCO_MASKRCNN, MOCO_C4, MOPRO, MOPRO_SHORT

REPO = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())


def _detectron2():
    try:
        import detectron2  # noqa: F401
        from detectron2.config import get_cfg  # noqa: F401
    except Exception as e:  # not installed, or a broken install
        pytest.skip(f"detectron2 cannot be imported ({type(e).__name__}: {e}); install it with `make setup-detection`")


def _ck(arch="resnet50", stride_in_1x1=False, pre=Preprocess()):
    """What plan_run reads from a LoadedCheckpoint (no network needed)."""
    return SimpleNamespace(arch=arch, width=1, preprocess=pre, backbone=SimpleNamespace(stride_in_1x1=stride_in_1x1))


def _plan(proto=MOPRO, ck=None, device="cuda", num_gpus=8, **kw):
    args = dict(device=device, num_gpus=num_gpus, num_classes=80, train_dataset="t", val_dataset="v",
                weights="w.pkl", output_dir="/tmp/out")
    args.update(kw)
    return plan_run(proto, ck or _ck(), **args)


def test_protocols_and_ids():
    assert COCO_MASKRCNN.default_protocol == "mopro"
    assert get_task("coco_maskrcnn").protocol_id == "coco_maskrcnn@mopro"
    assert get_task("coco_maskrcnn@mopro-short").protocol_id == "coco_maskrcnn@mopro-short"
    changed = get_task("coco_maskrcnn", {"max_iter": 1000, "steps": [600, 800]})
    assert changed.protocol_id.startswith("coco_maskrcnn@mopro+") and changed.protocol.max_iter == 1000
    # the 1x and short protocols differ only in their name, description and schedule scale
    diff = {f.name for f in dataclasses.fields(MOPRO) if getattr(MOPRO, f.name) != getattr(MOPRO_SHORT, f.name)}
    assert diff == {"name", "description", "schedule_scale"}
    p = MOPRO.params()
    assert (p["max_iter"], p["steps"], p["base_lr"], p["ims_per_batch"]) == (90000, [60000, 80000], 0.02, 16)
    assert p["min_size_train"] == list(range(640, 801, 32)) and p["min_size_test"] == 800
    assert (p["norm"], p["fpn_norm"], p["freeze_at"], p["precise_bn"], p["stride_in_1x1"]) == ("SyncBN", "SyncBN", 0, True, False)
    assert p["pixel_mean"] == pytest.approx([0.485 * 255, 0.456 * 255, 0.406 * 255])
    assert p["pixel_std"] == pytest.approx([0.229 * 255, 0.224 * 255, 0.225 * 255])


def test_schedules():
    assert effective_schedule(MOPRO) == effective_schedule(MOPRO)
    s1, short = effective_schedule(MOPRO), effective_schedule(MOPRO_SHORT)
    assert (s1.max_iter, s1.steps, s1.warmup_iters) == (90000, (60000, 80000), 1000)
    assert (short.max_iter, short.steps, short.warmup_iters) == (22500, (15000, 20000), 1000)
    with pytest.raises(BenchError, match="steps"):
        effective_schedule(dataclasses.replace(MOPRO, steps=(80000, 60000)))
    with pytest.raises(BenchError, match="steps"):
        effective_schedule(dataclasses.replace(MOPRO, max_iter=50000))
    with pytest.raises(BenchError, match="positive"):
        effective_schedule(dataclasses.replace(MOPRO, schedule_scale=0.0))


def test_plan_checks_machine_and_checkpoint():
    gpu = _plan()
    assert (gpu.backbone_norm, gpu.fpn_norm, gpu.norm_note, gpu.world_size) == ("SyncBN", "SyncBN", None, 8)
    cpu = _plan(device="cpu", num_gpus=1)
    assert (cpu.backbone_norm, cpu.fpn_norm) == ("BN", "BN") and "SyncBN" in cpu.norm_note
    with pytest.raises(BenchError, match="does not split"):
        _plan(num_gpus=3)
    with pytest.raises(BenchError, match="dist-url"):
        _plan(num_gpus=8, num_machines=2, machine_rank=1)
    with pytest.raises(BenchError, match="machine-rank"):
        _plan(num_gpus=8, num_machines=2, machine_rank=2, dist_url="tcp://h:1")
    assert _plan(num_gpus=8, num_machines=2, machine_rank=1, dist_url="tcp://h:1").world_size == 16
    # torchvision-style checkpoint: the protocol's input convention
    assert (gpu.input_format, gpu.stride_in_1x1, gpu.input_source) == ("RGB", False, "protocol")
    assert gpu.pixel_mean == MOPRO.pixel_mean
    # an MSRA/caffe-style backbone keeps its own (BGR, caffe mean, unit std, stride in the 1x1 conv), and says so
    caffe = Preprocess(mean=(103.53, 116.28, 123.675), std=(1.0, 1.0, 1.0), channel_order="BGR", scale=255.0)
    msra = _plan(ck=_ck(stride_in_1x1=True, pre=caffe))
    assert (msra.input_format, msra.stride_in_1x1, msra.pixel_std) == ("BGR", True, (1.0, 1.0, 1.0))
    assert msra.pixel_mean == pytest.approx((103.53, 116.28, 123.675)) and "checkpoint's own" in msra.input_source
    with pytest.raises(BenchError, match="coco_eval"):
        _plan(proto=dataclasses.replace(MOPRO, coco_eval="fast"))
    with pytest.raises(BenchError, match="ResNet"):
        _plan(ck=_ck(arch="vit_b16"))
    with pytest.raises(BenchError, match="C4 protocol needs a bottleneck"):
        _plan(proto=MOCO_C4, ck=_ck(arch="resnet18"))
    c4 = _plan(proto=MOCO_C4, device="cpu", num_gpus=1)
    assert (c4.backbone_norm, c4.fpn_norm, c4.schedule.max_iter) == ("BN", "", 180000)


def _flat(cfg, prefix=""):
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = tuple(v) if isinstance(v, list) else v
    return out


# what every protocol changes with respect to detectron2's own model-zoo config of the same network
COMMON_CHANGES = {
    "MODEL.RESNETS.NORM",  # SyncBN (zoo: FrozenBN)
    "MODEL.BACKBONE.FREEZE_AT",  # 0: nothing frozen (zoo: stem + res2 frozen)
    "MODEL.RESNETS.STRIDE_IN_1X1", "INPUT.FORMAT", "MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD",  # torchvision convention
    "TEST.PRECISE_BN.ENABLED",
    "MODEL.WEIGHTS", "DATASETS.TRAIN", "DATASETS.TEST", "OUTPUT_DIR",  # the run's files
    "SEED",  # the run's --seed (zoo: -1 = random)
    "DATALOADER.NUM_WORKERS",  # --workers: no effect on the numbers
}


def _zoo_diff(zoo_file, cfg):
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

    zoo = get_cfg()
    zoo.merge_from_file(model_zoo.get_config_file(zoo_file))
    a, b = _flat(zoo), _flat(cfg)
    norm = lambda v: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, tuple) else v
    return {k for k in a.keys() | b.keys() if norm(a.get(k)) != norm(b.get(k))}


def test_config_is_detectron2s_r50_fpn_1x_with_the_protocols_changes():
    """Our config equals detectron2's own mask_rcnn_R_50_FPN_1x.yaml except exactly the documented differences."""
    _detectron2()
    from mopro_bench.tasks.detection.config import build_cfg

    ours = build_cfg(MOPRO, _plan())
    diff = _zoo_diff("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml", ours)
    expected = COMMON_CHANGES | {"MODEL.FPN.NORM"}  # SyncBN in the FPN too (zoo: none)
    assert diff == expected, sorted(diff ^ expected)
    assert (ours.MODEL.RESNETS.NORM, ours.MODEL.FPN.NORM, ours.MODEL.BACKBONE.FREEZE_AT) == ("SyncBN", "SyncBN", 0)
    assert (ours.SOLVER.MAX_ITER, tuple(ours.SOLVER.STEPS), ours.SOLVER.BASE_LR, ours.SOLVER.IMS_PER_BATCH) == (
        90000, (60000, 80000), 0.02, 16)
    assert ours.INPUT.FORMAT == "RGB" and list(ours.MODEL.PIXEL_STD) == pytest.approx([58.395, 57.12, 57.375])
    assert ours.TEST.PRECISE_BN.ENABLED and not ours.MODEL.RESNETS.STRIDE_IN_1X1
    short = build_cfg(MOPRO_SHORT, _plan(proto=MOPRO_SHORT))
    assert (short.SOLVER.MAX_ITER, tuple(short.SOLVER.STEPS)) == (22500, (15000, 20000))


def test_install_script_is_valid_bash_and_checks_its_arguments():
    script = REPO / "scripts" / "install_detectron2.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr
    r = subprocess.run(["bash", str(script), "python3", "--bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown option" in r.stderr
    # an install that cannot work warns and lets `make setup` go on; --strict (and --force) make it fail
    broken = "/bin/false"  # a "python" that fails every command
    r = subprocess.run(["bash", str(script), broken], capture_output=True, text=True)
    assert r.returncode == 0 and "WARNING" in r.stderr and "skipped" in r.stderr
    assert subprocess.run(["bash", str(script), broken, "--strict"], capture_output=True, text=True).returncode == 1


def test_eval_refuses_foreign_options(tmp_path):
    from mopro_bench.evaluate import evaluate

    with pytest.raises(BenchError, match="does not apply"):
        evaluate("random:resnet18", "coco_maskrcnn", tmp_path, options={"solver": "torch"})


def test_c4_config_is_detectron2s_r50_c4_with_moco_changes():
    _detectron2()
    from mopro_bench.tasks.detection.config import C4_EXTRA_NORM_HEADS, build_cfg

    ours = build_cfg(MOCO_C4, _plan(proto=MOCO_C4))
    diff = _zoo_diff("COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x.yaml", ours)
    expected = COMMON_CHANGES | {"MODEL.ROI_HEADS.NAME", "SOLVER.MAX_ITER", "SOLVER.STEPS"}  # extra norm; 2x
    assert diff == expected, sorted(diff ^ expected)
    assert ours.MODEL.ROI_HEADS.NAME == C4_EXTRA_NORM_HEADS and ours.SOLVER.MAX_ITER == 180000
    assert tuple(ours.SOLVER.STEPS) == (120000, 160000) and ours.MODEL.RPN.PRE_NMS_TOPK_TEST == 6000
