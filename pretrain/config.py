"""MoPro pretraining configuration: nested dataclasses whose defaults are the paper's settings.

Every field can be changed from the command line with ``--set section.field=value`` (e.g. ``--set optim.lr=0.05``,
``--set mopro.start_clean_epoch=5``, ``--set optim.milestones=[20,40]``). Epochs are 0-based everywhere:
``start_clean_epoch = 11`` means epochs 0..10 run without noise cleaning (the paper's warm-up) and cleaning starts with
the twelfth epoch, exactly as the reference code's ``epoch >= start_clean_epoch`` test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mopro_bench.config import apply_overrides, to_dict
from mopro_bench.errors import BenchError

PROTO_NORMS = ("batch", "sample")
SCHEDULES = ("step", "cos")
PRECISIONS = ("auto", "bf16", "fp32", "fp64")
# Order of the strong (key) view's operations after RandomResizedCrop. "gray-jitter-flip" is the reference
# (MoPro DataLoader/dataloader.py, transform_strong: RandomResizedCrop, RandomGrayscale(0.2), ColorJitter(0.4 x4),
# RandomHorizontalFlip); "flip-jitter-gray" is what this suite did before (kept for old checkpoints and ablations).
STRONG_ORDERS = ("gray-jitter-flip", "flip-jitter-gray")


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
    # Wide ResNets (width 2/4): false = conv1/bn1 keep 64 channels and only the stages are widened, as the reference
    # (MoPro resnet.py: inplanes 64 for conv1, stage base 64*width); true = conv1 also 64*width (SimCLR/SwAV style).
    # No effect at width 1.
    wide_stem: bool = False


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
    strong_order: str = "gray-jitter-flip"  # see STRONG_ORDERS; the default is the reference's
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
    # fp32 = the reference (no autocast anywhere); auto = bf16 autocast on CUDA and fp32 on CPU (faster, not the
    # reference's arithmetic); bf16 = autocast on any device; fp64 only for exactness tests
    precision: str = "fp32"
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


# What a saved config without a field meant when that field did not exist yet (the old behaviour, not today's default).
LEGACY_DEFAULTS = {("aug", "strong_order"): "flip-jitter-gray", ("model", "wide_stem"): True}


def from_dict(d: dict[str, Any]) -> PretrainConfig:
    """Rebuild a config saved with :meth:`PretrainConfig.to_dict` (unknown keys are an error, missing ones default --
    except the fields of :data:`LEGACY_DEFAULTS`, which take the value the code had before they existed)."""
    flat: dict[str, Any] = {}
    for section, values in (d or {}).items():
        if isinstance(values, dict):
            for k, v in values.items():
                flat[f"{section}.{k}"] = v
        else:
            flat[section] = values
    for (section, key), old in LEGACY_DEFAULTS.items():
        if isinstance((d or {}).get(section), dict) and key not in d[section]:
            flat[f"{section}.{key}"] = old
    return validate(apply_overrides(PretrainConfig(), flat))


def make_config(overrides: dict[str, Any] | None = None, base: PretrainConfig | None = None) -> PretrainConfig:
    return validate(apply_overrides(base or PretrainConfig(), overrides or {}))


def invalid_setting(name: str, value: Any, fix: str) -> BenchError:
    """The one-line error for a ``--set`` value that cannot train (pretraining and cRT settings alike)."""
    return BenchError(f"--set {name}={value!r} is not valid", fix)


def validate(cfg: PretrainConfig) -> PretrainConfig:
    """Checks that need no data or devices (the trainer checks batch/queue/world-size divisibility).

    Every number must be finite (``--set optim.lr=NaN`` or ``=inf`` is refused here, not discovered as a NaN
    checkpoint), and positive / inside its range where the method needs it."""
    m, o, a = cfg.mopro, cfg.optim, cfg.aug
    bad = invalid_setting

    if m.proto_norm not in PROTO_NORMS:
        raise bad("mopro.proto_norm", m.proto_norm, "use batch (reference code) or sample (paper Eq. 5)")
    if o.schedule not in SCHEDULES:
        raise bad("optim.schedule", o.schedule, "use step or cos")
    if cfg.run.precision not in PRECISIONS:
        raise bad("run.precision", cfg.run.precision, "use fp32 (the reference), auto, bf16 or fp64")
    if a.strong_order not in STRONG_ORDERS:
        raise bad("aug.strong_order", a.strong_order, "use " + " or ".join(STRONG_ORDERS) + " (the first is the reference's)")
    floats = {"mopro.moco_m": m.moco_m, "mopro.proto_m": m.proto_m, "mopro.alpha": m.alpha, "mopro.pseudo_th": m.pseudo_th,
              "mopro.temperature": m.temperature, "mopro.w_inst": m.w_inst, "mopro.w_proto": m.w_proto,
              "mopro.w_cls": m.w_cls, "optim.lr": o.lr, "optim.momentum": o.momentum, "optim.weight_decay": o.weight_decay,
              "optim.gamma": o.gamma, "aug.color_jitter_p": a.color_jitter_p, "aug.grayscale_p": a.grayscale_p}
    for name, v in floats.items():
        if not math.isfinite(v):
            raise bad(name, v, "use a finite number")
    for name, v in (("aug.color_jitter", a.color_jitter), ("aug.mean", a.mean), ("aug.std", a.std),
                    ("aug.crop_scale", a.crop_scale)):
        if not all(math.isfinite(x) for x in v):
            raise bad(name, list(v), "use finite numbers")
    for name in ("mopro.moco_m", "mopro.proto_m", "mopro.alpha", "mopro.pseudo_th", "aug.color_jitter_p", "aug.grayscale_p"):
        if not 0.0 <= floats[name] <= 1.0:
            raise bad(name, floats[name], "use a value in [0, 1]")
    if not 0.0 <= o.momentum < 1.0:
        raise bad("optim.momentum", o.momentum, "use a value in [0, 1), e.g. 0.9")
    if o.lr <= 0:
        raise bad("optim.lr", o.lr, "use a positive learning rate, e.g. 0.1 (the paper's, batch 256)")
    if not 0 < o.gamma <= 1:
        raise bad("optim.gamma", o.gamma, "use a decay factor in (0, 1], e.g. 0.1")
    if m.temperature <= 0:
        raise bad("mopro.temperature", m.temperature, "use a positive temperature, e.g. 0.1")
    for name in ("optim.weight_decay", "mopro.w_inst", "mopro.w_proto", "mopro.w_cls"):
        if floats[name] < 0:
            raise bad(name, floats[name], "use a value >= 0")
    if any(x < 0 for x in a.color_jitter):
        raise bad("aug.color_jitter", list(a.color_jitter), "use four values >= 0 (hue at most 0.5)")
    if a.color_jitter[3] > 0.5:
        raise bad("aug.color_jitter", list(a.color_jitter), "hue jitter must be at most 0.5")
    if any(x <= 0 for x in a.std):
        raise bad("aug.std", list(a.std), "use positive standard deviations")
    for name, v in (("mopro.queue_size", m.queue_size), ("data.batch_size", cfg.data.batch_size),
                    ("data.val_batch_size", cfg.data.val_batch_size), ("model.width", cfg.model.width),
                    ("model.num_class", cfg.model.num_class), ("model.low_dim", cfg.model.low_dim),
                    ("aug.image_size", a.image_size), ("optim.epochs", o.epochs)):
        if v < 1:
            raise bad(name, v, "use a positive integer")
    for name, v in (("mopro.start_clean_epoch", m.start_clean_epoch), ("mopro.proto_start_epoch", m.proto_start_epoch),
                    ("data.max_val_images", cfg.data.max_val_images), ("ckpt.every_steps", cfg.ckpt.every_steps),
                    ("run.eval_every", cfg.run.eval_every), ("run.seed", cfg.run.seed)):
        if v < 0:
            raise bad(name, v, "use an integer >= 0")
    if cfg.run.log_every < 1:
        raise bad("run.log_every", cfg.run.log_every, "use a positive number of steps")
    if any(ms < 1 for ms in o.milestones) or list(o.milestones) != sorted(o.milestones):
        raise bad("optim.milestones", list(o.milestones), "use increasing epochs >= 1, e.g. [40,80]")
    if cfg.data.batch_size > m.queue_size:
        raise bad("data.batch_size", cfg.data.batch_size,
                  f"use a batch no larger than mopro.queue_size={m.queue_size} (the queue is filled a whole batch at a time)")
    if cfg.model.bn_splits < 0:
        raise bad("model.bn_splits", cfg.model.bn_splits, "use 0 (auto) or a positive number of BN groups")
    if a.image_size < 32:
        raise bad("aug.image_size", a.image_size, "use at least 32 (ResNets downsample 32x)")
    if cfg.ckpt.keep_last < 1:
        raise bad("ckpt.keep_last", cfg.ckpt.keep_last, "keep at least 1 checkpoint")
    lo, hi = a.crop_scale
    if not 0 < lo <= hi <= 1:
        raise bad("aug.crop_scale", list(a.crop_scale), "use [low, high] with 0 < low <= high <= 1")
    return cfg
