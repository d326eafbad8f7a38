"""The detectron2 config of a ``coco_maskrcnn`` run, built from the protocol dataclass (no YAML to find or edit).

:func:`plan_run` decides everything that depends on the machine and the checkpoint (device, norm layers on CPU,
world size, network depth/width, input convention) and checks it; :func:`build_cfg` turns protocol + plan into a
detectron2 ``CfgNode``. Only :func:`build_cfg` imports detectron2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mopro_bench.errors import BenchError

# Saved in the work dir every this many iterations (resume granularity); not a protocol constant: it does not change
# the numbers.
CHECKPOINT_PERIOD = 5000
_DEPTH = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101, "resnet152": 152}
_NORMS = ("SyncBN", "BN", "FrozenBN", "GN", "")
C4_EXTRA_NORM_HEADS = "MoproRes5ROIHeadsExtraNorm"


@dataclass(frozen=True)
class Schedule:
    max_iter: int
    steps: tuple[int, ...]
    warmup_iters: int
    scale: float


def effective_schedule(proto: Any) -> Schedule:
    """``max_iter``/``steps`` times ``schedule_scale`` (rounded); warm-up is not scaled but never exceeds max_iter."""
    s = float(proto.schedule_scale)
    if not s > 0:
        raise BenchError(f"schedule_scale={s} must be positive", "use e.g. --set schedule_scale=0.25")
    max_iter = max(1, round(proto.max_iter * s))
    steps = tuple(max(1, round(x * s)) for x in proto.steps)
    if any(b <= a for a, b in zip(steps, steps[1:])) or (steps and steps[-1] >= max_iter):
        raise BenchError(f"learning-rate steps {list(steps)} must increase and stay below max_iter {max_iter}",
                         "set steps to increasing iterations below max_iter, e.g. --set steps=[60000,80000]")
    return Schedule(max_iter=max_iter, steps=steps, warmup_iters=min(int(proto.warmup_iters), max_iter), scale=s)


@dataclass(frozen=True)
class RunPlan:
    """What a run needs besides the protocol; written into the result's details."""

    device: str  # "cuda" or "cpu"
    num_gpus: int  # processes per machine
    num_machines: int
    machine_rank: int
    dist_url: str
    depth: int
    width: int
    stride_in_1x1: bool
    input_format: str
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]
    input_source: str  # "protocol" or why the checkpoint's own convention is used
    backbone_norm: str
    fpn_norm: str
    norm_note: str | None
    num_classes: int
    train_dataset: str
    val_dataset: str
    weights: str
    output_dir: str
    seed: int
    workers: int
    schedule: Schedule

    @property
    def world_size(self) -> int:
        return self.num_gpus * self.num_machines


def _close(a, b, tol: float = 1e-3) -> bool:
    return all(abs(float(x) - float(y)) <= tol for x, y in zip(a, b))


def input_convention(proto: Any, ck: Any) -> tuple[str, tuple, tuple, bool, str]:
    """(format, pixel_mean, pixel_std, stride_in_1x1, source) for checkpoint ``ck`` under ``proto``.

    The protocol's values are the torchvision convention (RGB, ImageNet mean/std x 255, stride in the 3x3 conv). A
    checkpoint that declares another convention (an MSRA/caffe-style detectron2 file: BGR, caffe mean, stride in the
    1x1 conv) keeps its own -- the network computes a different function otherwise -- and the record says so."""
    pre = ck.preprocess
    f = 255.0 / float(pre.scale)
    mean = tuple(round(m * f, 4) for m in pre.mean)
    std = tuple(round(s * f, 4) for s in pre.std)
    order = pre.channel_order.upper()
    stride = bool(getattr(ck.backbone, "stride_in_1x1", False))
    same = (order == proto.input_format.upper() and _close(mean, proto.pixel_mean) and _close(std, proto.pixel_std)
            and stride == bool(proto.stride_in_1x1))
    if same:
        return proto.input_format.upper(), tuple(proto.pixel_mean), tuple(proto.pixel_std), bool(proto.stride_in_1x1), "protocol"
    why = (f"checkpoint's own: {order}, mean {list(mean)}, std {list(std)}, stride_in_1x1 {stride} "
           f"(the protocol's {proto.input_format}/{list(proto.pixel_mean)}/{list(proto.pixel_std)}/"
           f"stride_in_1x1 {proto.stride_in_1x1} would feed this network inputs it was not trained on)")
    return order, mean, std, stride, why


