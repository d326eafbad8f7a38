"""COCO instance detection and segmentation: Mask R-CNN fine-tuned with detectron2 (task ``coco_maskrcnn``).

Protocols::

    coco_maskrcnn@mopro        (default) Mask R-CNN, ResNet-50-FPN, 1x schedule: 90k iterations of 16 images,
                               lr 0.02 (x0.1 at 60k and 80k, 1k linear warm-up), SyncBN in backbone and FPN, nothing
                               frozen, precise BN, multi-scale training (short side 640..800 step 32), test 800
    coco_maskrcnn@mopro-short  the same with the schedule scaled by 0.25 (22.5k iterations, steps at 15k/20k) for
                               small budgets -- its own protocol id, never mixed with 1x numbers
    coco_maskrcnn@moco_c4      MoCo's R50-C4 2x setting: res5 as the ROI head with an extra norm after it,
                               180k iterations (steps 120k/160k), otherwise as @mopro

Every protocol is defined for ResNet backbones only (``families=("resnet",)``: a ViT or ConvNeXt checkpoint stops
with one line, exit 2, before detectron2 is touched). The backbone of any ResNet checkpoint the suite imports is
exported to detectron2's ``.pkl`` (``mopro_bench.checkpoints.detectron2``), loaded with detectron2's name matching
and checked to fill every trunk tensor; FPN, RPN and ROI heads start from detectron2's initialisation. Metrics are
COCOEvaluator's (the official pycocotools COCOeval) on val2017: ``bbox_AP``, ``bbox_AP50``, ``bbox_AP75``,
``bbox_APs``, ``bbox_APm``, ``bbox_APl`` and the same for ``segm``, in percent. detectron2 is imported only inside
:meth:`CocoMaskRCNN.run`; install it with ``make setup-detection``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from mopro_bench.errors import BenchError
from mopro_bench.io import atomic_write_json, atomic_write_text, sha256_file, sha256_json
from mopro_bench.registry import Option, Protocol, RunContext, Task, TaskOutput, nonnegative_int, positive_int

INSTALL_FIX = "install detectron2 with `make setup-detection` (see tasks/detection/README.md, Installing detectron2)"
SELECTION = "final model after the whole schedule (no checkpoint selection); evaluated once on val2017"


@dataclass(frozen=True)
class MaskRCNNBase(Protocol):
    """The constants every Mask R-CNN protocol has; subclasses add their head's (FPN or C4)."""

    head: ClassVar[str] = ""
    # backbone: ResNet (depth and width from the checkpoint)
    norm: str = "SyncBN"  # backbone norm layers
    freeze_at: int = 0  # 0 = nothing frozen (stem included)
    # RPN and ROI sampling
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    anchor_aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_pre_nms_topk_train: int = 2000
    rpn_pre_nms_topk_test: int = 1000
    rpn_post_nms_topk_train: int = 1000
    rpn_post_nms_topk_test: int = 1000
    roi_batch_size_per_image: int = 512
    # input: the torchvision convention (RGB, 0..255, ImageNet mean/std x 255, stride in the 3x3 conv). A checkpoint
    # that declares another one (an MSRA/caffe-style detectron2 file) keeps its own; details.input says which is used.
    input_format: str = "RGB"
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    stride_in_1x1: bool = False
    min_size_train: tuple[int, ...] = (640, 672, 704, 736, 768, 800)  # short side, one drawn per image
    max_size_train: int = 1333
    min_size_test: int = 800
    max_size_test: int = 1333
    random_flip: str = "horizontal"
    mask_format: str = "polygon"
    # solver: SGD, step schedule with linear warm-up; the total batch is fixed whatever the number of GPUs
    ims_per_batch: int = 16
    base_lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    weight_decay_norm: float = 0.0
    max_iter: int = 90000
    steps: tuple[int, ...] = (60000, 80000)
    gamma: float = 0.1
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    schedule_scale: float = 1.0  # multiplies max_iter and steps (warm-up unscaled); != 1 only in @mopro-short
    amp: bool = False
    # evaluation
    precise_bn: bool = True  # recompute BN statistics on training batches before evaluating
    precise_bn_iters: int = 200
    score_thresh_test: float = 0.05
    nms_thresh_test: float = 0.5
    detections_per_image: int = 100
    coco_eval: str = "pycocotools"  # the official COCO API (detectron2's C++ re-implementation is not used)


