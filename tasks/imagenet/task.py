"""ImageNet tasks: 1% / 10% semi-supervised finetuning, the linear probe, and scoring a checkpoint's own classifier.

Tasks and protocols (``mopro-bench tasks`` lists them with their versions):

* ``imagenet_1pct`` / ``imagenet_10pct`` -- finetune every layer on a labelled 1% / 10% of ImageNet train and score
  top-1/top-5 on the full val set after every epoch. ``top1``/``top5`` come from the epoch the protocol's ``report``
  names: ``best-epoch`` (the highest val top-1, as the sources report -- MoPro's finetune_imagenet.py keeps
  ``best_acc1``, SwAV's eval_semisup.py its best epoch) or ``last-epoch``; ``best_top1`` and ``last_top1`` are always
  recorded, ``details.reported_epoch`` names the epoch. ``precision`` (fp32, as the sources; bf16 is a ``--set``
  variant) and ``bn_batch`` (images per BatchNorm group while training) are protocol constants.

  - ``@mopro`` (default, MoPro's recipe): SGD lr 0.005 for backbone and head, momentum 0.9, wd 0, batch 256,
    40 epochs, lr x0.2 at epochs 20 and 30, RandomResizedCrop 224 + flip, BatchNorm over 32 images (DDP without
    SyncBN on 8 GPUs). The classifier starts from the checkpoint's 1000-way classifier when it is in the ImageNet class
    space (MoPro V1: WebVision-1000 = ImageNet classes in sorted wnid order), else from a fresh one (normal(0, 0.01),
    bias 0); ``details.classifier_init`` says which. One labelled subset: the SimCLR list given with
    ``--subset-file`` (used exactly), else a seeded class-balanced draw written next to the result.
  - ``@mopro-as-released``: as @mopro, on what MoPro's released finetune_imagenet.py trained on with 8 GPUs -- every
    spawned process shuffled the train list itself (unseeded) and kept its own first ``int(f * N)`` images, so the
    model saw 8 independent random subsets (:func:`.subsets.draw_as_released`, seeded here); each epoch
    gives every process its own share (:func:`.subsets.as_released_epoch_order`). The published 71.2 / 74.8
    belong to this protocol.
  - ``@swav`` (SwAV paper, app. A): the SimCLR subset lists (``--subset-file``), 20 epochs, lr x0.2 at 12 and 16,
    wd 0, batch 256, SyncBN; backbone lr 0.02 / head lr 5 for 1%, 0.01 / 0.2 for 10%; a fresh classifier.

  - ``@ibot`` (ViT only, iBOT's semi-supervised fine-tuning: ``ibot/evaluation/semi_supervised/eval_cls.py`` as
    ``run.sh imagenet_semi_cls`` runs it, ``--epochs 1000 --lr 5e-6 --finetune_head_layer 1``): the SimCLR lists,
    AdamW lr 1e-5 (5e-6 x 1024 / 512) with weight decay 0.05 (none on biases and norms), 5 warm-up epochs
    from 1e-6 then timm's cosine to 1e-5 (stepped after each epoch, as the source), batch 1024, RandAugment
    rand-m9-mstd0.5-inc1, bicubic crops, random erasing 0.25, mixup 0.8 / cutmix 1.0 with label smoothing 0.1,
    repeated augmentation x3 over 8 emulated processes with dropped last batches, drop path 0.1, classifier = the
    checkpoint's projection-head first layer + GELU + a fresh Linear. Not reproduced: fp16 autocast (fp32 here) and a
    weight EMA the source keeps but never evaluates. ResNet protocols refuse ViTs and the reverse (exit 2); ConvNeXt has
    no 1% / 10% protocol (no published recipe).

  The subset's hash goes into the result's ``data`` block.

* ``imagenet_linear`` -- a linear classifier on the frozen backbone's pooled features.

  - ``@moco`` (default, MoCo v1/v2's linear protocol): frozen backbone with BatchNorm in eval mode, SGD lr 30,
    momentum 0.9, wd 0, batch 256, 100 epochs, lr x0.1 at 60 and 80, RandomResizedCrop 224 + flip, fp32; evaluated
    every epoch, ``top1`` = the best epoch's (main_lincls.py reports ``best_acc1``).
  - ``@fast``: features computed once (Resize 256 / CenterCrop 224, no augmentation) and cached, then a softmax
    head trained on the cache (standardised features, AdamW, cosine schedule) -- minutes on a GPU. A different
    protocol with its own numbers, not a stand-in for ``@moco``'s. Every family (the backbone's pooled feature).
  - ``@dino`` / ``@dino-base`` (ViT, ``dino/eval_linear.py`` defaults on 8 GPUs): the CLS tokens of the last 4 blocks
    (ViT-S setting) / the last CLS token interleaved with the mean patch token (ViT-B setting), each through the
    final norm; SGD lr 0.004 (0.001 x 1024 / 256), momentum 0.9, wd 0, batch 1024, 100 epochs cosine to 0 per epoch,
    head normal(0, 0.01), RandomResizedCrop + flip / Resize 256 bicubic + CenterCrop 224; best epoch.
  - ``@mocov3`` (ViT, ``moco-v3/main_lincls.py`` with CONFIG.md's ``--lr=3``): the CLS token after the final norm;
    SGD lr 12 (3 x 1024 / 256), wd 0, batch 1024, 90 epochs cosine to 0 per epoch, bilinear transforms; best epoch.

  ``--save-head FILE`` writes the trained head (``mopro_bench.checkpoints.heads`` format) with the feature it reads
  (``pooled``, or ``dino-last4-cls`` / ``dino-last1-cls-avgpool``); ``imagenet_val``, ``imagenet_r``, ``imagenet_a`` and
  ``imagenet_val_calibration`` accept a ``pooled`` one with ``--head FILE`` and refuse the others (one line).

* ``imagenet_val`` / ``webvision_val`` -- top-1/top-5 of the checkpoint's own classifier (or ``--head``'s, for
  ImageNet) on ImageNet val / WebVision val, centre crop, as MoPro reports both.

Every task records ``details.per_image``: each val image's top-1 and top-5 hit (0/1) in the val list's order, from the
evaluation that gives ``top1``/``top5`` (the reported epoch's), with ``ids_sha256`` (the ordered relative image paths).
``mopro-bench compare`` uses it for a paired bootstrap over val images. Under torchrun each rank scores its shard and
the hits are put back in list order by dataset index. ImageNet images read here (not through extract_features) are
fingerprinted into the record (``ctx.record_data``: ``imagenet/train-subset`` or ``imagenet/train``, ``imagenet/val``).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms as T

from mopro_bench.checkpoints import IMAGENET_COMPATIBLE, LoadedCheckpoint
from mopro_bench.data.common import ImageList, eval_transform, interpolation_mode, normalize
from mopro_bench.engine.precision import exact_fp32
from mopro_bench.engine.precision import precision_autocast as _autocast
from mopro_bench.engine.schedule import cosine_lr, step_lr
from mopro_bench.errors import BenchError
from mopro_bench.features import checkpoint_identity, extract_features
from mopro_bench.io import sha256_lines
from mopro_bench.metrics.classification import topk_accuracy
from mopro_bench.registry import Option, Protocol, RunContext, Task, TaskOutput
from mopro_bench.runtime import all_gather_cat
from mopro_bench.tasks.imagenet.finetune import (
    ParamGroup,
    SupervisedTrainer,
    TrainConfig,
    fit_linear_on_features,
    repeated_aug_order,
    warmup_cosine_lr,
)
from mopro_bench.tasks.imagenet.subsets import LabelledSubset, as_released_epoch_order, resolve_as_released, resolve_subset

NUM_CLASSES = 1000
SELECTION_LAST = "last epoch (best epoch reported as best_top1)"
SELECTION_BEST = ("best epoch: top1/top5 are from the evaluated epoch with the highest val top-1 (chosen on val itself, "
                  "as the source reports); last_top1 is the last epoch's")
REPORTS = ("best-epoch", "last-epoch")
HEAD_FIX = ("train a linear head with `mopro-bench eval --ckpt CKPT --task imagenet_linear@fast --data IMAGENET "
            "--save-head head.pt`, then pass --head head.pt")
UNITS = {"top1": "%", "top5": "%", "best_top1": "%", "last_top1": "%"}
TRAIN_METRICS = ("top1", "top5", "best_top1", "last_top1")


def _definitions(what: str, report: str) -> dict[str, str]:
    when = ("at the evaluated epoch with the highest val top-1 (details.best_epoch; chosen on val, as the source "
            "reports)" if report == "best-epoch" else "after the last epoch")
    return {
        "top1": f"top-1 accuracy (%) on the full ImageNet val set {when} ({what})",
        "top5": f"top-5 accuracy (%) on the full ImageNet val set {when} ({what})",
        "best_top1": "highest val top-1 (%) over the evaluated epochs (details.evaluated_epochs, every eval_every "
                     "epochs and the last); the epoch is chosen on val itself, so it is optimistic; "
                     "details.best_epoch says which epoch",
        "last_top1": "val top-1 (%) after the last epoch (no selection)",
    }


def _check_report(p: Any) -> None:
    if p.report not in REPORTS:
        raise BenchError(f"report={p.report!r} is unknown", f"use one of {', '.join(REPORTS)}")
    if p.report == "best-epoch" and getattr(p, "eval_every", 1) < 1:
        raise BenchError("report=best-epoch needs an evaluation every epoch or every few (eval_every >= 1)",
                         "--set eval_every=1, or report=last-epoch")


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


# The GPU count of MoPro's released finetuning: finetune_imagenet.py spawns one process per visible GPU
# (torch.cuda.device_count(), `--multiprocessing-distributed` as in the README command) and splits the batch of 256 over
# them; the README names "a 4-gpu or 8-gpu machine" (section "Training"; salesforce/MoPro README.md @155cae3) and the
# detection README trains with `--num-gpus 8`. The as-released protocol reproduces the 8-GPU case; --set num_ranks=4
# bn_batch=64 gives the 4-GPU one (a +hash protocol id).
AS_RELEASED_RANKS = 8


def _semisup(fraction: float) -> dict[str, SemiSupProtocol]:
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


# -------------------------------------------------------------------------------------------------------------- helpers
def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def _imagenet_samples(root: Path, split: str) -> list[tuple[Path, int]]:
    from mopro_bench.data.imagenet import ImageNetFolder

    samples = ImageNetFolder(root).samples(split)
    if not samples:
        raise BenchError(f"ImageNet {split} split under {root} has no images",
                         f"put the {split} images in {root}/{split}/<wnid>/ (`mopro-bench data check imagenet {root}`)")
    return samples


def _train_transform(p: SemiSupProtocol | LinearProtocol, ck: LoadedCheckpoint, interpolation: str | None = None) -> T.Compose:
    """RandomResizedCrop (+ flip) -> tensor -> the checkpoint's normalisation. ``interpolation``: the crop's resize
    (None: torchvision's default, bilinear -- the ResNet protocols)."""
    if interpolation is None:
        ops: list[Any] = [T.RandomResizedCrop(p.image_size, scale=tuple(p.crop_scale))]
    else:
        ops = [T.RandomResizedCrop(p.image_size, scale=tuple(p.crop_scale), interpolation=interpolation_mode(interpolation))]
    if p.hflip:
        ops.append(T.RandomHorizontalFlip())
    return T.Compose([*ops, T.ToTensor(), normalize(ck.preprocess)])


def _check_sizes(p: Any) -> None:
    if p.image_size < 8 or p.resize < p.image_size:
        raise BenchError(f"image_size={p.image_size}, resize={p.resize}: need image_size >= 8 and resize >= image_size",
                         "e.g. --set image_size=224 resize=256")


def _fresh_head(dim: int, std: float) -> nn.Linear:
    head = nn.Linear(dim, NUM_CLASSES)
    nn.init.normal_(head.weight, 0.0, std)
    nn.init.zeros_(head.bias)
    return head


class ClassifierNet(nn.Module):
    """``head(backbone(x))``."""

    def __init__(self, backbone: nn.Module, head: nn.Linear):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class LastBlocksFeature(nn.Module):
    """DINO's linear-probe feature of a ViT (``eval_linear.py``): ``backbone.last_blocks_feature(x, n, avgpool)`` --
    the CLS tokens of the last ``n`` blocks, each through the final norm, concatenated (with ``avgpool``, n = 1:
    interleaved with the mean patch token). ``feature_dim`` = D x (n + avgpool)."""

    def __init__(self, backbone: nn.Module, n: int, avgpool: bool):
        super().__init__()
        if not hasattr(backbone, "last_blocks_feature"):
            raise BenchError(f"feature=last-blocks needs a ViT; this backbone is a {getattr(backbone, 'family', '?')}",
                             "use a ViT checkpoint, or imagenet_linear@fast")
        depth = len(backbone.blocks)
        if not 1 <= n <= depth:
            raise BenchError(f"n_last_blocks={n} but the ViT has {depth} blocks", f"--set n_last_blocks=1..{depth}")
        if avgpool and n != 1:
            raise BenchError("avgpool_patchtokens needs n_last_blocks=1 (DINO interleaves one CLS with the mean token)",
                             "--set n_last_blocks=1")
        self.backbone, self.n, self.avgpool = backbone, int(n), bool(avgpool)
        self.feature_dim = int(backbone.feature_dim) * (self.n + int(self.avgpool))
        self.feature = (f"CLS tokens of the last {n} blocks, each through the final norm, concatenated" if n > 1 else
                        "CLS token of the last block through the final norm") + \
            (", interleaved with the mean patch token (DINO eval_linear.py)" if avgpool else " (DINO eval_linear.py)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.last_blocks_feature(x, self.n, self.avgpool)


PROBE_FEATURES = ("cls", "last-blocks")


def probe_feature_id(p: Protocol) -> str:
    """What a linear head trained under ``p`` reads (the ``feature`` of its head file): ``pooled`` (the backbone's
    forward; also DINO's n_last_blocks=1 without avgpool, which is the same tensor) or ``dino-last<n>-cls[-avgpool]``."""
    if isinstance(p, ViTLinearProtocol) and p.feature == "last-blocks":
        if p.n_last_blocks == 1 and not p.avgpool_patchtokens:
            return "pooled"
        return f"dino-last{p.n_last_blocks}-cls" + ("-avgpool" if p.avgpool_patchtokens else "")
    return "pooled"


def probe_feature(backbone: nn.Module, p: ViTLinearProtocol) -> nn.Module:
    """The frozen module whose output the linear head of ``p`` reads (``feature_dim`` set)."""
    if p.feature not in PROBE_FEATURES:
        raise BenchError(f"feature={p.feature!r} is unknown", f"use one of: {', '.join(PROBE_FEATURES)}")
    if p.feature == "cls":
        return backbone
    return LastBlocksFeature(backbone, p.n_last_blocks, p.avgpool_patchtokens)


def _linear_schedule(p: ViTLinearProtocol):
    """The LR of an epoch under ``p.schedule``: ``cosine`` (per epoch, to 0 at ``epochs``) or ``step`` (milestones)."""
    if p.schedule == "cosine":
        if p.milestones:
            raise BenchError(f"milestones={list(p.milestones)} apply only with schedule=step",
                             "--set milestones=[] (cosine), or schedule=step")
        return lambda base, epoch: cosine_lr(base, epoch, p.epochs)
    if p.schedule == "step":
        return lambda base, epoch: step_lr(base, epoch, p.milestones, p.gamma)
    raise BenchError(f"schedule={p.schedule!r} is unknown", "use cosine or step")


def _fit_summary(fit: Any, report: str = "last-epoch") -> tuple[dict[str, float], dict[str, Any]]:
    """Metrics of a fit: ``top1``/``top5`` from the epoch ``report`` names (best or last), plus ``best_top1`` and
    ``last_top1``; ``details.reported_epoch`` is the epoch top1/top5 come from."""
    if not fit.final:
        raise BenchError("nothing was evaluated", "set epochs >= 0 with a val split present")
    head = fit.best if report == "best-epoch" else fit.final
    metrics = {"top1": head["top1"], "top5": head["top5"], "best_top1": fit.best["top1"], "last_top1": fit.final["top1"]}
    details = {"report": report, "reported_epoch": head["epoch"], "last_epoch": fit.final["epoch"],
               "best_epoch": fit.best["epoch"], "best_top5": fit.best["top5"], "last_top5": fit.final["top5"],
               "evaluated_epochs": fit.evaluated_epochs, "history": fit.history}
    return metrics, details


def _list_hash(samples: list[tuple[Path, int]], root: Path) -> str:
    return sha256_lines([f"{_rel(p, root)} {y}" for p, y in samples])


def _selection(report: str) -> str:
    return SELECTION_BEST if report == "best-epoch" else SELECTION_LAST


def _record_images(ctx: RunContext, dataset_id: str, samples: list[tuple[Path, int]], root: Path) -> None:
    """Content fingerprint of images this task reads itself (not through extract_features) into the run's record."""
    from mopro_bench.fingerprint import fingerprint_files

    ctx.record_data(dataset_id, fingerprint_files([q for q, _ in samples], cache_dir=ctx.cache_dir,
                                                  names=[_rel(q, root) for q, _ in samples]))


# ------------------------------------------------------------------------------------------------------- per-image hits
KS = (1, 5)


def topk_hits(logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = KS) -> torch.Tensor:
    """``bool [N, len(ks)]``: whether each row's target is among its k highest logits -- the ``torch.topk`` rule of
    :func:`mopro_bench.metrics.classification.topk_correct` (same ties, k clipped to the number of classes)."""
    c = logits.shape[1]
    top = logits.topk(min(max(ks), c), dim=1).indices
    hit = top.eq(targets.to(top.device).view(-1, 1)).cumsum(dim=1).clamp_(max=1).bool()
    return torch.stack([hit[:, min(k, c) - 1] for k in ks], dim=1)


def per_image_record(ids: list[str], hits: np.ndarray, source: str) -> dict[str, Any]:
    """``details.per_image`` of ``hits`` (``[N, len(KS)]``, rows in the order of ``ids``), the format ``compare`` reads."""
    hits = np.asarray(hits, dtype=np.uint8)
    if hits.shape != (len(ids), len(KS)):
        raise ValueError(f"hits {hits.shape} do not match {len(ids)} ids")
    return {"ids_sha256": sha256_lines(list(ids)), "n": len(ids), "source": source,
            **{f"top{k}": {"correct": hits[:, j].tolist()} for j, k in enumerate(KS)}}


@dataclass
class HitEval:
    top1: float
    top5: float
    n: int
    hits: np.ndarray | None  # uint8 [n, len(KS)] in dataset order; None if the ranks' shards did not cover the set


@torch.no_grad()
def evaluate_hits(model: nn.Module, dataset: Dataset, device: torch.device, *, batch_size: int, workers: int = 0,
                  progress: bool = True, desc: str = "eval", precision: str = "fp32") -> HitEval:
    """Top-1/top-5 (percent) of ``model`` (eval mode) on ``dataset`` of ``(x, label, index)`` plus each image's hits.

    The same computation as :func:`mopro_bench.tasks.imagenet.finetune.evaluate_model` (shard ``rank::world``, ``precision`` as in
    training, channels_last on CUDA, ``torch.topk`` on float logits); the hits of all ranks are gathered and placed by the
    dataset index each item carries, so the vector is in dataset order whatever the sharding.
    """
    from tqdm.auto import tqdm

    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    was_training = model.training
    model.eval()
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    loader = DataLoader(Subset(dataset, list(range(rank, len(dataset), world))), batch_size=batch_size, shuffle=False,
                        num_workers=workers, pin_memory=device.type == "cuda")
    idx_parts, hit_parts = [torch.zeros(0, dtype=torch.long, device=device)], [torch.zeros(0, len(KS), dtype=torch.uint8,
                                                                                            device=device)]
    amp = _autocast(device, precision)
    for x, y, index in tqdm(loader, desc=desc, disable=not (progress and rank == 0), leave=False):
        x = x.to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.to(memory_format=torch.channels_last)
        with amp, exact_fp32(device, precision):
            logits = model(x)
        hit_parts.append(topk_hits(logits.float(), y.to(device)).to(torch.uint8))
        idx_parts.append(torch.as_tensor(index, dtype=torch.long, device=device))
    model.train(was_training)
    idx, hits = torch.cat(idx_parts), torch.cat(hit_parts)
    if world > 1:  # shards differ in length by at most one: pad, gather, drop the padding
        size = all_gather_cat(torch.tensor([idx.numel()], dtype=torch.long, device=device))
        pad = int(size.max()) - idx.numel()
        idx = all_gather_cat(torch.cat([idx, torch.full((pad,), -1, dtype=torch.long, device=device)]))
        hits = all_gather_cat(torch.cat([hits, torch.zeros(pad, len(KS), dtype=torch.uint8, device=device)]))
        keep = idx >= 0
        idx, hits = idx[keep], hits[keep]
    idx_np, hits_np = idx.cpu().numpy(), hits.cpu().numpy()
    n = len(idx_np)
    if n == 0:
        raise BenchError("the evaluation set is empty", "check the val split of the dataset")
    counts = hits_np.sum(0)
    ordered: np.ndarray | None = None
    if n == len(dataset) and np.array_equal(np.sort(idx_np), np.arange(n)):
        ordered = np.empty_like(hits_np)
        ordered[idx_np] = hits_np
    return HitEval(top1=100.0 * float(counts[0]) / n, top5=100.0 * float(counts[1]) / n, n=n, hits=ordered)


class HitTrainer(SupervisedTrainer):
    """:class:`SupervisedTrainer` whose evaluations also keep each val image's hits (:func:`evaluate_hits`), in
    order (``evals``); ``last`` is the latest evaluation."""

    last: HitEval | None = None

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.evals: list[HitEval] = []

    def _evaluate(self, model: nn.Module, device: torch.device, desc: str) -> dict[str, float]:
        bs = self.eval_batch_size or self.ctx.batch_size or (256 if device.type == "cuda" else 64)
        self.last = evaluate_hits(model, self.eval_set, device, batch_size=bs, workers=self.ctx.workers,
                                  progress=self.ctx.progress, desc=desc, precision=self.cfg.precision)
        self.evals.append(self.last)
        return {"top1": self.last.top1, "top5": self.last.top5, "eval_n": self.last.n}


def _trainer_per_image(trainer: HitTrainer, fit: Any, ids: list[str], details: dict[str, Any]) -> None:
    """Put the hits of the evaluation the metrics report (``details.reported_epoch``) into ``details.per_image``, or say
    in ``details.per_image_skipped`` why not."""
    evals = getattr(trainer, "evals", [])
    epoch = details.get("reported_epoch", fit.final.get("epoch"))
    evaluated = [h["epoch"] for h in fit.history if "top1" in h]
    here = dict(zip(evaluated[len(evaluated) - len(evals):], evals)) if evals else {}  # this process's evaluations
    chosen = here.get(epoch)
    want = next((h for h in fit.history if h["epoch"] == epoch and "top1" in h), None)
    if chosen is None:
        details["per_image_skipped"] = (f"the reported epoch {epoch} was not evaluated in this process (restored with "
                                        "--resume); re-run without --resume for per-image data")
    elif chosen.hits is None:
        details["per_image_skipped"] = "the ranks' evaluation shards did not cover the val set exactly once"
    elif want is None or (chosen.top1, chosen.top5) != (want["top1"], want["top5"]) or len(chosen.hits) != len(ids):
        details["per_image_skipped"] = "the evaluation kept is not the one the metrics report"
    else:
        details["per_image"] = per_image_record(ids, chosen.hits, f"val evaluation after epoch {epoch}")


@torch.no_grad()
def _linear_hits(weight: torch.Tensor, bias: torch.Tensor, feats: np.ndarray, labels: list[int],
                 device: torch.device | str = "cpu", chunk: int = 8192) -> np.ndarray:
    """uint8 ``[N, len(KS)]`` hits of the linear classifier ``feats @ weight.T + bias``."""
    w, b = weight.float().to(device), bias.float().to(device)
    y = torch.as_tensor(labels, dtype=torch.long)
    out = []
    for s in range(0, feats.shape[0], chunk):
        x = torch.from_numpy(np.ascontiguousarray(feats[s:s + chunk])).float().to(device)
        out.append(topk_hits(x @ w.T + b, y[s:s + chunk]).to(torch.uint8).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, len(KS)), np.uint8)


# ------------------------------------------------------------------------------------------- ViT semi-supervised recipe
class ProjectionClassifier(nn.Module):
    """iBOT's classifier with ``--finetune_head_layer 1`` (``ClassProjHead``, 3-layer projection head, no norm):
    the projection head's first ``Linear(D, hidden)`` + GELU, then a ``Linear(hidden, classes)``."""

    def __init__(self, dim: int, hidden: int, num_classes: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU())
        self.cls_head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls_head(self.mlp(x))


HEADS = ("projection-1", "linear")


def _trunc_normal_init(module: nn.Module, std: float) -> None:
    """The ViTs' ``_init_weights`` on a head: every Linear weight trunc_normal(0, std) in [-2, 2], bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def vit_semisup_head(p: ViTSemiSupProtocol, ck: LoadedCheckpoint) -> tuple[nn.Module, dict[str, Any]]:
    """The classifier of ``p.head`` and how it was initialised. ``projection-1`` takes its first layer from the
    checkpoint's projection head (``mlp.0``, DINO / iBOT) when its shape fits, as eval_cls.py's non-strict load of the
    pretrained weights does; otherwise that layer stays fresh, and ``text`` says so."""
    if p.head not in HEADS:
        raise BenchError(f"head={p.head!r} is unknown", f"use one of: {', '.join(HEADS)}")
    if p.head_init != "trunc-normal":
        raise BenchError(f"head_init={p.head_init!r} is unknown for the ViT recipe", "use trunc-normal")
    dim = ck.backbone.feature_dim
    if p.head == "linear":
        lin = nn.Linear(dim, NUM_CLASSES)
        _trunc_normal_init(lin, p.head_init_std)
        return lin, {"rule": p.head, "rule_applied": "fresh",
                     "text": f"fresh Linear({dim}, {NUM_CLASSES}) on the CLS token, trunc_normal(0, {p.head_init_std:g})"}
    if p.head_hidden < 1:
        raise BenchError(f"head_hidden={p.head_hidden} is not positive", "--set head_hidden=2048")
    head = ProjectionClassifier(dim, p.head_hidden, NUM_CLASSES)
    _trunc_normal_init(head, p.head_init_std)
    proj = ck.heads.get("projection")
    w = proj.state_dict.get("mlp.0.weight") if proj is not None else None
    b = proj.state_dict.get("mlp.0.bias") if proj is not None else None
    if w is not None and tuple(w.shape) == (p.head_hidden, dim) and (b is None or tuple(b.shape) == (p.head_hidden,)):
        if proj.nonfinite:
            raise BenchError(f"checkpoint {ck.name}: its projection head holds NaN/Inf values ({', '.join(proj.nonfinite)})",
                             "use another checkpoint of the run, or --set head=linear")
        with torch.no_grad():
            head.mlp[0].weight.copy_(w)
            if b is not None:
                head.mlp[0].bias.copy_(b)
        return head, {"rule": p.head, "rule_applied": "checkpoint-projection",
                      "text": f"first layer Linear({dim}, {p.head_hidden}) from the checkpoint's projection head (mlp.0), "
                              f"GELU, fresh Linear({p.head_hidden}, {NUM_CLASSES})"}
    why = ("the checkpoint has no projection head" if proj is None else
           f"its projection head has no mlp.0 of shape [{p.head_hidden}, {dim}]")
    return head, {"rule": p.head, "rule_applied": "fresh",
                  "text": f"fresh Linear({dim}, {p.head_hidden}) + GELU + Linear({p.head_hidden}, {NUM_CLASSES}), "
                          f"trunc_normal(0, {p.head_init_std:g}): {why}"}


def set_drop_path(vit: nn.Module, rate: float) -> list[float]:
    """Stochastic depth on a timm ViT's blocks, rising linearly from 0 (first block) to ``rate`` (last), the rule of
    timm's, DINO's and iBOT's ViTs (``torch.linspace(0, rate, depth)``); active in train mode only."""
    from timm.layers import DropPath

    if not 0.0 <= rate < 1.0:
        raise BenchError(f"drop_path={rate} is outside [0, 1)", "--set drop_path=0.1")
    rates = [float(r) for r in torch.linspace(0, rate, len(vit.blocks))]  # float32, as the sources compute them
    for blk, r in zip(vit.blocks, rates):
        blk.drop_path1 = DropPath(r) if r > 0 else nn.Identity()
        blk.drop_path2 = DropPath(r) if r > 0 else nn.Identity()
    return rates


def vit_param_groups(backbone: nn.Module, head: nn.Module, lr_backbone: float, lr_head: float,
                     weight_decay: float) -> list[ParamGroup]:
    """AdamW groups as timm's ``create_optimizer`` (``filter_bias_and_bn``) builds them for iBOT's model: no weight
    decay on biases and 1-d tensors (norms, layer scales); everything else decays -- including ``pos_embed`` and
    ``cls_token``, because iBOT's VisionTransformer has no ``no_weight_decay()`` list for timm to read."""
    groups = []
    for name, module, lr in (("backbone", backbone, lr_backbone), ("head", head, lr_head)):
        decay, no_decay = [], []
        for k, q in module.named_parameters():
            if q.requires_grad:
                (no_decay if q.ndim <= 1 or k.endswith(".bias") else decay).append(q)
        groups += [ParamGroup(name, decay, lr, weight_decay), ParamGroup(f"{name}-no-wd", no_decay, lr, 0.0)]
    return [g for g in groups if g.params]


def vit_train_transform(p: ViTSemiSupProtocol, ck: LoadedCheckpoint) -> T.Compose:
    """DeiT's training transform (timm ``create_transform``): RandomResizedCrop (``train_interpolation``) + flip,
    RandAugment ``auto_augment`` (colour jitter when there is none), tensor, the checkpoint's normalisation, random
    erasing (``reprob``, ``remode``, ``recount``) on the normalised tensor."""
    from timm.data import create_transform
    from timm.data.random_erasing import RandomErasing

    if p.train_interpolation not in ("bilinear", "bicubic"):
        raise BenchError(f"train_interpolation={p.train_interpolation!r} is not supported", "use bicubic or bilinear")
    try:
        primary, secondary, _ = create_transform(
            input_size=p.image_size, is_training=True, scale=tuple(p.crop_scale), hflip=0.5 if p.hflip else 0.0,
            color_jitter=p.color_jitter, auto_augment=p.auto_augment or None, interpolation=p.train_interpolation,
            mean=tuple(ck.preprocess.mean), std=tuple(ck.preprocess.std), separate=True)
    except (AssertionError, ValueError, KeyError) as e:
        raise BenchError(f"auto_augment={p.auto_augment!r} is not a timm augmentation policy ({e})",
                         "e.g. --set auto_augment=rand-m9-mstd0.5-inc1 (or \"\" for none)") from None
    ops: list[Any] = [*primary.transforms, *secondary.transforms, T.ToTensor(), normalize(ck.preprocess)]
    if p.reprob > 0:
        ops.append(RandomErasing(p.reprob, mode=p.remode, max_count=p.recount, device="cpu"))
    return T.Compose(ops)


def vit_mixup(p: ViTSemiSupProtocol, seed: int):
    """timm's Mixup/CutMix with label smoothing as a batch transform (soft targets), or None when both are off.

    Its draws (lambda, mixup or cutmix, the box) come from a numpy stream of its own, seeded by ``(seed, epoch,
    step)`` and the same on every process -- as in the source, whose processes all seed numpy with one seed
    (``utils.fix_random_seeds``) -- so a resumed run draws what an uninterrupted one would. ``start_epoch(e)`` is
    called with each epoch's data order."""
    if p.mixup <= 0 and p.cutmix <= 0:
        return None
    from timm.data import Mixup

    mix = Mixup(mixup_alpha=p.mixup, cutmix_alpha=p.cutmix, prob=p.mixup_prob, switch_prob=p.mixup_switch_prob,
                mode=p.mixup_mode, label_smoothing=p.label_smoothing, num_classes=NUM_CLASSES)
    where = {"epoch": 0, "step": 0}

    def transform(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[0] % 2:
            raise BenchError(f"mixup/cutmix pair the images of a batch, and this process's batch has {x.shape[0]}",
                             "use an even per-process batch (--set batch_size=...)")
        saved = np.random.get_state()
        np.random.seed(np.random.SeedSequence([int(seed), where["epoch"], where["step"], 0x317]).generate_state(1)[0])
        try:
            return mix(x, y)
        finally:
            np.random.set_state(saved)
            where["step"] += 1

    def start_epoch(epoch: int) -> None:
        where.update(epoch=int(epoch), step=0)

    transform.start_epoch = start_epoch  # type: ignore[attr-defined]
    return transform


@dataclass
class ViTSetup:
    head: nn.Module
    init_info: dict[str, Any]
    train_transform: Any
    val_transform: Any
    config: TrainConfig
    groups: list[ParamGroup]
    lr_schedule: Any
    epoch_order: Any
    batch_transform: Any
    details: dict[str, Any]


def vit_semisup_setup(p: ViTSemiSupProtocol, ck: LoadedCheckpoint, backbone: nn.Module, n_train: int,
                      seed: int) -> ViTSetup:
    """Everything :class:`ViTSemiSupProtocol` changes in the finetuning run (``backbone`` is the run's own copy)."""
    if p.schedule != "warmup-cosine":
        raise BenchError(f"schedule={p.schedule!r} is unknown for the ViT recipe", "use warmup-cosine")
    if p.milestones:
        raise BenchError(f"milestones={list(p.milestones)} do not apply to schedule=warmup-cosine", "--set milestones=[]")
    if p.warmup_epochs < 0 or p.lr_step_lag < 0:
        raise BenchError("warmup_epochs and lr_step_lag must be >= 0", "--set warmup_epochs=5 lr_step_lag=1")
    if p.repeated_aug < 1 or p.ra_ranks < 1 or p.ra_round < 1:
        raise BenchError("repeated_aug, ra_ranks and ra_round must be >= 1", "--set repeated_aug=3 ra_ranks=8 ra_round=256")
    if p.batch_size % p.ra_ranks:
        raise BenchError(f"batch_size={p.batch_size} does not split over ra_ranks={p.ra_ranks} processes",
                         "use a batch size that is a multiple of ra_ranks")
    if p.subset_source == "as-released":
        raise BenchError("subset_source=as-released reproduces MoPro's ResNet script, not this ViT recipe",
                         "--set subset_source=file (the SimCLR list) or seeded")
    if p.sync_bn or p.bn_batch:
        raise BenchError("a ViT has no BatchNorm: sync_bn and bn_batch do not apply", "--set sync_bn=false bn_batch=0")
    rates = set_drop_path(backbone, p.drop_path)
    head, init_info = vit_semisup_head(p, ck)
    mixup = vit_mixup(p, seed)
    cfg = TrainConfig(epochs=p.epochs, batch_size=p.batch_size, momentum=p.momentum, nesterov=p.nesterov,
                      eval_every=p.eval_every, label_smoothing=0.0 if mixup is not None else p.label_smoothing,
                      precision=p.precision, bn_batch=0, optimizer=p.optimizer, betas=tuple(p.betas), eps=p.eps)
    groups = vit_param_groups(backbone, head, p.lr_backbone, p.lr_head, p.weight_decay)

    def lr_schedule(base: float, epoch: int) -> float:
        return warmup_cosine_lr(base, max(epoch - p.lr_step_lag, 0), epochs=p.epochs, warmup_epochs=p.warmup_epochs,
                                warmup_lr=p.warmup_lr, min_lr=p.min_lr)

    per_rank = p.batch_size // p.ra_ranks

    def epoch_order(epoch: int) -> list[int]:
        if mixup is not None:
            mixup.start_epoch(epoch)
        return repeated_aug_order(n_train, epoch, seed, repeats=p.repeated_aug, ranks=p.ra_ranks,
                                  per_rank_batch=per_rank, round_to=p.ra_round)

    steps = len(repeated_aug_order(n_train, 0, seed, repeats=p.repeated_aug, ranks=p.ra_ranks, per_rank_batch=per_rank,
                                   round_to=p.ra_round)) // p.batch_size
    if steps == 0:
        raise BenchError(f"{n_train} labelled images give no full batch of {p.batch_size} after the repeated-augmentation "
                         f"sampler (ra_round={p.ra_round}, ra_ranks={p.ra_ranks})",
                         "use the full subset list, or smaller --set batch_size / ra_round for tiny data")
    val_tf = eval_transform(p.image_size, p.resize, ck.preprocess, interpolation=p.eval_interpolation)
    details = {"steps_per_epoch": steps, "images_per_epoch": steps * p.batch_size,
               "drop_path_rates": [round(r, 6) for r in rates],
               "param_groups": {g.name: sum(q.numel() for q in g.params) for g in groups}, "mixup": mixup is not None,
               "lr_backbone_first_epochs": [lr_schedule(p.lr_backbone, e) for e in range(min(8, p.epochs))],
               "not_reproduced": ["fp16 autocast (precision here: " + p.precision + ")",
                                  "model EMA (the source keeps one but evaluates the model itself)"]}
    return ViTSetup(head=head, init_info=init_info, train_transform=vit_train_transform(p, ck), val_transform=val_tf,
                    config=cfg, groups=groups, lr_schedule=lr_schedule, epoch_order=epoch_order,
                    batch_transform=mixup, details=details)


# ----------------------------------------------------------------------------------------------------- semi-supervised
class _ImageNetSemiSup(Task):
    data_kind = "imagenet"
    default_protocol = "mopro"
    metrics = TRAIN_METRICS
    options = (
        Option("subset_file", "ImageNet semi-supervised: SimCLR-format subset list", one_task=True),
        Option("resume", "continue an interrupted run from --work-dir", flag=True),
    )
    fraction: ClassVar[float]

    def run(self, model: LoadedCheckpoint, data_root: Path, protocol: Protocol, ctx: RunContext) -> TaskOutput:
        p: SemiSupProtocol = protocol  # type: ignore[assignment]
        _check_sizes(p)
        _check_report(p)
        root = Path(data_root)
        train, val = _imagenet_samples(root, "train"), _imagenet_samples(root, "val")
        subset = self._subset(p, train, ctx)
        ck = model
        backbone = copy.deepcopy(ck.backbone)
        train_items = [train[i] for i in subset.indices]
        vit: ViTSetup | None = None
        if isinstance(p, ViTSemiSupProtocol):
            vit = vit_semisup_setup(p, ck, backbone, len(train_items), ctx.seed)
            head, init_info = vit.head, vit.init_info
            train_tf, val_tf = vit.train_transform, vit.val_transform
        else:
            head, init_info = self._head(p, ck)
            train_tf = _train_transform(p, ck)
            val_tf = eval_transform(p.image_size, p.resize, ck.preprocess)
        net = ClassifierNet(backbone, head)
        train_ds = ImageList([q for q, _ in train_items], [y for _, y in train_items], train_tf)
        val_ds = ImageList([q for q, _ in val], [y for _, y in val], val_tf)
        if vit is not None:
            cfg = vit.config
        else:
            cfg = TrainConfig(epochs=p.epochs, batch_size=p.batch_size, milestones=tuple(p.milestones), gamma=p.gamma,
                              momentum=p.momentum, nesterov=p.nesterov, eval_every=p.eval_every, sync_bn=p.sync_bn,
                              label_smoothing=p.label_smoothing, precision=p.precision, bn_batch=p.bn_batch)
        epoch_order = vit.epoch_order if vit is not None else None
        if subset.source == "as-released":
            n_rank = subset.extra["subset_per_rank_size"]
            if p.batch_size % p.num_ranks:
                raise BenchError(f"batch_size={p.batch_size} does not split over num_ranks={p.num_ranks} processes",
                                 "use a batch size that is a multiple of num_ranks")
            if p.bn_batch not in (0, p.batch_size // p.num_ranks) and not p.sync_bn:
                raise BenchError(f"as released, BatchNorm sees one process's {p.batch_size // p.num_ranks} images, "
                                 f"but bn_batch={p.bn_batch}", f"--set bn_batch={p.batch_size // p.num_ranks}")

            def epoch_order(epoch: int) -> list[int]:
                return as_released_epoch_order(n_rank, p.num_ranks, epoch, ctx.seed)
        if vit is not None:
            groups = vit.groups
        else:
            groups = [ParamGroup("backbone", list(backbone.parameters()), p.lr_backbone, p.weight_decay),
                      ParamGroup("head", list(head.parameters()), p.lr_head, p.weight_decay)]
        run_key = {"task": self.name, "protocol": p.name, "params": p.params(), "seed": ctx.seed,
                   "checkpoint": checkpoint_identity(ck, ctx.seed), "subset": subset.sha256,
                   "val": _list_hash(val, root), "classifier_init": init_info["rule_applied"]}
        _record_images(ctx, "imagenet/train-subset", [train[i] for i in sorted(set(subset.indices))], root)
        _record_images(ctx, "imagenet/val", val, root)
        trainer = HitTrainer(net, groups, train_ds, val_ds, cfg, ctx, run_key=run_key,
                             resume=bool(ctx.option("resume", False)), desc=self.name,
                             log_dir=Path(ctx.work_dir) / "tensorboard" if ctx.work_dir else None,
                             epoch_order=epoch_order, lr_schedule=vit.lr_schedule if vit is not None else None,
                             batch_transform=vit.batch_transform if vit is not None else None)
        fit = trainer.fit()
        metrics, details = _fit_summary(fit, p.report)
        _trainer_per_image(trainer, fit, [_rel(q, root) for q, _ in val], details)
        details.update({
            "classifier_init": init_info, "subset_warnings": subset.warnings,
            "world_size": fit.world_size, "per_rank_batch": fit.per_rank_batch, "amp": fit.amp,
            "precision": p.precision, "bn_batch": p.bn_batch,
            "resumed_from_epoch": fit.resumed_from_epoch, "skipped_batches": fit.skipped_batches,
            "train_images": len(train_items), "work_dir": str(ctx.work_dir) if ctx.work_dir else None,
        })
        if vit is not None:
            details["recipe"] = vit.details
        data = {"train_list_sha256": _list_hash(train, root), "val_list_sha256": _list_hash(val, root),
                "train_images_total": len(train), "val_images": len(val), **subset.record()}
        artifacts = [subset.file] if subset.source == "seeded" and subset.file else []
        if subset.source == "file":
            what = "finetuned on the given subset list"
        elif subset.source == "seeded":
            what = f"finetuned on a class-balanced draw with seed {subset.seed}"
        else:
            what = (f"finetuned as released: {p.num_ranks} processes, each on its own random draw (seed {subset.seed}); "
                    f"{subset.extra['subset_union_size']} distinct images in all")
        return TaskOutput(metrics=metrics, details=details, selection=_selection(p.report), data=data,
                          artifacts=artifacts, metric_units=dict(UNITS), metric_definitions=_definitions(what, p.report))

    def _subset(self, p: SemiSupProtocol, train: list[tuple[Path, int]], ctx: RunContext) -> LabelledSubset:
        given = ctx.option("subset_file")
        if p.subset_source not in ("file", "seeded", "file-or-seeded", "as-released"):
            raise BenchError(f"subset_source={p.subset_source!r} is unknown",
                             "use file, seeded, file-or-seeded or as-released")
        if p.subset_source == "as-released":
            if given:
                raise BenchError(f"{self.name}@{p.name} draws one random subset per process as MoPro's released code did; "
                                 "--subset-file does not apply", f"drop --subset-file, or use {self.name}@mopro")
            if p.num_ranks < 1:
                raise BenchError("subset_source=as-released needs num_ranks >= 1", "--set num_ranks=8")
            return resolve_as_released(train, p.fraction, p.num_ranks, ctx.seed)
        if p.subset_source == "file" and not given:
            pct = f"{p.fraction * 100:g}percent.txt"
            raise BenchError(
                f"{self.name}@{p.name} trains on the SimCLR subset list, and no --subset-file was given",
                f"pass --subset-file {pct} (google-research/simclr, imagenet_subsets/{pct}), "
                "or --set subset_source=seeded for a seeded class-balanced draw (a different protocol id)",
            )
        if p.subset_source == "seeded" and given:
            raise BenchError("--subset-file was given but this protocol draws its subset (subset_source=seeded)",
                             "drop --subset-file, or use a protocol with subset_source=file-or-seeded")
        save_to = ctx.artifact("subset.txt")
        if save_to is None and ctx.work_dir is not None:
            save_to = Path(ctx.work_dir) / "subset.txt"
        return resolve_subset(train, p.fraction, subset_file=given, seed=ctx.seed, save_to=save_to)

    @staticmethod
    def _head(p: SemiSupProtocol, ck: LoadedCheckpoint) -> tuple[nn.Linear, dict[str, Any]]:
        if p.classifier_init not in ("checkpoint-or-fresh", "fresh"):
            raise BenchError(f"classifier_init={p.classifier_init!r} is unknown", "use checkpoint-or-fresh or fresh")
        dim = ck.backbone.feature_dim
        head_info = ck.heads.get("classifier")
        if p.classifier_init == "checkpoint-or-fresh":
            lin = ck.classifier(IMAGENET_COMPATIBLE)
            if lin is not None and lin.in_features == dim and lin.out_features == NUM_CLASSES:
                return copy.deepcopy(lin), {"rule": p.classifier_init, "rule_applied": "checkpoint",
                                            "class_space": head_info.class_space if head_info else None,
                                            "text": f"checkpoint's {head_info.class_space} classifier"}
            why = ("the checkpoint has no classifier" if head_info is None else
                   f"the checkpoint's classifier ({head_info.class_space}, {head_info.num_classes} classes) is not a "
                   "1000-way ImageNet-space classifier for this backbone")
        else:
            why = "the protocol always starts from a fresh classifier"
        if p.head_init == "torch-default":
            return nn.Linear(dim, NUM_CLASSES), {"rule": p.classifier_init, "rule_applied": "fresh",
                                                 "text": f"fresh, nn.Linear's default init: {why}"}
        if p.head_init != "normal":
            raise BenchError(f"head_init={p.head_init!r} is unknown", "use normal or torch-default")
        return _fresh_head(dim, p.head_init_std), {"rule": p.classifier_init, "rule_applied": "fresh",
                                                   "text": f"fresh normal(0, {p.head_init_std:g}), bias 0: {why}"}


class ImageNet1Pct(_ImageNetSemiSup):
    name = "imagenet_1pct"
    description = "ImageNet 1% labels: finetune all layers, top-1/top-5 on the full val set"
    fraction = 0.01
    protocols = _semisup(0.01)


class ImageNet10Pct(_ImageNetSemiSup):
    name = "imagenet_10pct"
    description = "ImageNet 10% labels: finetune all layers, top-1/top-5 on the full val set"
    fraction = 0.1
    protocols = _semisup(0.1)


# ------------------------------------------------------------------------------------------------------- linear probe
class ImageNetLinear(Task):
    name = "imagenet_linear"
    description = "linear classifier on the frozen backbone's pooled features, ImageNet val top-1/top-5"
    data_kind = "imagenet"
    protocols = {
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
    default_protocol = "moco"
    metrics = TRAIN_METRICS
    options = (
        Option("save_head", "imagenet_linear: write the trained head here", one_task=True, one_checkpoint=True),
        Option("resume", "continue an interrupted run from --work-dir", flag=True),
    )

    def run(self, model: LoadedCheckpoint, data_root: Path, protocol: Protocol, ctx: RunContext) -> TaskOutput:
        _check_sizes(protocol)
        _check_report(protocol)
        root = Path(data_root)
        train, val = _imagenet_samples(root, "train"), _imagenet_samples(root, "val")
        if isinstance(protocol, LinearFastProtocol):
            metrics, details, weight, bias = self._fast(protocol, model, root, train, val, ctx)
        else:
            metrics, details, weight, bias = self._moco(protocol, model, root, train, val, ctx)  # type: ignore[arg-type]
        artifacts = []
        if ctx.option("save_head"):
            from mopro_bench.checkpoints.heads import save_head

            path = save_head(ctx.option("save_head"), weight, bias, ck=model, class_space="imagenet1k",
                             protocol=f"{self.name}@{protocol.name}", feature=probe_feature_id(protocol),
                             extra={"feature_norm": "none", "top1": metrics["top1"], "top5": metrics["top5"]})
            artifacts.append(str(path))
            details["head_file"] = str(path)
        data = {"train_list_sha256": _list_hash(train, root), "val_list_sha256": _list_hash(val, root),
                "train_images": len(train), "val_images": len(val)}
        what = "linear head on the frozen backbone"
        report = protocol.report  # type: ignore[attr-defined]
        return TaskOutput(metrics=metrics, details=details, selection=_selection(report), data=data, artifacts=artifacts,
                          metric_units=dict(UNITS), metric_definitions=_definitions(what, report))

    def _moco(self, p: LinearProtocol, ck: LoadedCheckpoint, root: Path, train, val, ctx: RunContext):
        backbone = copy.deepcopy(ck.backbone)
        for q in backbone.parameters():
            q.requires_grad_(False)
        lr_schedule = None
        if isinstance(p, ViTLinearProtocol):
            feature = probe_feature(backbone, p)
            train_tf = _train_transform(p, ck, interpolation=p.train_interpolation)
            val_tf = eval_transform(p.image_size, p.resize, ck.preprocess, interpolation=p.eval_interpolation)
            lr_schedule = _linear_schedule(p)
        else:
            feature = backbone
            train_tf = _train_transform(p, ck)
            val_tf = eval_transform(p.image_size, p.resize, ck.preprocess)
        head = _fresh_head(feature.feature_dim, p.head_init_std)
        net = ClassifierNet(feature, head)
        train_ds = ImageList([q for q, _ in train], [y for _, y in train], train_tf)
        val_ds = ImageList([q for q, _ in val], [y for _, y in val], val_tf)
        cfg = TrainConfig(epochs=p.epochs, batch_size=p.batch_size, milestones=tuple(p.milestones), gamma=p.gamma,
                          momentum=p.momentum, nesterov=p.nesterov, eval_every=p.eval_every, precision=p.precision)
        run_key = {"task": self.name, "protocol": p.name, "params": p.params(), "seed": ctx.seed,
                   "checkpoint": checkpoint_identity(ck, ctx.seed), "train": len(train), "val": len(val)}
        _record_images(ctx, "imagenet/train", train, root)
        _record_images(ctx, "imagenet/val", val, root)
        trainer = HitTrainer(net, [ParamGroup("head", list(head.parameters()), p.lr, p.weight_decay)], train_ds,
                             val_ds, cfg, ctx, run_key=run_key, frozen=[feature],
                             resume=bool(ctx.option("resume", False)), desc=self.name,
                             log_dir=Path(ctx.work_dir) / "tensorboard" if ctx.work_dir else None, lr_schedule=lr_schedule)
        fit = trainer.fit()
        metrics, details = _fit_summary(fit, p.report)
        _trainer_per_image(trainer, fit, [_rel(q, root) for q, _ in val], details)
        if isinstance(p, ViTLinearProtocol):
            details["feature"] = {"id": probe_feature_id(p), "dim": int(feature.feature_dim),
                                  "text": getattr(feature, "feature", None)}
        details.update({"world_size": fit.world_size, "per_rank_batch": fit.per_rank_batch, "amp": fit.amp,
                        "precision": p.precision,
                        "resumed_from_epoch": fit.resumed_from_epoch, "skipped_batches": fit.skipped_batches,
                        "work_dir": str(ctx.work_dir) if ctx.work_dir else None})
        return metrics, details, head.weight.detach().cpu(), head.bias.detach().cpu()

    def _fast(self, p: LinearFastProtocol, ck: LoadedCheckpoint, root: Path, train, val, ctx: RunContext):
        t0 = time.time()
        xtr = extract_features(ck, [q for q, _ in train], ctx, dataset_id="imagenet/train",
                               rel_paths=[_rel(q, root) for q, _ in train], image_size=p.image_size, resize=p.resize,
                               desc="features imagenet/train")
        xva = extract_features(ck, [q for q, _ in val], ctx, dataset_id="imagenet/val",
                               rel_paths=[_rel(q, root) for q, _ in val], image_size=p.image_size, resize=p.resize,
                               desc="features imagenet/val")
        t_feat = time.time() - t0
        if p.head_init != "zeros":
            raise BenchError(f"head_init={p.head_init!r} is unknown for @fast", "use zeros")
        fit = fit_linear_on_features(
            xtr, np.array([y for _, y in train]), xva, np.array([y for _, y in val]), num_classes=NUM_CLASSES,
            epochs=p.epochs, batch_size=p.batch_size, lr=p.lr, weight_decay=p.weight_decay, optimizer=p.optimizer,
            momentum=p.momentum, schedule=p.schedule, feature_norm=p.feature_norm, eval_every=p.eval_every,
            seed=ctx.seed, device=ctx.device, progress=ctx.progress)
        metrics, details = _fit_summary(fit, p.report)
        hits = _linear_hits(fit.weight, fit.bias, xva, [y for _, y in val], ctx.device)
        details["per_image"] = per_image_record(
            [_rel(q, root) for q, _ in val], hits,
            "the trained head (as saved, normalisation folded in) on the cached val features")
        recomputed = 100.0 * float(hits[:, 0].mean())
        if abs(recomputed - metrics["top1"]) > 1e-9:  # a near-tie flipped by the folding's rounding
            details["per_image"]["note"] = (f"per-image top-1 {recomputed:.4f} vs recorded {metrics['top1']:.4f}: the "
                                            "head scored with folded normalisation (rounding at near-ties)")
        details.update({"feature_seconds": round(t_feat, 3), "head_seconds": round(fit.seconds, 3),
                        "feature_dim": int(xtr.shape[1]), "device": str(ctx.device)})
        return metrics, details, fit.weight, fit.bias


# ------------------------------------------------------------------------------------------------ classifier scoring
def own_classifier(ck: LoadedCheckpoint, spaces: tuple[str, ...], task: str, fix: str) -> nn.Linear:
    """The checkpoint's classifier if its class space is in ``spaces`` and it fits the backbone, else a BenchError."""
    head = ck.heads.get("classifier")
    if head is None:
        raise BenchError(f"checkpoint {ck.name} has no classifier, and {task} scores the checkpoint's own classifier", fix)
    lin = ck.classifier(spaces)
    if lin is None:
        raise BenchError(f"checkpoint {ck.name}'s classifier is in class space {head.class_space!r}; {task} needs one of "
                         f"{', '.join(spaces)}", fix)
    if lin.in_features != ck.backbone.feature_dim:
        raise BenchError(f"checkpoint {ck.name}'s classifier expects {lin.in_features}-d features but the backbone gives "
                         f"{ck.backbone.feature_dim}-d", fix)
    return lin


@torch.no_grad()
def _score(lin: nn.Linear, feats: np.ndarray, labels: list[int]) -> tuple[dict[str, float], np.ndarray]:
    """``top1``/``top5`` (percent) and each image's hits (uint8 ``[N, 2]``) of ``lin`` on ``feats``."""
    y = torch.as_tensor(labels, dtype=torch.long)
    if len(y) and int(y.max()) >= lin.out_features:
        raise BenchError(f"a val label ({int(y.max())}) is outside the classifier's {lin.out_features} classes",
                         "use a classifier in the dataset's class space")
    logits = lin(torch.from_numpy(np.ascontiguousarray(feats)).float())
    if not torch.isfinite(logits).all():
        raise BenchError("the classifier produced non-finite logits (NaN/inf)", "check the checkpoint's classifier head")
    return topk_accuracy(logits, y, KS), topk_hits(logits, y).to(torch.uint8).numpy()


class ImageNetVal(Task):
    name = "imagenet_val"
    description = "top-1/top-5 of the checkpoint's own 1000-way classifier (or --head) on ImageNet val"
    data_kind = "imagenet"
    protocols = {"mopro": ValProtocol(name="mopro", version="1", families=("resnet", "vit", "convnext"),
                                      description="own ImageNet-space classifier, Resize 256 + CenterCrop 224")}
    default_protocol = "mopro"
    metrics = ("top1", "top5")
    needs_classifier = True
    options = (
        Option("head", "robustness/ImageNet: a 1000-way head file written by imagenet_linear", one_task=True,
               one_checkpoint=True),
    )

    def run(self, model: LoadedCheckpoint, data_root: Path, protocol: Protocol, ctx: RunContext) -> TaskOutput:
        p: ValProtocol = protocol  # type: ignore[assignment]
        _check_sizes(p)
        if ctx.option("head"):
            from mopro_bench.checkpoints.heads import attach_head

            attach_head(model, ctx.option("head"))
        lin = own_classifier(model, tuple(p.class_spaces), self.name, HEAD_FIX)
        if lin.out_features != NUM_CLASSES:
            raise BenchError(f"checkpoint {model.name}'s classifier has {lin.out_features} outputs, not 1000", HEAD_FIX)
        root = Path(data_root)
        val = _imagenet_samples(root, "val")
        feats = extract_features(model, [q for q, _ in val], ctx, dataset_id="imagenet/val",
                                 rel_paths=[_rel(q, root) for q, _ in val], image_size=p.image_size, resize=p.resize,
                                 desc="features imagenet/val")
        metrics, hits = _score(lin, feats, [y for _, y in val])
        head = model.heads["classifier"]
        details = {"classifier": {"class_space": head.class_space, "source": model.meta.get("head_file") or "checkpoint"},
                   "per_image": per_image_record([_rel(q, root) for q, _ in val], hits, "single evaluation")}
        return TaskOutput(metrics=metrics, details=details, selection="single evaluation (no selection)",
                          data={"val_list_sha256": _list_hash(val, root), "val_images": len(val)},
                          metric_units={"top1": "%", "top5": "%"},
                          metric_definitions={"top1": "top-1 accuracy (%) of the classifier on ImageNet val, centre crop",
                                              "top5": "top-5 accuracy (%) of the classifier on ImageNet val, centre crop"})


class WebVisionVal(Task):
    name = "webvision_val"
    description = "top-1/top-5 of the checkpoint's own WebVision classifier on WebVision val (1000 or 5000 classes)"
    data_kind = "webvision"
    protocols = {"mopro": ValProtocol(name="mopro", version="1", families=("resnet", "vit", "convnext"),
                                      description="own WebVision-1000/5000 classifier, Resize 256 + CenterCrop 224",
                                      class_spaces=("webvision1k", "imagenet1k", "webvision5k"))}
    default_protocol = "mopro"
    metrics = ("top1", "top5")
    needs_classifier = True
    options = ()

    def run(self, model: LoadedCheckpoint, data_root: Path, protocol: Protocol, ctx: RunContext) -> TaskOutput:
        from mopro_bench.data.webvision import WebVision

        p: ValProtocol = protocol  # type: ignore[assignment]
        _check_sizes(p)
        fix = ("webvision_val scores a classifier trained on WebVision (e.g. by `mopro-bench pretrain`); for a backbone "
               "without one, " + HEAD_FIX.replace("--head head.pt", "--head head.pt to imagenet_val"))
        lin = own_classifier(model, tuple(p.class_spaces), self.name, fix)
        head = model.heads["classifier"]
        num_class = 5000 if head.class_space == "webvision5k" else NUM_CLASSES
        if lin.out_features != num_class:
            raise BenchError(f"checkpoint {model.name}'s {head.class_space} classifier has {lin.out_features} outputs, "
                             f"not {num_class}", fix)
        ds = WebVision(data_root, num_class=num_class)
        val = ds.val_samples()
        if not val:
            raise BenchError(f"WebVision val under {data_root} has no images with label < {num_class}",
                             f"`mopro-bench data check webvision {data_root}`")
        feats = extract_features(model, [ds.path(r) for r, _ in val], ctx, dataset_id=f"webvision{num_class}/val",
                                 rel_paths=[r for r, _ in val], image_size=p.image_size, resize=p.resize,
                                 desc="features webvision/val")
        metrics, hits = _score(lin, feats, [y for _, y in val])
        details = {"classifier": {"class_space": head.class_space, "num_class": num_class},
                   "per_image": per_image_record([r for r, _ in val], hits, "single evaluation")}
        return TaskOutput(metrics=metrics, details=details,
                          selection="single evaluation (no selection)",
                          data={"val_list_sha256": sha256_lines([f"{r} {y}" for r, y in val]), "val_images": len(val),
                                "num_class": num_class},
                          metric_units={"top1": "%", "top5": "%"},
                          metric_definitions={"top1": f"top-1 accuracy (%) on WebVision val ({num_class} classes)",
                                              "top5": f"top-5 accuracy (%) on WebVision val ({num_class} classes)"})


IMAGENET_1PCT = ImageNet1Pct()
IMAGENET_10PCT = ImageNet10Pct()
IMAGENET_LINEAR = ImageNetLinear()
IMAGENET_VAL = ImageNetVal()
WEBVISION_VAL = WebVisionVal()