def plan_run(proto: Any, ck: Any, *, device: str, num_gpus: int, num_machines: int = 1, machine_rank: int = 0,
             dist_url: str = "auto", num_classes: int, train_dataset: str, val_dataset: str, weights: str,
             output_dir: str, seed: int = 0, workers: int = 0) -> RunPlan:
    """Check the protocol against the machine and the checkpoint and fix what depends on them."""
    if ck.arch not in _DEPTH:
        raise BenchError(f"coco_maskrcnn needs a ResNet backbone, got {ck.arch!r}", f"use one of {', '.join(_DEPTH)}")
    head = getattr(proto, "head", "fpn")
    norms = {n: getattr(proto, n) for n in ("norm", "fpn_norm", "box_head_norm", "mask_head_norm") if hasattr(proto, n)}
    for name, value in norms.items():
        if value not in _NORMS:
            raise BenchError(f"{name}={value!r} is not a detectron2 norm", f"use one of {_NORMS}")
    if head == "c4" and _DEPTH[ck.arch] < 50:
        raise BenchError(f"the C4 protocol needs a bottleneck ResNet (50 layers or more), got {ck.arch}",
                         "use an FPN protocol (coco_maskrcnn@mopro) for ResNet-18/34")
    if proto.coco_eval != "pycocotools":
        raise BenchError(f"coco_eval={proto.coco_eval!r} is not supported", "use coco_eval=pycocotools (the official COCO API)")
    if num_gpus < 1 or num_machines < 1 or not 0 <= machine_rank < num_machines:
        raise BenchError(f"--num-gpus {num_gpus} --num-machines {num_machines} --machine-rank {machine_rank} is not a "
                         "valid layout", "use --num-gpus >= 1, --num-machines >= 1 and 0 <= --machine-rank < --num-machines")
    world = num_gpus * num_machines
    if proto.ims_per_batch % world:
        raise BenchError(f"ims_per_batch {proto.ims_per_batch} does not split over {world} processes",
                         f"use a number of GPUs that divides {proto.ims_per_batch} (the batch is a protocol constant)")
    if num_machines > 1 and dist_url == "auto":
        raise BenchError("a multi-machine run needs --dist-url",
                         "pass --dist-url tcp://<machine 0's address>:<free port> on every machine")
    fmt, mean, std, stride, source = input_convention(proto, ck)
    if stride and _DEPTH[ck.arch] < 50:
        stride = False
    bb_norm, fpn_norm, note = proto.norm, norms.get("fpn_norm", ""), None
    if device == "cpu" and "SyncBN" in norms.values():
        bb_norm, fpn_norm = _head_norm(bb_norm, device), _head_norm(fpn_norm, device)
        note = "CPU run: BN instead of SyncBN (SyncBN needs CUDA); each process normalises over its own images"
    return RunPlan(
        device=device, num_gpus=num_gpus, num_machines=num_machines, machine_rank=machine_rank, dist_url=dist_url,
        depth=_DEPTH[ck.arch], width=int(ck.width), stride_in_1x1=stride, input_format=fmt, pixel_mean=mean,
        pixel_std=std, input_source=source, backbone_norm=bb_norm, fpn_norm=fpn_norm, norm_note=note,
        num_classes=num_classes, train_dataset=train_dataset, val_dataset=val_dataset, weights=weights,
        output_dir=output_dir, seed=seed, workers=workers, schedule=effective_schedule(proto),
    )


def _head_norm(proto_norm: str, device: str) -> str:
    return "BN" if device == "cpu" and proto_norm == "SyncBN" else proto_norm


def register_modules() -> None:
    """Register the suite's detectron2 modules (idempotent; needed in every process that builds a model).

    ``Res5ROIHeadsExtraNorm`` (MoCo's C4 setting, written here from its description): detectron2's Res5ROIHeads
    with one more norm layer -- of ``MODEL.RESNETS.NORM``'s kind -- applied to the output of the res5 head."""
    from detectron2.layers import get_norm
    from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads

    if C4_EXTRA_NORM_HEADS in ROI_HEADS_REGISTRY:
        return

    class MoproRes5ROIHeadsExtraNorm(Res5ROIHeads):
        @classmethod
        def _build_res5_block(cls, cfg):
            res5, channels = super()._build_res5_block(cfg)
            res5.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, channels))
            return res5, channels

    assert MoproRes5ROIHeadsExtraNorm.__name__ == C4_EXTRA_NORM_HEADS
    ROI_HEADS_REGISTRY.register(MoproRes5ROIHeadsExtraNorm)