@dataclass(frozen=True)
class MaskRCNNProtocol(MaskRCNNBase):
    """Mask R-CNN with a ResNet-FPN backbone and StandardROIHeads (defaults: MoCo/MoPro's R50-FPN 1x setting)."""

    head: ClassVar[str] = "fpn"
    fpn_norm: str = "SyncBN"
    fpn_out_channels: int = 256
    box_head_norm: str = ""  # 2fc box head as in detectron2's R50-FPN
    box_head_num_conv: int = 0
    box_head_num_fc: int = 2
    mask_head_norm: str = ""
    mask_head_num_conv: int = 4


@dataclass(frozen=True)
class MaskRCNNC4Protocol(MaskRCNNBase):
    """Mask R-CNN R50-C4: res2..res4 backbone, res5 as the shared ROI head (defaults: MoCo's R50-C4 2x setting)."""

    head: ClassVar[str] = "c4"
    rpn_pre_nms_topk_train: int = 12000
    rpn_pre_nms_topk_test: int = 6000
    rpn_post_nms_topk_train: int = 2000
    rpn_post_nms_topk_test: int = 1000
    max_iter: int = 180000
    steps: tuple[int, ...] = (120000, 160000)
    res5_extra_norm: bool = True  # one more norm layer (``norm``) on the res5 head's output, as MoCo does


# detectron2's Mask R-CNN backbones here are ResNet-FPN (R50-FPN) and ResNet-C4 (res5 as the ROI head): the protocols
# are defined for ResNets only; a ViT or ConvNeXt checkpoint is refused before any detectron2 work (evaluate's
# check_family, exit 2). ViTDet / ConvNeXt-FPN detection would be protocols of their own.
RESNET_ONLY = ("resnet",)

MOPRO = MaskRCNNProtocol(
    name="mopro",
    version="1",
    families=RESNET_ONLY,
    description=("Mask R-CNN R50-FPN 1x on COCO train2017 (90k it, 16 img/batch, lr 0.02, steps 60k/80k), SyncBN in "
                 "backbone and FPN, nothing frozen, precise BN, train short side 640..800, test 800; COCO box and "
                 "mask AP on val2017 (MoCo/MoPro setting)"),
)
MOCO_C4 = MaskRCNNC4Protocol(
    name="moco_c4",
    version="1",
    families=RESNET_ONLY,
    description=("Mask R-CNN R50-C4 2x on COCO train2017 (180k it, 16 img/batch, lr 0.02, steps 120k/160k), SyncBN in "
                 "backbone and res5 head plus an extra norm after res5, nothing frozen, precise BN, train short side "
                 "640..800, test 800; COCO box and mask AP on val2017 (MoCo's C4 setting)"),
)
MOPRO_SHORT = dataclasses.replace(
    MOPRO, name="mopro-short", schedule_scale=0.25,
    description=("@mopro with the schedule scaled by 0.25 (22.5k iterations, steps at 15k/20k) for small budgets; "
                 "numbers are not comparable with 1x"),
)


def _require_detectron2() -> None:
    if importlib.util.find_spec("detectron2") is None:
        raise BenchError("coco_maskrcnn needs detectron2, which is not installed", INSTALL_FIX)
    try:
        import detectron2  # noqa: F401
        from detectron2.engine import launch  # noqa: F401
    except Exception as e:  # a broken install is the user's environment, not a bug here
        raise BenchError(f"detectron2 is installed but does not import ({type(e).__name__}: {e})", INSTALL_FIX) from None


def _option_int(ctx: RunContext, name: str, default: int) -> int:
    v = ctx.option(name, default)
    try:
        return int(v)
    except (TypeError, ValueError):
        raise BenchError(f"--{name.replace('_', '-')} {v!r} is not an integer", "pass a whole number") from None


