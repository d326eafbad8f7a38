"""MoPro pretraining configuration: nested dataclasses whose defaults are the paper's settings.

Every field can be changed from the command line with ``--set section.field=value`` (e.g. ``--set optim.lr=0.05``,
``--set mopro.start_clean_epoch=5``, ``--set optim.milestones=[20,40]``). Epochs are 0-based everywhere:
``start_clean_epoch = 11`` means epochs 0..10 run without noise cleaning (the paper's warm-up) and cleaning starts with
the twelfth epoch, exactly as the reference code's ``epoch >= start_clean_epoch`` test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mopro_bench.config import apply_overrides, to_dict
from mopro_bench.errors import BenchError

PROTO_NORMS = ("batch", "sample")
SCHEDULES = ("step", "cos")
PRECISIONS = ("auto", "bf16", "fp32", "fp64")


@dataclass
class ModelConfig:
    arch: str = "resnet50"
    width: int = 1
    num_class: int = 1000  # WebVision 1.0 = ImageNet-1k's classes in sorted-wnid order
    low_dim: int = 128  # embedding (projection output) dimension
    class_space: str = "webvision1k"  # recorded in the checkpoint for the importer
    # BatchNorm groups per process ("ghost BN"); 0 = auto: max(1, 8 // world_size), i.e. the statistics of the
    # paper's 8-GPU run (32 images per BN batch at batch 256) on any number of GPUs up to 8, reduced until every
    # group has >= 8 images. See README.md, "Shuffle-BN".
    bn_splits: int = 0


@dataclass
class MoProConfig:
    moco_m: float = 0.999  # momentum of the key encoder (EMA of the query encoder's parameters)
    queue_size: int = 8192  # K: keys kept for the instance contrastive loss
    temperature: float = 0.1  # T of both the instance and the prototypical contrastive loss
    proto_m: float = 0.999  # momentum of the class prototypes
    # "batch": the reference code -- momentum update sample by sample, one L2 normalisation after the batch;
    # "sample": the paper's Eq. (5) -- normalise after every sample.
    proto_norm: str = "batch"
    alpha: float = 0.5  # soft label = alpha * softmax(classifier) + (1 - alpha) * softmax(prototype logits)
    pseudo_th: float = 0.8  # relabel when the soft label's max score exceeds this
    start_clean_epoch: int = 11  # 0-based first epoch with noise cleaning (= 10 warm-up epochs ... see module doc)
    proto_start_epoch: int = 1  # 0-based first epoch with the prototypical contrastive loss ("from epoch 1 on")
    w_inst: float = 1.0  # weight of the instance contrastive loss
    w_proto: float = 1.0  # weight of the prototypical contrastive loss
    mask_unseen_protos: bool = True  # leave never-updated (zero) prototypes out of the prototype softmax; see losses.py
    w_cls: float = 1.0  # weight of the classifier's cross-entropy (the paper: 1; 0 turns it off for ablations)


@dataclass
class AugConfig:
    image_size: int = 224
    crop_scale: tuple[float, float] = (0.2, 1.0)  # RandomResizedCrop scale, both views
    flip: bool = True  # random horizontal flip, both views
    color_jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.4)  # strong view: brightness, contrast, sat., hue
    color_jitter_p: float = 1.0  # probability the jitter is applied (strong view)
    grayscale_p: float = 0.2  # strong view
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass
class DataConfig:
    batch_size: int = 256  # GLOBAL batch (all processes together); each process gets batch_size / world_size
    annotation: str | None = None  # train list to use instead of the layout's (e.g. a pseudo_label.json)
    val_batch_size: int = 256  # per process
    max_val_images: int = 0  # 0 = the whole validation set
    pin_memory: bool = True  # on CUDA


@dataclass
class OptimConfig:
    lr: float = 0.1
    scale_lr: bool = False  # linear scaling: lr * batch_size / 256
    momentum: float = 0.9
    weight_decay: float = 1e-4
    epochs: int = 90
    schedule: str = "step"  # "step" (x gamma at each milestone) or "cos"; set once per epoch like the reference
    milestones: tuple[int, ...] = (40, 80)
    gamma: float = 0.1


@dataclass
class CheckpointConfig:
    every_steps: int = 0  # also checkpoint every N optimizer steps (0 = only at the end of each epoch)
    keep_last: int = 3  # keep the newest K checkpoint files


@dataclass
class RunConfig:
    seed: int = 0
    precision: str = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU; fp64 only for exactness tests
    channels_last: bool = True  # on CUDA
    compile: bool = False  # torch.compile the query encoder
    eval_every: int = 1  # epochs between validations (0 = never)
    log_every: int = 20  # steps between TensorBoard scalars


@dataclass
class PretrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    mopro: MoProConfig = field(default_factory=MoProConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ckpt: CheckpointConfig = field(default_factory=CheckpointConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def effective_lr(self) -> float:
        return self.optim.lr * (self.data.batch_size / 256 if self.optim.scale_lr else 1.0)


def from_dict(d: dict[str, Any]) -> PretrainConfig:
    """Rebuild a config saved with :meth:`PretrainConfig.to_dict` (unknown keys are an error, missing ones default)."""
    flat: dict[str, Any] = {}
    for section, values in (d or {}).items():
        if isinstance(values, dict):
            for k, v in values.items():
                flat[f"{section}.{k}"] = v
        else:
            flat[section] = values
    return validate(apply_overrides(PretrainConfig(), flat))


def make_config(overrides: dict[str, Any] | None = None, base: PretrainConfig | None = None) -> PretrainConfig:
    return validate(apply_overrides(base or PretrainConfig(), overrides or {}))


def validate(cfg: PretrainConfig) -> PretrainConfig:
    """Checks that need no data or devices (the trainer checks batch/queue/world-size divisibility)."""
    m, o = cfg.mopro, cfg.optim

    def bad(name: str, value: Any, fix: str) -> BenchError:
        return BenchError(f"--set {name}={value!r} is not valid", fix)

    if m.proto_norm not in PROTO_NORMS:
        raise bad("mopro.proto_norm", m.proto_norm, "use batch (reference code) or sample (paper Eq. 5)")
    if o.schedule not in SCHEDULES:
        raise bad("optim.schedule", o.schedule, "use step or cos")
    if cfg.run.precision not in PRECISIONS:
        raise bad("run.precision", cfg.run.precision, "use auto, bf16, fp32 or fp64")
    for name, v in (("mopro.moco_m", m.moco_m), ("mopro.proto_m", m.proto_m), ("mopro.alpha", m.alpha),
                    ("mopro.pseudo_th", m.pseudo_th)):
        if not 0.0 <= v <= 1.0:
            raise bad(name, v, "use a value in [0, 1]")
    if m.temperature <= 0:
        raise bad("mopro.temperature", m.temperature, "use a positive temperature, e.g. 0.1")
    for name, v in (("mopro.queue_size", m.queue_size), ("data.batch_size", cfg.data.batch_size),
                    ("model.num_class", cfg.model.num_class), ("model.low_dim", cfg.model.low_dim),
                    ("aug.image_size", cfg.aug.image_size), ("optim.epochs", o.epochs)):
        if v < 1:
            raise bad(name, v, "use a positive integer")
    if cfg.model.bn_splits < 0:
        raise bad("model.bn_splits", cfg.model.bn_splits, "use 0 (auto) or a positive number of BN groups")
    if cfg.aug.image_size < 32:
        raise bad("aug.image_size", cfg.aug.image_size, "use at least 32 (ResNets downsample 32x)")
    if cfg.ckpt.keep_last < 1:
        raise bad("ckpt.keep_last", cfg.ckpt.keep_last, "keep at least 1 checkpoint")
    lo, hi = cfg.aug.crop_scale
    if not 0 < lo <= hi <= 1:
        raise bad("aug.crop_scale", list(cfg.aug.crop_scale), "use [low, high] with 0 < low <= high <= 1")
    return cfg