def build_cfg(proto: Any, plan: RunPlan):
    """detectron2 ``CfgNode`` for ``proto`` under ``plan`` (frozen)."""
    from detectron2.config import get_cfg

    register_modules()

    sched = plan.schedule
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    cfg.MODEL.DEVICE = plan.device
    cfg.MODEL.WEIGHTS = plan.weights
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.PIXEL_MEAN = [float(x) for x in plan.pixel_mean]
    cfg.MODEL.PIXEL_STD = [float(x) for x in plan.pixel_std]
    cfg.INPUT.FORMAT = plan.input_format
    # backbone: ResNet + FPN
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    cfg.MODEL.BACKBONE.FREEZE_AT = int(proto.freeze_at)
    r = cfg.MODEL.RESNETS
    r.DEPTH = plan.depth
    r.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    r.NORM = plan.backbone_norm
    r.STRIDE_IN_1X1 = plan.stride_in_1x1
    r.NUM_GROUPS = 1
    r.WIDTH_PER_GROUP = 64 * plan.width
    r.STEM_OUT_CHANNELS = 64 * plan.width
    r.RES2_OUT_CHANNELS = (64 if plan.depth < 50 else 256) * plan.width
    r.RES5_DILATION = 1
    h = cfg.MODEL.ROI_HEADS
    b = cfg.MODEL.ROI_BOX_HEAD
    m = cfg.MODEL.ROI_MASK_HEAD
    if getattr(proto, "head", "fpn") == "c4":
        # res2..res4 backbone; res5 runs per region as the shared box/mask head (detectron2's Res5ROIHeads)
        r.OUT_FEATURES = ["res4"]
        cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
        cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[int(s) for s in proto.anchor_sizes]]  # one feature map
        cfg.MODEL.RPN.IN_FEATURES = ["res4"]
        h.NAME = C4_EXTRA_NORM_HEADS if proto.res5_extra_norm else "Res5ROIHeads"
        h.IN_FEATURES = ["res4"]
        b.NAME = ""
        b.POOLER_RESOLUTION = 14
        m.NUM_CONV = 0
    else:
        cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
        cfg.MODEL.FPN.OUT_CHANNELS = int(proto.fpn_out_channels)
        cfg.MODEL.FPN.NORM = plan.fpn_norm
        cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[int(s)] for s in proto.anchor_sizes]  # one size per level p2..p6
        cfg.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
        h.NAME = "StandardROIHeads"
        h.IN_FEATURES = ["p2", "p3", "p4", "p5"]
        b.NAME = "FastRCNNConvFCHead"
        b.NUM_CONV = int(proto.box_head_num_conv)
        b.NUM_FC = int(proto.box_head_num_fc)
        b.POOLER_RESOLUTION = 7
        b.NORM = _head_norm(proto.box_head_norm, plan.device)
        m.NUM_CONV = int(proto.mask_head_num_conv)
        m.NORM = _head_norm(proto.mask_head_norm, plan.device)
    m.NAME = "MaskRCNNConvUpsampleHead"
    m.POOLER_RESOLUTION = 14
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[float(a) for a in proto.anchor_aspect_ratios]]
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = int(proto.rpn_pre_nms_topk_train)
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = int(proto.rpn_pre_nms_topk_test)
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = int(proto.rpn_post_nms_topk_train)
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = int(proto.rpn_post_nms_topk_test)
    h.NUM_CLASSES = int(plan.num_classes)
    h.BATCH_SIZE_PER_IMAGE = int(proto.roi_batch_size_per_image)
    h.SCORE_THRESH_TEST = float(proto.score_thresh_test)
    h.NMS_THRESH_TEST = float(proto.nms_thresh_test)
    # data
    cfg.DATASETS.TRAIN = (plan.train_dataset,)
    cfg.DATASETS.TEST = (plan.val_dataset,)
    cfg.INPUT.MIN_SIZE_TRAIN = tuple(int(x) for x in proto.min_size_train)
    cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
    cfg.INPUT.MAX_SIZE_TRAIN = int(proto.max_size_train)
    cfg.INPUT.MIN_SIZE_TEST = int(proto.min_size_test)
    cfg.INPUT.MAX_SIZE_TEST = int(proto.max_size_test)
    cfg.INPUT.RANDOM_FLIP = proto.random_flip
    cfg.INPUT.MASK_FORMAT = proto.mask_format
    cfg.DATALOADER.NUM_WORKERS = int(plan.workers)
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = True
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True
    # solver
    s = cfg.SOLVER
    s.IMS_PER_BATCH = int(proto.ims_per_batch)
    s.REFERENCE_WORLD_SIZE = 0  # the total batch is fixed; no automatic rescaling
    s.BASE_LR = float(proto.base_lr)
    s.MOMENTUM = float(proto.momentum)
    s.WEIGHT_DECAY = float(proto.weight_decay)
    s.WEIGHT_DECAY_NORM = float(proto.weight_decay_norm)
    s.LR_SCHEDULER_NAME = "WarmupMultiStepLR"
    s.GAMMA = float(proto.gamma)
    s.MAX_ITER = sched.max_iter
    s.STEPS = sched.steps
    s.WARMUP_ITERS = sched.warmup_iters
    s.WARMUP_FACTOR = float(proto.warmup_factor)
    s.WARMUP_METHOD = "linear"
    s.CHECKPOINT_PERIOD = CHECKPOINT_PERIOD
    s.AMP.ENABLED = bool(proto.amp)
    # test
    cfg.TEST.EVAL_PERIOD = 0
    cfg.TEST.DETECTIONS_PER_IMAGE = int(proto.detections_per_image)
    cfg.TEST.PRECISE_BN.ENABLED = bool(proto.precise_bn)
    cfg.TEST.PRECISE_BN.NUM_ITER = int(proto.precise_bn_iters)
    cfg.OUTPUT_DIR = plan.output_dir
    cfg.SEED = int(plan.seed)
    cfg.freeze()
    return cfg