class CocoMaskRCNN(Task):
    name = "coco_maskrcnn"
    description = "COCO box and mask AP of Mask R-CNN (ResNet-FPN or -C4) fine-tuned with detectron2"
    data_kind = "coco"
    splits = ("train", "val")
    protocols: ClassVar[dict[str, Protocol]] = {"mopro": MOPRO, "mopro-short": MOPRO_SHORT, "moco_c4": MOCO_C4}
    default_protocol = "mopro"
    metrics = ("bbox_AP", "bbox_AP50", "bbox_AP75", "bbox_APs", "bbox_APm", "bbox_APl",
               "segm_AP", "segm_AP50", "segm_AP75", "segm_APs", "segm_APm", "segm_APl")
    options = (
        Option("resume", "continue an interrupted run from --work-dir", flag=True),
        Option("num_gpus", "detection: processes (GPUs) per machine (default: all visible GPUs)", type=positive_int),
        Option("num_machines", "detection: machines in a multi-machine run (default 1)", type=positive_int, default=1),
        Option("machine_rank", "detection: this machine's rank, 0..num-machines-1", type=nonnegative_int),
        Option("dist_url", "detection: rendezvous of a multi-machine run, e.g. tcp://HOST0:PORT"),
    )

    def run(self, model, data_root: Path, protocol: Protocol, ctx: RunContext) -> TaskOutput:
        from mopro_bench.data.coco import coco_files, load_instances

        assert isinstance(protocol, MaskRCNNBase)
        files = coco_files(data_root)
        _require_detectron2()
        from mopro_bench.checkpoints.detectron2 import export_detectron2
        from mopro_bench.runtime import env_is_distributed
        from mopro_bench.tasks.detection import runner
        from mopro_bench.tasks.detection.config import build_cfg, plan_run
        from mopro_bench.tasks.detection.scoring import DEFINITIONS, metrics_from_evaluator, score_detections

        if env_is_distributed():
            raise BenchError("coco_maskrcnn starts its own processes (detectron2's launch) and cannot run under torchrun",
                             "run it as a single command with --num-gpus N (and --num-machines/--machine-rank/--dist-url)")
        val = load_instances(files["val_json"])
        categories = sorted(val["categories"], key=lambda c: c["id"])
        if not val["images"]:
            raise BenchError(f"{files['val_json']} lists no images", "point --data at the COCO root with val2017")

        device = ctx.device.type
        if device == "cuda":
            import torch

            default_gpus = 1 if ctx.device.index is not None else torch.cuda.device_count()
            if ctx.device.index is not None:
                torch.cuda.set_device(ctx.device)
        else:
            default_gpus = 1
        num_gpus = _option_int(ctx, "num_gpus", default_gpus)
        num_machines = _option_int(ctx, "num_machines", 1)
        machine_rank = _option_int(ctx, "machine_rank", 0)
        dist_url = str(ctx.option("dist_url", "auto"))
        if device == "cuda":
            import torch

            if num_gpus > torch.cuda.device_count():
                raise BenchError(f"--num-gpus {num_gpus} but only {torch.cuda.device_count()} GPU(s) are visible",
                                 f"use --num-gpus {torch.cuda.device_count()} or fewer")

        resume = bool(ctx.option("resume", False))
        run_key = sha256_json({"protocol": protocol.params(), "checkpoint": ck_identity(model), "seed": ctx.seed,
                               "data": str(Path(data_root).resolve())})
        work = Path(ctx.work_dir) if ctx.work_dir else Path(ctx.cache_dir) / "coco_maskrcnn" / run_key[:16]
        has_ckpt = (work / "last_checkpoint").is_file()
        run_file = work / runner.RUN_FILE
        if has_ckpt and not resume:
            raise BenchError(f"work dir {work} already holds a run ({_last_checkpoint(work)})",
                             "pass --resume to continue it, or another --work-dir (or delete it) to start over")
        prev: dict[str, Any] = {}
        if has_ckpt:
            try:
                prev = json.loads(run_file.read_text()) if run_file.is_file() else {}
            except (OSError, ValueError) as e:
                raise BenchError(f"work dir {work}: {run_file.name} cannot be read ({type(e).__name__})",
                                 runner.RESUME_FIX) from None
            prev = prev if isinstance(prev, dict) else {}
            if prev.get("run_key") != run_key:
                raise BenchError(f"work dir {work} holds a run of another checkpoint, protocol, seed or data set",
                                 "resume with exactly the same arguments, or use another --work-dir")
            # what last_checkpoint names must be a file in the work dir that the suite's trainer wrote (unchanged);
            # detectron2 would otherwise unpickle whatever it names (the workers also load it with the safe loader)
            runner.resume_checkpoint(work)
        work.mkdir(parents=True, exist_ok=True)

        weights = work / "backbone.pkl"
        export_detectron2(model, weights)
        train_name, val_name = runner.register_coco(files)
        plan = plan_run(protocol, model, device=device, num_gpus=num_gpus, num_machines=num_machines,
                        machine_rank=machine_rank, dist_url=dist_url, num_classes=len(categories),
                        train_dataset=train_name, val_dataset=val_name, weights=str(weights), output_dir=str(work),
                        seed=ctx.seed, workers=ctx.workers)
        cfg = build_cfg(protocol, plan)
        cfg_yaml = cfg.dump()
        atomic_write_text(work / "config.yaml", cfg_yaml)
        artifacts = []
        art = ctx.artifact("detectron2.yaml")
        if art is not None:
            atomic_write_text(art, cfg_yaml)
            artifacts.append(str(art))
        # the exported backbone must fill detectron2's trunk exactly (checked once; a resumed run loads its own state)
        load = prev.get("backbone_load") if has_ckpt and prev.get("backbone_load") else runner.check_backbone_load(cfg)
        atomic_write_json(run_file, {"run_key": run_key, "task": self.name, "protocol": protocol.name,
                                     "params": protocol.params(), "checkpoint": ck_identity(model), "seed": ctx.seed,
                                     "data": str(Path(data_root).resolve()), "backbone_load": load})

        spec = {"cfg_yaml": cfg_yaml, "files": {k: str(v) for k, v in files.items()}, "resume": resume,
                "output_dir": str(work), "run_key": run_key, "console_log": bool(ctx.progress)}
        outcome = runner.launch_run(spec, num_gpus=num_gpus, num_machines=num_machines, machine_rank=machine_rank,
                                    dist_url=dist_url)
        metrics, undefined, per_category = metrics_from_evaluator(outcome["results"])
        predictions = Path(outcome["predictions"])
        n_dets = len(json.loads(predictions.read_text())) if predictions.is_file() else None
        score_source = "detectron2 COCOEvaluator (pycocotools COCOeval)"
        if n_dets == 0:  # COCOEvaluator reports NaN without detections; the defined value is 0 AP
            scores = score_detections(files["val_json"], [])
            metrics, undefined, per_category = scores.metrics, scores.undefined, scores.per_category
            score_source = "no detections: scored 0 AP with pycocotools wherever ground truth exists"

        from mopro_bench.envinfo import detectron2_status

        d2 = detectron2_status()
        details: dict[str, Any] = {
            "detectron2": {k: d2.get(k) for k in ("version", "variant", "compiled_ops", "commit")},
            "schedule": dataclasses.asdict(plan.schedule),
            "world_size": plan.world_size,
            "images_per_process": protocol.ims_per_batch // plan.world_size,
            "device": device,
            "norm": {"backbone": plan.backbone_norm, "fpn": plan.fpn_norm, "note": plan.norm_note},
            "input": {"format": plan.input_format, "pixel_mean": list(plan.pixel_mean), "pixel_std": list(plan.pixel_std),
                      "stride_in_1x1": plan.stride_in_1x1, "source": plan.input_source},
            "network": {"depth": plan.depth, "width": plan.width, "num_classes": plan.num_classes},
            "backbone_load": load,
            "resumed_from_iter": outcome["start_iter"] if outcome["resumed"] else None,
            "iterations": outcome["max_iter"],
            "train_s": outcome["train_s"],
            "eval_s": outcome["eval_s"],
            "undefined_metrics": undefined,
            "per_category_AP": per_category,
            "num_detections": n_dets,
            "score_source": score_source,
            "work_dir": str(work),
            "predictions": str(predictions),
            "config_sha256": sha256_json(cfg_yaml),
            "exported_backbone_sha256": sha256_file(weights),
        }
        data = {
            "train_json_sha256": sha256_file(files["train_json"]),
            "val_json_sha256": sha256_file(files["val_json"]),
            "val_images": len(val["images"]),
            "val_instances": len(val["annotations"]),
            "categories": len(categories),
        }
        return TaskOutput(
            metrics=metrics, details=details, selection=SELECTION, data=data, artifacts=artifacts,
            metric_units={k: "%" for k in metrics},
            metric_definitions={k: DEFINITIONS[k] for k in metrics},
        )


def ck_identity(ck) -> dict[str, Any]:
    return {"sha256": ck.sha256, "path": str(ck.path), "format": ck.format, "arch": ck.arch, "width": int(ck.width)}


def _last_checkpoint(work: Path) -> str:
    try:
        return "last checkpoint " + (work / "last_checkpoint").read_text().strip()[:200]
    except (OSError, ValueError):  # (UnicodeDecodeError is a ValueError)
        return "a checkpoint"


COCO_MASKRCNN = CocoMaskRCNN()
