"""``mopro-bench retrain``: classifier retraining (cRT, Kang et al. ICLR 2020) on noise-cleaned labels.

The pretrained query encoder's trunk is frozen (eval mode: BatchNorm statistics frozen too, no gradients); only the
classifier is trained, starting from the checkpoint's classifier, on the cleaned train list (``--annotation``,
written by ``noise-clean``) with class-balanced sampling: every epoch draws as many samples as the list holds,
built by the reference's square-root class-balanced replication (``sampling="sqrt"``, see :func:`sqrt_replication`),
or by drawing a class uniformly and then one of its images (``sampling="class"``). Augmentation: RandomResizedCrop(scale)
+ flip. The result is written in the pretraining checkpoint format (classifier replaced, everything else kept), so
``eval``, ``inspect`` and ``export`` read it as is.

The paper gives no cRT hyper-parameters, but the authors' code does; the defaults are theirs (MoPro
``classifier_retrain.py`` argparse: ``--epochs 15`` with the loop ``range(epochs + 1)`` = 16 epochs, ``--lr 0.01``,
``--schedule 5 10`` = x0.1 at epochs 5 and 10, ``--momentum 0.9``, ``--wd 0``, ``--batch-size 256``;
``DataLoader/dataloader_balance.py``: ``crop_size=0.2`` for RandomResizedCrop + flip, and ``repeat()`` called at the
start of every epoch for the sqrt-balanced list). Every setting is in the written checkpoint.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from mopro_bench.backbones import Preprocess
from mopro_bench.config import apply_overrides, to_dict
from mopro_bench.data.common import train_transform
from mopro_bench.engine.distributed import all_reduce_mean_grads, cleanup_distributed, init_distributed
from mopro_bench.engine.loop import DivergenceGuard, EpochCallback, LRSchedule, Progress, TrainerBase
from mopro_bench.engine.precision import autocast
from mopro_bench.engine.schedule import epoch_lr
from mopro_bench.errors import BenchError
from mopro_bench.io import atomic_torch_save, atomic_write_json, sha256_file
from mopro_bench.pretrain.checkpoint import FILE_SHA256
from mopro_bench.pretrain.config import invalid_setting
from mopro_bench.pretrain.data import derive_seed
from mopro_bench.pretrain.noise_clean import load_model

SAMPLINGS = ("sqrt", "class")
CRT_SCHEDULES = ("step", "cos", "const")


@dataclass
class CRTConfig:
    """Defaults = MoPro ``classifier_retrain.py`` / ``DataLoader/dataloader_balance.py`` (module doc)."""

    epochs: int = 16  # --epochs 15, trained for range(epochs + 1)
    lr: float = 0.01
    schedule: str = "step"  # "step": lr x gamma at each milestone (the reference); "cos"; "const"
    milestones: tuple[int, ...] = (5, 10)  # --schedule 5 10
    gamma: float = 0.1  # "drop lr by 10x"
    momentum: float = 0.9
    weight_decay: float = 0.0  # --wd default 0
    batch_size: int = 256  # global; drop_last like the reference's loader
    sampling: str = "sqrt"  # "sqrt": the reference's sqrt class-balanced replication; "class": class-uniform draw
    crop_scale: tuple[float, float] = (0.2, 1.0)  # crop_size=0.2
    image_size: int = 0  # 0 = the pretraining run's
    seed: int = 0
    eval_every: int = 1


def validate_crt(c: CRTConfig) -> CRTConfig:
    bad = invalid_setting

    if c.schedule not in CRT_SCHEDULES:
        raise bad("schedule", c.schedule, "use step (the reference), cos or const")
    if c.sampling not in SAMPLINGS:
        raise bad("sampling", c.sampling, "use sqrt (the reference's square-root class balance) or class")
    for name, v in (("lr", c.lr), ("momentum", c.momentum), ("weight_decay", c.weight_decay), ("gamma", c.gamma)):
        if not math.isfinite(v):
            raise bad(name, v, "use a finite number")
    if c.lr <= 0:
        raise bad("lr", c.lr, "use a positive learning rate, e.g. 0.01 (the reference's)")
    if not 0 <= c.momentum < 1:
        raise bad("momentum", c.momentum, "use a value in [0, 1), e.g. 0.9")
    if c.weight_decay < 0:
        raise bad("weight_decay", c.weight_decay, "use a value >= 0")
    if not 0 < c.gamma <= 1:
        raise bad("gamma", c.gamma, "use a decay factor in (0, 1], e.g. 0.1")
    for name, v in (("epochs", c.epochs), ("batch_size", c.batch_size)):
        if v < 1:
            raise bad(name, v, "use a positive integer")
    for name, v in (("image_size", c.image_size), ("seed", c.seed), ("eval_every", c.eval_every)):
        if v < 0:
            raise bad(name, v, "use an integer >= 0")
    if 0 < c.image_size < 32:
        raise bad("image_size", c.image_size, "use 0 (the pretraining run's) or at least 32")
    if any(m < 1 for m in c.milestones) or list(c.milestones) != sorted(c.milestones):
        raise bad("milestones", list(c.milestones), "use increasing epochs >= 1, e.g. [5,10]")
    lo, hi = c.crop_scale
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi <= 1):
        raise bad("crop_scale", list(c.crop_scale), "use [low, high] with 0 < low <= high <= 1")
    return c


def crt_lr(c: CRTConfig, epoch: int) -> float:
    return epoch_lr(c.schedule, c.lr, epoch, epochs=c.epochs, milestones=c.milestones, gamma=c.gamma)


@dataclass
class CRTResult:
    checkpoint: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def sqrt_replication(labels: list[int]) -> dict[int, int]:
    """Copies of each image of class c in the reference's square-root balanced list: ``floor(10 * sqrt(n_max / n_c))``.

    The reference (``dataloader_balance.py``, ``repeat``) computes ``p_c = n_c^-0.5 / sum``, then ``int(10 * p_c /
    min p)``; ``p_c / min p = sqrt(n_max / n_c)``. So a class's share of the replicated list is proportional to
    ``n_c * floor(10 sqrt(n_max / n_c))`` ~ ``sqrt(n_c)``: the rarest class is sampled most per image, the
    largest least. (Written here without the intermediate probabilities; a tiny epsilon keeps exact squares exact.)"""
    counts: dict[int, int] = {}
    for y in labels:
        counts[int(y)] = counts.get(int(y), 0) + 1
    n_max = max(counts.values())
    return {c: int(math.floor(10 * math.sqrt(n_max / n) + 1e-9)) for c, n in sorted(counts.items())}


def sqrt_balanced_order(labels: list[int], seed: int, epoch: int) -> torch.Tensor:
    """One epoch of the reference's cRT list: every image replicated :func:`sqrt_replication` times, shuffled
    (seeded by ``(seed, epoch)``), truncated to ``len(labels)`` -- indices into ``labels``."""
    copies = sqrt_replication(labels)
    y = torch.tensor([int(v) for v in labels])
    reps = torch.tensor([copies[int(v)] for v in labels])
    pool = torch.repeat_interleave(torch.arange(len(y)), reps)
    g = torch.Generator().manual_seed(derive_seed("crt-sqrt", seed, epoch))
    return pool[torch.randperm(len(pool), generator=g)[:len(labels)]]


def balanced_draw(labels: list[int], n: int, seed: int, epoch: int) -> torch.Tensor:
    """``n`` indices: a uniform class, then a uniform image of that class (with replacement)."""
    y = torch.tensor(labels)
    classes, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse].double()  # P(i) = 1 / (n_classes * n_class(i))
    g = torch.Generator().manual_seed(derive_seed("crt", seed, epoch))
    return torch.multinomial(weights, n, replacement=True, generator=g)


class _CRTLoop(TrainerBase):
    """cRT on the engine's loop: the epoch's data is the balanced order (seeded by ``(seed, epoch)``), the step trains
    the classifier on the frozen trunk's features; LR, divergence guard, progress bar and the epoch record are hooks."""

    def __init__(self, enc, clf, opt, cfg_c: CRTConfig, paths, labels, tf, info, dev: torch.device, workers: int, amp):
        super().__init__()
        self.enc, self.clf, self.opt, self.cfg_c = enc, clf, opt, cfg_c
        self.paths, self.labels, self.tf, self.info, self.dev, self.workers, self.amp = paths, labels, tf, info, dev, workers, amp
        self.local = cfg_c.batch_size // info.world_size
        self.history: list[dict[str, Any]] = []
        self.metrics: dict[str, Any] = {}
        self.bar: Progress | None = None

    def epoch_batches(self):
        c, info, epoch = self.cfg_c, self.info, self.epoch
        self.t0 = time.time()
        if c.sampling == "sqrt":
            order = sqrt_balanced_order(self.labels, c.seed, epoch).tolist()
        else:
            order = balanced_draw(self.labels, len(self.labels), c.seed, epoch).tolist()
        self.n_batches = len(order) // c.batch_size
        mine = [order[b * c.batch_size + info.rank * self.local + j] for b in range(self.n_batches) for j in range(self.local)]
        torch.manual_seed(derive_seed("crt-aug", c.seed, epoch, info.rank))
        loader = DataLoader(_Indexed(self.paths, self.labels, self.tf, mine), batch_size=self.local, num_workers=self.workers,
                            drop_last=True, pin_memory=self.dev.type == "cuda")
        self.tot, self.n = 0.0, 0
        return self.bar.wrap(loader) if self.bar is not None else loader

    def run_step(self, batch) -> torch.Tensor:
        x, y = batch
        x, y = x.to(self.dev, non_blocking=True), y.to(self.dev, non_blocking=True)
        with torch.no_grad(), autocast(self.dev, self.amp):
            h = self.enc.trunk(x)
        loss = F.cross_entropy(self.clf(h.float()), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        all_reduce_mean_grads(self.clf.parameters(), self.info.world_size)
        if not torch.isfinite(loss.detach()).all():
            return loss.detach()  # the divergence guard stops the run before this step changes the classifier
        self.opt.step()
        self.tot += float(loss.detach()) * len(y)
        self.n += len(y)
        return loss.detach()


class _Indexed(Dataset):
    def __init__(self, paths, labels, transform, order: list[int]):
        self.paths, self.labels, self.transform, self.order = paths, labels, transform, order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, j: int):
        from mopro_bench.data.common import load_rgb

        i = self.order[j]
        return self.transform(load_rgb(self.paths[i])), self.labels[i]


