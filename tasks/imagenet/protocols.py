"""The ImageNet protocols: frozen dataclasses (every constant lands in the result record), the protocol tables of
``imagenet_1pct`` / ``imagenet_10pct`` (:func:`semisup_protocols`), ``imagenet_linear`` (``LINEAR_PROTOCOLS``),
``imagenet_val`` and ``webvision_val``, and the checks of the values a ``--set`` can get wrong (:func:`check_report`,
:func:`check_sizes`). Protocol prose and sources: ``tasks/imagenet/README.md``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mopro_bench.checkpoints import IMAGENET_COMPATIBLE
from mopro_bench.errors import BenchError
from mopro_bench.registry import Protocol

NUM_CLASSES = 1000  # ImageNet's classes: every head these protocols train or score has 1000 outputs
REPORTS = ("best-epoch", "last-epoch")


# ---------------------------------------------------------------------------------------------------------- protocols
@dataclass(frozen=True)
class SemiSupProtocol(Protocol):
    """Finetune all layers on a labelled fraction of ImageNet train; score on the full val set."""

    fraction: float = 0.01
    subset_source: str = "file-or-seeded"  # "file" (SimCLR list required) | "seeded" | "file-or-seeded"
    lr_backbone: float = 0.005
    lr_head: float = 0.005
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    batch_size: int = 256  # global, over all GPUs; the lr is not scaled with the number of GPUs
    epochs: int = 40
    milestones: tuple[int, ...] = (20, 30)  # 0-based epochs from which lr *= gamma
    gamma: float = 0.2
    image_size: int = 224
    resize: int = 256  # evaluation: Resize(resize) -> CenterCrop(image_size)
    crop_scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop scale range (ratio 3/4..4/3)
    hflip: bool = True
    classifier_init: str = "checkpoint-or-fresh"  # "checkpoint-or-fresh" | "fresh"
    head_init_std: float = 0.01  # fresh head (head_init="normal"): weight ~ normal(0, std), bias 0
    # "normal" | "torch-default" (nn.Linear's own init: kaiming-uniform weight, uniform bias -- SwAV's eval_semisup.py
    # builds its 2048->1000 head with nn.Linear and its init loop touches only conv/BatchNorm layers)
    head_init: str = "normal"
    backbone_bn: str = "train"  # BatchNorm statistics are updated while finetuning
    sync_bn: bool = False  # SyncBatchNorm across GPUs (no effect on one GPU)
    # images per BatchNorm group while training (0 = the whole per-process batch). MoPro finetune_imagenet.py runs DDP
    # without SyncBN, 256 split over the GPUs: 32 per GPU on the 8-GPU setup (see num_ranks), so BN sees 32 images.
    bn_batch: int = 32
    label_smoothing: float = 0.0
    precision: str = "fp32"  # the sources trained in fp32; "bf16" (autocast) is a different protocol (--set -> +hash)
    eval_every: int = 1  # evaluate every N epochs (and after the last); the sources evaluate after every epoch
    report: str = "best-epoch"  # top1/top5 = the evaluated epoch with the highest val top-1 | "last-epoch"
    # subset_source="as-released" only: the number of DDP processes whose independent random subsets are reproduced
    # (finetune_imagenet.py shuffles the train list inside every spawned process, unseeded); 0 otherwise
    num_ranks: int = 0


@dataclass(frozen=True)
class LinearProtocol(Protocol):
    """Linear classifier on the frozen backbone (BatchNorm in eval mode), trained on augmented images."""

    lr: float = 30.0
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    batch_size: int = 256
    epochs: int = 100
    milestones: tuple[int, ...] = (60, 80)
    gamma: float = 0.1
    image_size: int = 224
    resize: int = 256
    crop_scale: tuple[float, float] = (0.08, 1.0)
    hflip: bool = True
    head_init_std: float = 0.01
    backbone_bn: str = "eval"  # frozen backbone, BatchNorm running statistics not updated
    precision: str = "fp32"  # MoCo main_lincls.py trains and evaluates in fp32
    eval_every: int = 1  # main_lincls.py validates after every epoch
    report: str = "best-epoch"  # main_lincls.py reports best_acc1, the highest val top-1 over the 100 epochs


@dataclass(frozen=True)
class LinearFastProtocol(Protocol):
    """Linear softmax head trained on cached centre-crop features (no augmentation)."""

    image_size: int = 224
    resize: int = 256
    features: str = "pooled backbone output, BatchNorm eval, Resize(resize)+CenterCrop(image_size), cached"
    feature_norm: str = "standardize"  # per-dimension train mean/std, folded into the saved head
    optimizer: str = "adamw"
    lr: float = 1e-3
    momentum: float = 0.9  # used by optimizer=sgd only
    weight_decay: float = 0.0
    batch_size: int = 1024
    epochs: int = 30
    schedule: str = "cosine"  # per step, to 0
    head_init: str = "zeros"
    eval_every: int = 1  # cheap on cached features
    eval_rule: str = "last epoch; best evaluated epoch reported separately as best_top1"
    report: str = "last-epoch"  # the project's own protocol: no selection on val


@dataclass(frozen=True)
class ViTLinearProtocol(LinearProtocol):
    """Linear classifier on a frozen ViT's token feature with a per-epoch cosine schedule (DINO, MoCo v3).

    Only the protocols of this class have these fields (the ResNet protocols' constants stay as they were)."""

    milestones: tuple[int, ...] = ()  # unused: schedule=cosine
    gamma: float = 1.0  # unused: schedule=cosine
    # per epoch, base -> 0 over `epochs`: lr_e = lr (1 + cos(pi e / epochs)) / 2 (dino eval_linear.py
    # CosineAnnealingLR(epochs, eta_min=0) stepped after every epoch; moco-v3 main_lincls.py adjust_learning_rate)
    schedule: str = "cosine"
    # "cls" = the backbone's forward (CLS token after the final norm, MoCo v3) | "last-blocks" (DINO's linear-probe
    # feature: the CLS tokens of the last n_last_blocks blocks, each through the final norm, concatenated)
    feature: str = "cls"
    n_last_blocks: int = 1  # feature=last-blocks only
    avgpool_patchtokens: bool = False  # feature=last-blocks only: interleave the mean patch token (DINO ViT-B)
    train_interpolation: str = "bilinear"  # RandomResizedCrop's (torchvision's default in both sources)
    eval_interpolation: str = "bilinear"  # Resize(resize)'s: DINO bicubic (interpolation=3), MoCo v3 bilinear


@dataclass(frozen=True)
class ViTSemiSupProtocol(SemiSupProtocol):
    """Finetune a ViT end to end on a labelled fraction with iBOT's semi-supervised recipe (DeiT's training
    pipeline in ``ibot/evaluation/semi_supervised/eval_cls.py``, as ``run.sh imagenet_semi_cls`` calls it).

    The inherited SGD/step/BatchNorm fields keep their meaning: with optimizer=adamw, ``momentum``/``nesterov`` are
    unused; with schedule=warmup-cosine, ``milestones``/``gamma`` are unused; a ViT has no BatchNorm (bn_batch 0)."""

    subset_source: str = "file"  # SimCLR's 1% / 10% lists (ibot evaluation/README.md: "the data split defined in SimCLRv2")
    # run.sh imagenet_semi_cls --lr 5e-6, scaled in eval_cls.py by batch / 512 (linear_scaled_lr): 5e-6 x 1024 / 512
    lr_backbone: float = 1e-5
    lr_head: float = 1e-5
    weight_decay: float = 0.05  # eval_cls.py --weight-decay default; none on biases and 1-d tensors (timm filter)
    batch_size: int = 1024  # eval_cls.py --batch-size 128 per GPU x 8 GPUs (run.sh ... 8)
    epochs: int = 1000  # evaluation/README.md: --epochs 1000
    milestones: tuple[int, ...] = ()
    gamma: float = 1.0
    classifier_init: str = "fresh"
    head_init_std: float = 0.02  # trunc_normal(std=0.02), bias 0 (the ViT's _init_weights applied to the head)
    head_init: str = "trunc-normal"
    bn_batch: int = 0
    label_smoothing: float = 0.1  # eval_cls.py --smoothing, applied through mixup's soft targets
    optimizer: str = "adamw"  # eval_cls.py --opt adamw (timm create_optimizer -> torch AdamW)
    betas: tuple[float, float] = (0.9, 0.999)  # --opt-betas None: AdamW's defaults
    eps: float = 1e-8  # --opt-eps
    # timm CosineLRScheduler per epoch (create_scheduler, --sched cosine): warm-up from warmup_lr over warmup_epochs,
    # then cosine from lr to min_lr over `epochs`; eval_cls.py steps it *after* each epoch (lr_scheduler.step(epoch)),
    # so epoch e trains at the schedule's value for e - lr_step_lag (never below t = 0)
    schedule: str = "warmup-cosine"
    warmup_epochs: int = 5  # --warmup-epochs
    warmup_lr: float = 1e-6  # --warmup-lr
    min_lr: float = 1e-5  # --min-lr (equal to the scaled lr at batch 1024: after the warm-up the lr stays at 1e-5)
    lr_step_lag: int = 1
    drop_path: float = 0.1  # --drop-path, stochastic depth rising linearly over the blocks (0 .. 0.1)
    # the classifier: "projection-1" (--finetune_head_layer 1: the pretrained projection head's first Linear + GELU,
    # then a fresh Linear to the classes; a fresh first layer when the checkpoint has no such projection head) |
    # "linear" (--finetune_head_layer 0: one fresh Linear on the CLS token)
    head: str = "projection-1"
    head_hidden: int = 2048  # the projection head's hidden width (DINO/iBOT heads: 2048)
    train_interpolation: str = "bicubic"  # --train-interpolation
    eval_interpolation: str = "bicubic"  # build_transform: Resize(int(256 / 224 * input_size), interpolation=3)
    auto_augment: str = "rand-m9-mstd0.5-inc1"  # --aa (timm RandAugment; colour jitter is off when it is on)
    color_jitter: float = 0.4  # --color-jitter (unused while auto_augment is set, as in timm)
    reprob: float = 0.25  # --reprob: random erasing after normalisation
    remode: str = "pixel"  # --remode
    recount: int = 1  # --recount
    mixup: float = 0.8  # --mixup (alpha)
    cutmix: float = 1.0  # --cutmix (alpha)
    mixup_prob: float = 1.0  # --mixup-prob
    mixup_switch_prob: float = 0.5  # --mixup-switch-prob
    mixup_mode: str = "batch"  # --mixup-mode
    # repeated augmentation (--repeated-aug, DeiT's RASampler): every image 3 times per epoch, dealt over ra_ranks
    # processes, each keeping (n // ra_round * ra_round) / ra_ranks items; the loader drops its last partial batch
    repeated_aug: int = 3
    ra_ranks: int = 8
    ra_round: int = 256


@dataclass(frozen=True)
class ValProtocol(Protocol):
    """The checkpoint's own classifier scored on a val set with a centre crop."""

    image_size: int = 224
    resize: int = 256
    class_spaces: tuple[str, ...] = IMAGENET_COMPATIBLE


# ---------------------------------------------------------------------------------------------------- protocol tables
# The GPU count of MoPro's released finetuning: finetune_imagenet.py spawns one process per visible GPU
# (torch.cuda.device_count(), `--multiprocessing-distributed` as in the README command) and splits the batch of 256 over
# them; the README names "a 4-gpu or 8-gpu machine" (section "Training"; salesforce/MoPro README.md @155cae3) and the
# detection README trains with `--num-gpus 8`. The as-released protocol reproduces the 8-GPU case; --set num_ranks=4
# bn_batch=64 gives the 4-GPU one (a +hash protocol id).
AS_RELEASED_RANKS = 8


def semisup_protocols(fraction: float) -> dict[str, SemiSupProtocol]:
    """The protocol table of ``imagenet_1pct`` (``fraction`` 0.01) or ``imagenet_10pct`` (0.1)."""
    pct = "1%" if fraction == 0.01 else "10%"
    swav_lrs = (0.02, 5.0) if fraction == 0.01 else (0.01, 0.2)
    mopro = SemiSupProtocol(
        name="mopro", version="2", families=("resnet",),
        description=f"finetune all layers on one {pct} subset of ImageNet (MoPro's recipe): lr 0.005, 40 ep, x0.2 at "
                    "20/30, BN groups of 32, fp32, init from the checkpoint's ImageNet-space classifier when present; "
                    "top-1 = best of the 40 epochs (evaluated every epoch, as MoPro reports)",
        fraction=fraction)
    return {
        "mopro": mopro,
        "mopro-as-released": dataclasses.replace(
            mopro, name="mopro-as-released", version="1",
            description=f"as MoPro's released finetune_imagenet.py ran on {AS_RELEASED_RANKS} GPUs: each of the "
                        f"{AS_RELEASED_RANKS} processes draws its own random {pct} of ImageNet train (seeded here) and "
                        "trains on its share of it; otherwise as @mopro. The protocol of the published 1%/10% numbers",
            subset_source="as-released", num_ranks=AS_RELEASED_RANKS),
        "swav": SemiSupProtocol(
            name="swav", version="2", families=("resnet",),
            description=f"finetune all layers on the SimCLR {pct} list (SwAV): lr {swav_lrs[0]} backbone / "
                        f"{swav_lrs[1]:g} head, 20 ep, x0.2 at 12/16, SyncBN, fp32; top-1 = best epoch (as SwAV reports)",
            fraction=fraction, subset_source="file", lr_backbone=swav_lrs[0], lr_head=swav_lrs[1], epochs=20,
            milestones=(12, 16), gamma=0.2, classifier_init="fresh", head_init="torch-default", sync_bn=True,
            bn_batch=0),
        "ibot": ViTSemiSupProtocol(
            name="ibot", version="1", families=("vit",),
            description=f"finetune a ViT on the SimCLR {pct} list with iBOT's semi-supervised recipe (DeiT pipeline): "
                        "AdamW lr 1e-5 (5e-6 x 1024/512), wd 0.05, 1000 ep, 5 warm-up ep, RandAugment, mixup 0.8 / "
                        "cutmix 1.0, label smoothing 0.1, random erasing 0.25, repeated aug x3, drop path 0.1, head from "
                        "the projection head's first layer; top-1 = best epoch. Differs from the source in fp32 "
                        "arithmetic (the source: fp16 autocast) and no weight EMA (kept there, never evaluated)",
            fraction=fraction),
    }


LINEAR_PROTOCOLS: dict[str, Protocol] = {
    "moco": LinearProtocol(
        name="moco", version="2", families=("resnet",),
        description="frozen backbone (BN eval), SGD lr 30, 100 ep, x0.1 at 60/80, RandomResizedCrop+flip, fp32; "
                    "top-1 = best of the 100 epochs (evaluated every epoch), as MoCo's main_lincls.py reports"),
    "fast": LinearFastProtocol(
        name="fast", version="1", families=("resnet", "vit", "convnext"),
        description="softmax head on cached centre-crop features (standardised, AdamW 1e-3, 30 ep cosine); "
                    "minutes on a GPU, not comparable to @moco"),
    # dino eval_linear.py defaults, run as its README says (8 GPUs x --batch_size_per_gpu 128): lr 0.001 x 1024/256
    "dino": ViTLinearProtocol(
        name="dino", version="1", families=("vit",),
        description="DINO's linear probe (eval_linear.py, ViT-S setting): CLS tokens of the last 4 blocks "
                    "concatenated, frozen ViT, SGD lr 0.004 (0.001 x 1024/256), batch 1024, 100 ep cosine to 0, "
                    "RandomResizedCrop+flip / Resize 256 bicubic + CenterCrop 224, fp32; top-1 = best epoch",
        lr=0.004, batch_size=1024, epochs=100, feature="last-blocks", n_last_blocks=4, avgpool_patchtokens=False,
        eval_interpolation="bicubic"),
    "dino-base": ViTLinearProtocol(
        name="dino-base", version="1", families=("vit",),
        description="DINO's linear probe, ViT-B setting (eval_linear.py: n_last_blocks 1, avgpool_patchtokens "
                    "true): the last CLS token interleaved with the mean patch token; otherwise as @dino",
        lr=0.004, batch_size=1024, epochs=100, feature="last-blocks", n_last_blocks=1, avgpool_patchtokens=True,
        eval_interpolation="bicubic"),
    # moco-v3 main_lincls.py (-b 1024 default, --epochs 90 default, --wd 0) with CONFIG.md's ViT command --lr=3,
    # scaled by init_lr = lr x batch / 256
    "mocov3": ViTLinearProtocol(
        name="mocov3", version="1", families=("vit",),
        description="MoCo v3's ViT linear probe (main_lincls.py, CONFIG.md --lr=3): CLS token after the final "
                    "norm, frozen ViT, SGD lr 12 (3 x 1024/256), batch 1024, 90 ep cosine to 0, "
                    "RandomResizedCrop+flip / Resize 256 + CenterCrop 224 (bilinear), fp32; top-1 = best epoch",
        lr=12.0, batch_size=1024, epochs=90, feature="cls"),
}

IMAGENET_VAL_PROTOCOLS: dict[str, ValProtocol] = {
    "mopro": ValProtocol(name="mopro", version="1", families=("resnet", "vit", "convnext"),
                         description="own ImageNet-space classifier, Resize 256 + CenterCrop 224"),
}

WEBVISION_VAL_PROTOCOLS: dict[str, ValProtocol] = {
    "mopro": ValProtocol(name="mopro", version="1", families=("resnet", "vit", "convnext"),
                         description="own WebVision-1000/5000 classifier, Resize 256 + CenterCrop 224",
                         class_spaces=("webvision1k", "imagenet1k", "webvision5k")),
}


# ------------------------------------------------------------------------------------------------------------- checks
def check_report(p: Any) -> None:
    if p.report not in REPORTS:
        raise BenchError(f"report={p.report!r} is unknown", f"use one of {', '.join(REPORTS)}")
    if p.report == "best-epoch" and getattr(p, "eval_every", 1) < 1:
        raise BenchError("report=best-epoch needs an evaluation every epoch or every few (eval_every >= 1)",
                         "--set eval_every=1, or report=last-epoch")


def check_sizes(p: Any) -> None:
    if p.image_size < 8 or p.resize < p.image_size:
        raise BenchError(f"image_size={p.image_size}, resize={p.resize}: need image_size >= 8 and resize >= image_size",
                         "e.g. --set image_size=224 resize=256")
