"""The ViT machinery of the ImageNet tasks.

* the linear probes of :class:`~.protocols.ViTLinearProtocol`: the feature a head reads (:func:`probe_feature`,
  :class:`LastBlocksFeature` -- DINO's last-blocks CLS tokens; :func:`probe_feature_id`, the name a head file records)
  and the per-epoch schedule (:func:`linear_schedule`);
* iBOT's semi-supervised fine-tuning of :class:`~.protocols.ViTSemiSupProtocol`: the classifier
  (:class:`ProjectionClassifier`, :func:`vit_semisup_head`), drop path, AdamW groups, DeiT's training transform,
  mixup/cutmix, and :func:`vit_semisup_setup`, which assembles them with the warm-up cosine schedule and the
  repeated-augmentation order into a :class:`FinetuneSetup`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision import transforms as T

from mopro_bench.checkpoints import LoadedCheckpoint
from mopro_bench.data.common import eval_transform, normalize
from mopro_bench.engine.schedule import epoch_lr, warmup_cosine_lr
from mopro_bench.errors import BenchError
from mopro_bench.registry import Protocol
from mopro_bench.tasks.imagenet.finetune import FinetuneSetup, ParamGroup, TrainConfig, repeated_aug_order
from mopro_bench.tasks.imagenet.protocols import NUM_CLASSES, ViTLinearProtocol, ViTSemiSupProtocol


# -------------------------------------------------------------------------------------------------- ViT linear probes
class LastBlocksFeature(nn.Module):
    """DINO's linear-probe feature of a ViT (``eval_linear.py``): ``backbone.last_blocks_feature(x, n, avgpool)`` --
    the CLS tokens of the last ``n`` blocks, each through the final norm, concatenated (with ``avgpool``, n = 1:
    interleaved with the mean patch token). ``feature_dim`` = D x (n + avgpool)."""

    def __init__(self, backbone: nn.Module, n: int, avgpool: bool):
        super().__init__()
        if not hasattr(backbone, "last_blocks_feature"):
            raise BenchError(f"feature=last-blocks needs a ViT; this backbone is a {getattr(backbone, 'family', '?')}",
                             "use a ViT checkpoint, or imagenet_linear@fast")
        backbone.check_last_blocks(n, avgpool)  # before anything runs
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


def linear_schedule(p: ViTLinearProtocol):
    """The LR of an epoch under ``p.schedule``: ``cosine`` (per epoch, to 0 at ``epochs``) or ``step`` (milestones)."""
    if p.schedule not in ("cosine", "step"):
        raise BenchError(f"schedule={p.schedule!r} is unknown", "use cosine or step")
    if p.schedule == "cosine" and p.milestones:
        raise BenchError(f"milestones={list(p.milestones)} apply only with schedule=step",
                         "--set milestones=[] (cosine), or schedule=step")
    return lambda base, epoch: epoch_lr(p.schedule, base, epoch, epochs=p.epochs, milestones=p.milestones, gamma=p.gamma)


# ----------------------------------------------------------------------------------------- ViT semi-supervised recipe
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


def vit_semisup_setup(p: ViTSemiSupProtocol, ck: LoadedCheckpoint, backbone: nn.Module, n_train: int,
                      seed: int) -> FinetuneSetup:
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
    return FinetuneSetup(head=head, init_info=init_info, train_transform=vit_train_transform(p, ck), val_transform=val_tf,
                    config=cfg, groups=groups, lr_schedule=lr_schedule, epoch_order=epoch_order,
                    batch_transform=mixup, details=details)