def retrain(data_root: str | Path, ckpt: str | Path, annotation: str | Path, out: str | Path, *,
            overrides: dict[str, Any] | None = None, device: str = "auto", workers: int = 0,
            progress: bool = True) -> CRTResult:
    from mopro_bench.pretrain.checkpoint import check_out_dir
    from mopro_bench.pretrain.trainer import evaluate_classifier, load_train_set

    info, dev = init_distributed(device)
    try:
        cfg_c = validate_crt(apply_overrides(CRTConfig(), overrides or {}))
        if info.is_main:
            check_out_dir(out)
        model, cfg, obj = load_model(ckpt)
        image_size = cfg_c.image_size or cfg.aug.image_size
        ds, samples = load_train_set(data_root, cfg, annotation=str(annotation))
        if cfg_c.batch_size % info.world_size:
            raise BenchError(f"batch_size={cfg_c.batch_size} is not divisible by {info.world_size} processes",
                             "use a multiple of the process count")
        if len(samples) < cfg_c.batch_size:  # drop_last (as the reference): zero steps would be a fake result
            fit = len(samples) // info.world_size * info.world_size
            raise BenchError(f"the train list has {len(samples)} images, fewer than one batch ({cfg_c.batch_size}): cRT "
                             "would train nothing",
                             (f"use --set batch_size={fit} (or smaller) " if fit else "use ") + "or a larger train list")
        paths = [ds.path(r) for r, _ in samples]
        labels = [y for _, y in samples]
        pre = Preprocess(mean=tuple(cfg.aug.mean), std=tuple(cfg.aug.std))
        tf = train_transform(image_size, scale=tuple(cfg_c.crop_scale), pre=pre)
        val = [(ds.path(r), y) for r, y in ds.val_samples() if y < cfg.model.num_class]
        model.to(dev)
        enc = model.encoder_q
        enc.eval()
        for p in enc.parameters():
            p.requires_grad_(False)
        clf = enc.classifier
        for p in clf.parameters():
            p.requires_grad_(True)
        opt = torch.optim.SGD(clf.parameters(), lr=cfg_c.lr, momentum=cfg_c.momentum, weight_decay=cfg_c.weight_decay)
        # the pretraining run's precision (fp32 = the reference; auto/bf16 = bf16 autocast on CUDA)
        amp = torch.bfloat16 if dev.type == "cuda" and cfg.run.precision in ("auto", "bf16") else None
        loop = _CRTLoop(enc, clf, opt, cfg_c, paths, labels, tf, info, dev, workers, amp)
        bar = Progress(lambda epoch: f"cRT epoch {epoch}", enabled=progress and info.is_main)
        loop.bar = bar

        def diverged(tr: _CRTLoop) -> BenchError:
            return BenchError(f"cRT diverged: non-finite loss at epoch {tr.epoch} (lr {tr.lr:.4g}); nothing was written",
                              "lower --set lr (the reference's is 0.01) or check the checkpoint and the data")

        def end_epoch(tr: _CRTLoop) -> None:
            rec: dict[str, Any] = {"epoch": tr.epoch, "lr": tr.lr, "loss": tr.tot / max(1, tr.n), "steps": tr.n_batches,
                                   "seconds": round(time.time() - tr.t0, 3)}
            if val and cfg_c.eval_every and ((tr.epoch + 1) % cfg_c.eval_every == 0 or tr.epoch == cfg_c.epochs - 1):
                r = evaluate_classifier(model, val, image_size, pre, dev, 256, workers, info.world_size, info.rank, amp)
                tr.metrics = {"webvision_val/top1": r["top1"], "webvision_val/top5": r["top5"]}
                rec.update(tr.metrics)
            tr.history.append(rec)
            if info.is_main:
                print(f"cRT epoch {tr.epoch}  loss {rec['loss']:.4f}  lr {tr.lr:.4g}" +
                      "".join(f"  {k} {v:.2f}" for k, v in rec.items() if "/" in k), flush=True)

        loop.register_hooks([LRSchedule(opt, lambda epoch: crt_lr(cfg_c, epoch)), bar, DivergenceGuard(diverged),
                             EpochCallback(end_epoch)])
        loop.train(0, cfg_c.epochs)
        history, metrics = loop.history, loop.metrics
        out = Path(out).expanduser()
        path = out / "checkpoint_crt.pth.tar"
        if info.is_main:
            sd = dict(obj["state_dict"])
            sd["encoder_q.classifier.weight"] = clf.weight.detach().cpu().clone()
            sd["encoder_q.classifier.bias"] = clf.bias.detach().cpu().clone()
            new = {k: v for k, v in obj.items() if k != FILE_SHA256}  # the digest is of the source file, not this one
            new["state_dict"] = sd
            meta = dict(obj["mopro_bench"])
            meta["crt"] = {"config": to_dict(cfg_c), "annotation": str(annotation), "annotation_sha256": sha256_file(annotation),
                           "source_checkpoint": str(ckpt), "source_sha256": obj[FILE_SHA256], "images": len(samples),
                           "metrics": metrics}
            new["mopro_bench"] = meta
            atomic_torch_save(path, new)
            atomic_write_json(out / "crt_log.json", history)
        if info.world_size > 1:
            dist.barrier()
        return CRTResult(path, metrics, history)
    finally:
        cleanup_distributed()
