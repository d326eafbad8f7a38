"""ImageNet tasks: 1% / 10% semi-supervised finetuning, the linear probe, and scoring a checkpoint's own classifier.

This module holds the Task objects and the helpers they share (samples, transforms, heads, record pieces); the protocol
dataclasses, tables and checks are in :mod:`.protocols`, the ViT probe features and fine-tuning recipe in :mod:`.vit`,
per-image hits in :mod:`.scoring`, the training loop in :mod:`.finetune` and the labelled subsets in :mod:`.subsets`.

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
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torchvision import transforms as T

from mopro_bench.checkpoints import IMAGENET_COMPATIBLE, LoadedCheckpoint
from mopro_bench.data.common import ImageList, eval_transform, interpolation_mode, normalize
from mopro_bench.errors import BenchError
from mopro_bench.features import checkpoint_identity, extract_features
from mopro_bench.io import sha256_lines
from mopro_bench.metrics.classification import topk_accuracy
from mopro_bench.registry import Option, Protocol, RunContext, Task, TaskOutput
from mopro_bench.tasks.imagenet.finetune import FinetuneSetup, ParamGroup, TrainConfig, fit_linear_on_features
from mopro_bench.tasks.imagenet.protocols import (
    IMAGENET_VAL_PROTOCOLS,
    LINEAR_PROTOCOLS,
    NUM_CLASSES,
    WEBVISION_VAL_PROTOCOLS,
    LinearFastProtocol,
    LinearProtocol,
    SemiSupProtocol,
    ValProtocol,
    ViTLinearProtocol,
    ViTSemiSupProtocol,
    check_report,
    check_sizes,
    semisup_protocols,
)
from mopro_bench.tasks.imagenet.scoring import KS, HitTrainer, linear_hits, per_image_record, topk_hits
from mopro_bench.tasks.imagenet.subsets import LabelledSubset, as_released_epoch_order, resolve_as_released, resolve_subset
from mopro_bench.tasks.imagenet.vit import linear_schedule, probe_feature, probe_feature_id, vit_semisup_setup

SELECTION_LAST = "last epoch (best epoch reported as best_top1)"
SELECTION_BEST = ("best epoch: top1/top5 are from the evaluated epoch with the highest val top-1 (chosen on val itself, "
                  "as the source reports); last_top1 is the last epoch's")
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


def _train_transform(p: SemiSupProtocol | LinearProtocol, ck: LoadedCheckpoint, interpolation: str = "bilinear") -> T.Compose:
    """RandomResizedCrop (+ flip) -> tensor -> the checkpoint's normalisation. ``interpolation``: the crop's resize
    (bilinear, torchvision's default, for the ResNet protocols)."""
    ops: list[Any] = [T.RandomResizedCrop(p.image_size, scale=tuple(p.crop_scale),
                                          interpolation=interpolation_mode(interpolation))]
    if p.hflip:
        ops.append(T.RandomHorizontalFlip())
    return T.Compose([*ops, T.ToTensor(), normalize(ck.preprocess)])


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


# ----------------------------------------------------------------------------------------------------- semi-supervised
class _ImageNetSemiSup(Task):
    data_kind = "imagenet"
    splits = ("train", "val")
    default_protocol = "mopro"
    metrics = TRAIN_METRICS
    options = (
        Option("subset_file", "ImageNet semi-supervised: SimCLR-format subset list", one_task=True),
        Option("resume", "continue an interrupted run from --work-dir", flag=True),
    )
    fraction: ClassVar[float]

    def run(self, model: LoadedCheckpoint, data_root: Path, protocol: Protocol, ctx: RunContext) -> TaskOutput:
        p: SemiSupProtocol = protocol  # type: ignore[assignment]
        check_sizes(p)
        check_report(p)
        root = Path(data_root)
        train, val = _imagenet_samples(root, "train"), _imagenet_samples(root, "val")
        subset = self._subset(p, train, ctx)
        ck = model
        backbone = copy.deepcopy(ck.backbone)
        train_items = [train[i] for i in subset.indices]
        if isinstance(p, ViTSemiSupProtocol):
            setup = vit_semisup_setup(p, ck, backbone, len(train_items), ctx.seed)
        else:
            setup = self._setup(p, ck, backbone)
        init_info = setup.init_info
        net = ClassifierNet(backbone, setup.head)
        train_ds = ImageList([q for q, _ in train_items], [y for _, y in train_items], setup.train_transform)
        val_ds = ImageList([q for q, _ in val], [y for _, y in val], setup.val_transform)
        epoch_order = setup.epoch_order
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
        run_key = {"task": self.name, "protocol": p.name, "params": p.params(), "seed": ctx.seed,
                   "checkpoint": checkpoint_identity(ck, ctx.seed), "subset": subset.sha256,
                   "val": _list_hash(val, root), "classifier_init": init_info["rule_applied"]}
        _record_images(ctx, "imagenet/train-subset", [train[i] for i in sorted(set(subset.indices))], root)
        _record_images(ctx, "imagenet/val", val, root)
        trainer = HitTrainer(net, setup.groups, train_ds, val_ds, setup.config, ctx, run_key=run_key,
                             resume=bool(ctx.option("resume", False)), desc=self.name,
                             log_dir=Path(ctx.work_dir) / "tensorboard" if ctx.work_dir else None,
                             epoch_order=epoch_order, lr_schedule=setup.lr_schedule,
                             batch_transform=setup.batch_transform)
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
        if setup.details:
            details["recipe"] = setup.details
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

    def _setup(self, p: SemiSupProtocol, ck: LoadedCheckpoint, backbone: nn.Module) -> FinetuneSetup:
        """The ResNet recipes (``@mopro``, ``@mopro-as-released``, ``@swav``): SGD, step schedule, two groups."""
        head, init_info = self._head(p, ck)
        cfg = TrainConfig(epochs=p.epochs, batch_size=p.batch_size, milestones=tuple(p.milestones), gamma=p.gamma,
                          momentum=p.momentum, nesterov=p.nesterov, eval_every=p.eval_every, sync_bn=p.sync_bn,
                          label_smoothing=p.label_smoothing, precision=p.precision, bn_batch=p.bn_batch)
        groups = [ParamGroup("backbone", list(backbone.parameters()), p.lr_backbone, p.weight_decay),
                  ParamGroup("head", list(head.parameters()), p.lr_head, p.weight_decay)]
        return FinetuneSetup(head, init_info, _train_transform(p, ck),
                             eval_transform(p.image_size, p.resize, ck.preprocess), cfg, groups)

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
    protocols = semisup_protocols(0.01)


class ImageNet10Pct(_ImageNetSemiSup):
    name = "imagenet_10pct"
    description = "ImageNet 10% labels: finetune all layers, top-1/top-5 on the full val set"
    fraction = 0.1
    protocols = semisup_protocols(0.1)


# ------------------------------------------------------------------------------------------------------- linear probe
class ImageNetLinear(Task):
    name = "imagenet_linear"
    splits = ("train", "val")
    description = "linear classifier on the frozen backbone's pooled features, ImageNet val top-1/top-5"
    data_kind = "imagenet"
    protocols = LINEAR_PROTOCOLS
    default_protocol = "moco"
    metrics = TRAIN_METRICS
    options = (
        Option("save_head", "imagenet_linear: write the trained head here", one_task=True, one_checkpoint=True),
        Option("resume", "continue an interrupted run from --work-dir", flag=True),
    )

    def run(self, model: LoadedCheckpoint, data_root: Path, protocol: Protocol, ctx: RunContext) -> TaskOutput:
        check_sizes(protocol)
        check_report(protocol)
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
            lr_schedule = linear_schedule(p)
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
        hits = linear_hits(fit.weight, fit.bias, xva, [y for _, y in val], ctx.device)
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
    splits = ("val",)
    description = "top-1/top-5 of the checkpoint's own 1000-way classifier (or --head) on ImageNet val"
    data_kind = "imagenet"
    protocols = IMAGENET_VAL_PROTOCOLS
    default_protocol = "mopro"
    metrics = ("top1", "top5")
    needs_classifier = True
    options = (
        Option("head", "robustness/ImageNet: a 1000-way head file written by imagenet_linear", one_task=True,
               one_checkpoint=True),
    )

    def run(self, model: LoadedCheckpoint, data_root: Path, protocol: Protocol, ctx: RunContext) -> TaskOutput:
        p: ValProtocol = protocol  # type: ignore[assignment]
        check_sizes(p)
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
    splits = ("val",)
    description = "top-1/top-5 of the checkpoint's own WebVision classifier on WebVision val (1000 or 5000 classes)"
    data_kind = "webvision"
    protocols = WEBVISION_VAL_PROTOCOLS
    default_protocol = "mopro"
    metrics = ("top1", "top5")
    needs_classifier = True
    options = ()

    def run(self, model: LoadedCheckpoint, data_root: Path, protocol: Protocol, ctx: RunContext) -> TaskOutput:
        from mopro_bench.data.webvision import WebVision

        p: ValProtocol = protocol  # type: ignore[assignment]
        check_sizes(p)
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
