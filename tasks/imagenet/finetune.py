"""A reusable supervised training loop (finetuning, linear probes) and a linear-head solver on cached features.

:class:`SupervisedTrainer` trains ``model(x) -> logits`` with SGD and a step schedule, one code path for CPU, one GPU
and ``torchrun`` (DDP, ``env://``):

* the batch size is global: each of ``W`` ranks takes ``batch_size / W`` images, the learning rate is unchanged;
* numerical precision from the config (``precision``): ``fp32`` (the published protocols' setting: no autocast, and
  TF32 switched off for convolutions and matmuls on CUDA while training and evaluating) or ``bf16`` (autocast on the
  run's device); channels_last on CUDA either way;
* BatchNorm batch from the config (``bn_batch``): each rank's batch is split into groups of ``bn_batch`` images
  (strided: group ``j`` holds items ``j, j+G, j+2G, ...``) that go through the network separately, so BatchNorm
  normalises over ``bn_batch`` images as on ``batch_size / bn_batch`` GPUs without SyncBN; only group 0 updates the
  running statistics (DDP broadcasts rank 0's buffers) and the loss is the mean of the groups' mean losses (DDP
  averages the ranks' gradients);
* ``epoch_order`` (optional): a function ``epoch -> list of dataset indices`` that replaces the seeded shuffle (the
  "as released" semi-supervised protocol uses it to reproduce per-rank subsets, the ViT recipe for repeated
  augmentation and dropped last batches);
* the optimiser from the config (``optimizer``): SGD (momentum, nesterov) or AdamW (``betas``, ``eps``), weight decay
  per parameter group; the LR per epoch from ``lr_schedule(base_lr, epoch)`` (default: the step schedule of
  ``milestones``/``gamma``); ``batch_transform(x, y) -> (x, y)`` (optional) runs on every training batch on the device
  (mixup/cutmix: ``y`` may become soft targets ``[N, C]``, which the cross-entropy accepts);
* every epoch's data order and augmentation randomness is a function of ``(seed, epoch, rank)`` only, so a run
  resumed from its last completed epoch ends with exactly the weights of an uninterrupted run;
* after every ``save_every`` epochs rank 0 writes ``<work_dir>/train_state.pt`` atomically (model, optimizer,
  history and a hash of everything that defines the run); ``resume=True`` continues from it, a different run in the
  same directory is refused, and an unfinished run is never silently overwritten;
* evaluation (top-1/top-5) at the end and every ``eval_every`` epochs when asked (0 = only at the end);
* progress bars (rank 0) and TensorBoard scalars under ``log_dir`` when given.

:func:`fit_linear_on_features` trains a linear softmax classifier on precomputed features (minutes on a GPU for
ImageNet-size caches) and returns its weights folded back into the raw feature space.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from mopro_bench.engine.distributed import env_is_distributed, init_distributed, is_main, rank_world
from mopro_bench.engine.loop import EpochCallback, LRSchedule, TrainerBase
from mopro_bench.engine.precision import check_precision, exact_fp32
from mopro_bench.engine.precision import precision_autocast as _autocast
from mopro_bench.engine.schedule import cosine_lr, set_lr, step_lr
from mopro_bench.engine.seeding import epoch_seed, seed_everything
from mopro_bench.engine.state import save_state
from mopro_bench.errors import BenchError
from mopro_bench.io import sha256_json
from mopro_bench.metrics.classification import TopKMeter, topk_accuracy
from mopro_bench.registry import RunContext

STATE_FILE = "train_state.pt"
STATE_FORMAT = 1


@dataclass(frozen=True)
class TrainConfig:
    """Schedule and optimiser constants of one supervised run (filled from a protocol)."""

    epochs: int
    batch_size: int  # global, over all ranks
    milestones: tuple[int, ...] = ()  # epochs (0-based) from which the lr is multiplied by gamma once more
    gamma: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    eval_every: int = 0  # evaluate every N epochs; 0 = only after the last epoch
    save_every: int = 1  # write the resumable state every N epochs (and always after the last)
    sync_bn: bool = False  # SyncBatchNorm across ranks (matters only with >1 GPU)
    label_smoothing: float = 0.0
    precision: str = "fp32"  # "fp32" (no autocast, no TF32) | "bf16" (autocast)
    bn_batch: int = 0  # images per BatchNorm group in training; 0 = the whole per-rank batch
    optimizer: str = "sgd"  # "sgd" (momentum, nesterov) | "adamw" (betas, eps)
    betas: tuple[float, float] = (0.9, 0.999)  # adamw only
    eps: float = 1e-8  # adamw only


OPTIMIZERS = ("sgd", "adamw")


@dataclass
class ParamGroup:
    name: str
    params: list[nn.Parameter]
    lr: float
    weight_decay: float = 0.0


@dataclass
class FitResult:
    history: list[dict[str, Any]]  # one entry per epoch: loss, lr per group, seconds, and top1/top5 when evaluated
    final: dict[str, Any]  # {"epoch", "top1", "top5"} after the last epoch
    best: dict[str, Any]  # the evaluated epoch with the highest top-1 (selected on the evaluation set)
    evaluated_epochs: list[int]
    resumed_from_epoch: int | None
    world_size: int
    per_rank_batch: int
    amp: str | None
    seconds: float
    skipped_batches: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class FinetuneSetup:
    """What a fine-tuning recipe sets in a run: the classifier and how it was initialised, the transforms, the loop's
    config and parameter groups, and the optional per-epoch LR (default: the config's step schedule), data order
    (default: a seeded shuffle) and batch transform (mixup); ``details`` goes to the record's ``details.recipe``."""

    head: nn.Module
    init_info: dict[str, Any]
    train_transform: Any
    val_transform: Any
    config: TrainConfig
    groups: list[ParamGroup]
    lr_schedule: Callable[[float, int], float] | None = None
    epoch_order: Callable[[int], Sequence[int]] | None = None
    batch_transform: Any = None
    details: dict[str, Any] = field(default_factory=dict)


def repeated_aug_order(n: int, epoch: int, seed: int, *, repeats: int, ranks: int, per_rank_batch: int,
                       round_to: int) -> list[int]:
    """One epoch of DeiT's repeated-augmentation sampler (``RASampler``) on ``ranks`` processes, with each process's
    loader dropping its last incomplete batch, laid out as global batches.

    Every index of a seeded permutation is repeated ``repeats`` times (``[a, a, a, b, b, b, ...]``), the list is padded
    from its start to a multiple of ``ranks`` and dealt round-robin (process ``r`` takes items ``r, r + ranks, ...``);
    each process keeps its first ``(n // round_to * round_to) // ranks`` items and makes full batches of
    ``per_rank_batch``. Global step ``b`` trains on the ``b``-th batch of every process: the returned list is those
    global batches one after another (process 0's part first), so consecutive chunks of ``ranks * per_rank_batch``
    items are the global batches, however many processes this run has. ``repeats=1`` is a plain seeded shuffle with
    the same truncation."""
    if n == 0:
        return []
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch))).tolist()
    rep = [i for i in perm for _ in range(repeats)]
    per_rank = int(math.ceil(len(rep) / ranks))
    rep += rep[:per_rank * ranks - len(rep)]
    keep = (n // round_to * round_to) // ranks
    shards = [rep[r::ranks][:keep] for r in range(ranks)]
    steps = keep // per_rank_batch
    return [i for b in range(steps) for r in range(ranks) for i in shards[r][b * per_rank_batch:(b + 1) * per_rank_batch]]


def bn_groups(per_rank: int, bn_batch: int) -> int:
    """Number of BatchNorm groups a per-rank batch of ``per_rank`` images is split into (1 = no split)."""
    if bn_batch <= 0 or bn_batch >= per_rank:
        return 1
    if per_rank % bn_batch:
        raise BenchError(f"the per-process batch {per_rank} is not a multiple of bn_batch={bn_batch}",
                         f"use a number of processes that divides the batch into groups of {bn_batch}, or --set bn_batch=...")
    return per_rank // bn_batch


def _bn_modules(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def grouped_forward_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, groups: int, ce: nn.Module,
                         amp) -> torch.Tensor | None:
    """Mean over BatchNorm groups (strided split of the batch) of each group's mean loss; only group 0 moves the
    BatchNorm running statistics. Groups with fewer than 2 images are left out (BatchNorm cannot normalise one image
    whose last feature map is 1x1); None when no group is left."""
    if groups == 1:
        with amp:
            logits = model(x)
        return ce(logits.float(), y)
    bns = _bn_modules(model)
    momenta = [m.momentum for m in bns]
    losses = []
    try:
        for j in range(groups):
            xs, ys = x[j::groups], y[j::groups]
            if xs.shape[0] < 2:
                continue
            if j > 0:
                for m in bns:
                    m.momentum = 0.0  # running stats stay as group 0 left them (rank 0's buffers win under DDP)
            with amp:
                logits = model(xs)
            losses.append(ce(logits.float(), ys))
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
    return torch.stack(losses).mean() if losses else None


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@torch.no_grad()
def evaluate_model(model: nn.Module, dataset: Dataset, device: torch.device, *, batch_size: int = 256, workers: int = 0,
                   progress: bool = True, desc: str = "eval", ks: Sequence[int] = (1, 5),
                   precision: str = "fp32") -> dict[str, float]:
    """Top-k accuracy (percent) of ``model`` (eval mode) on ``dataset`` of ``(x, label, index)``, sharded over ranks."""
    from tqdm.auto import tqdm

    model = _unwrap(model)
    was_training = model.training
    model.eval()
    rank, world = rank_world()
    shard = Subset(dataset, list(range(rank, len(dataset), world)))
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda")
    meter = TopKMeter(ks)
    for x, y, _ in tqdm(loader, desc=desc, disable=not (progress and rank == 0), leave=False):
        x = x.to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.to(memory_format=torch.channels_last)
        with _autocast(device, precision), exact_fp32(device, precision):
            logits = model(x)
        meter.update(logits.float(), y.to(device))
    meter.reduce(device)
    model.train(was_training)
    out = meter.result()
    out["n"] = meter.n
    return out


class _FinetuneLoop(TrainerBase):
    """One supervised run on the engine's loop: the epoch's data is a function of ``(seed, epoch, rank)`` (or
    ``epoch_order``), the step is :func:`grouped_forward_loss` + SGD; the LR per parameter group and the end of an
    epoch (:meth:`SupervisedTrainer._end_epoch`) are hooks."""

    def __init__(self, owner: SupervisedTrainer, train_model: nn.Module, optimizer: torch.optim.Optimizer,
                 device: torch.device, groups: int, ce: nn.Module, per_rank: int, rank: int, world: int):
        super().__init__()
        self.o, self.train_model, self.optimizer, self.device = owner, train_model, optimizer, device
        self.groups, self.ce = groups, ce
        self.per_rank, self.rank, self.world = per_rank, rank, world
        self.amp = _autocast(device, owner.cfg.precision)
        self.skipped = 0
        self.writer = None
        self.history: list[dict[str, Any]] = []

    def epoch_batches(self):
        from tqdm.auto import tqdm

        o, epoch, rank, world = self.o, self.epoch, self.rank, self.world
        self.t0 = time.time()
        n = len(o.train_set)
        seed_everything(epoch_seed(o.ctx.seed, epoch, rank))
        if o.epoch_order is not None:
            order = [int(i) for i in o.epoch_order(epoch)]
            if any(i < 0 or i >= n for i in order):
                raise ValueError("epoch_order returned an index outside the training set")
            shard = order[:len(order) - len(order) % world][rank::world]
        else:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(o.ctx.seed, epoch)))
            shard = perm[:n - n % world][rank::world].tolist()
        loader = DataLoader(Subset(o.train_set, shard), batch_size=self.per_rank, shuffle=False,
                            num_workers=o.ctx.workers, pin_memory=self.device.type == "cuda", drop_last=False)
        self.train_model.train()
        for m in o.frozen:
            m.eval()
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.count = 0
        self.bar = tqdm(loader, desc=f"{o.desc} {epoch + 1}/{o.cfg.epochs}", disable=not (o.ctx.progress and rank == 0),
                        leave=False)
        return self.bar

    def run_step(self, batch) -> None:
        x, y, _ = batch
        if x.shape[0] < 2:  # BatchNorm in train mode cannot normalise one sample; same on every rank
            self.skipped += 1
            return None
        device = self.device
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.to(memory_format=torch.channels_last)
        if self.o.batch_transform is not None:
            x, y = self.o.batch_transform(x, y)
        loss = grouped_forward_loss(self.train_model, x, y, self.groups, self.ce, self.amp)
        if loss is None:  # every BatchNorm group of this (last, small) batch had a single image
            self.skipped += 1
            return None
        opt = self.optimizer
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        self.loss_sum += loss.detach().double() * x.shape[0]
        self.count += x.shape[0]
        if self.rank == 0 and self.o.ctx.progress and self.count % (20 * self.per_rank) < x.shape[0]:
            self.bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)  # a GPU sync: only every 20 steps
        return None  # finetuning checks the epoch's mean loss (SupervisedTrainer._end_epoch), not every step


class SupervisedTrainer:
    """Train ``model`` (images -> logits) with SGD on ``train_set``; evaluate on ``eval_set``. See the module doc.

    ``frozen`` modules stay in eval mode (BatchNorm statistics frozen) and are not saved per epoch (their parameters
    must not require gradients). ``run_key`` is a JSON-able description of everything that defines the run (protocol,
    checkpoint, subset, seed); its hash guards resume. ``on_epoch_end(epoch_done)`` is called after each epoch has
    been saved (tests use it to interrupt a run).
    """

    def __init__(self, model: nn.Module, groups: Sequence[ParamGroup], train_set: Dataset, eval_set: Dataset | None,
                 cfg: TrainConfig, ctx: RunContext, *, run_key: dict[str, Any], frozen: Sequence[nn.Module] = (),
                 resume: bool = False, desc: str = "train", log_dir: str | Path | None = None,
                 on_epoch_end: Callable[[int], None] | None = None, eval_batch_size: int | None = None,
                 epoch_order: Callable[[int], Sequence[int]] | None = None,
                 lr_schedule: Callable[[float, int], float] | None = None,
                 batch_transform: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None):
        if cfg.epochs < 0:
            raise BenchError(f"epochs={cfg.epochs} is negative", "use --set epochs=N with N >= 0")
        if cfg.batch_size < 1:
            raise BenchError(f"batch_size={cfg.batch_size} is not positive", "use --set batch_size=N with N >= 1")
        if any(m < 0 for m in cfg.milestones) or list(cfg.milestones) != sorted(cfg.milestones):
            raise BenchError(f"milestones={list(cfg.milestones)} must be increasing epochs >= 0",
                             "use e.g. --set milestones=[20,30]")
        self.model, self.groups, self.cfg, self.ctx = model, list(groups), cfg, ctx
        self.train_set, self.eval_set = train_set, eval_set
        self.frozen = list(frozen)
        self.resume, self.desc, self.on_epoch_end = resume, desc, on_epoch_end
        self.log_dir = Path(log_dir) if log_dir else None
        self.key = sha256_json(run_key)
        self.run_key = run_key
        self.eval_batch_size = eval_batch_size
        self.epoch_order = epoch_order
        self.lr_schedule = lr_schedule
        self.batch_transform = batch_transform
        if cfg.optimizer not in OPTIMIZERS:
            raise BenchError(f"optimizer={cfg.optimizer!r} is unknown", f"use one of: {', '.join(OPTIMIZERS)}")
        check_precision(cfg.precision)
        if cfg.bn_batch < 0:
            raise BenchError(f"bn_batch={cfg.bn_batch} is negative", "use --set bn_batch=N (0 = the whole per-process batch)")
        self.state_path = Path(ctx.work_dir) / STATE_FILE if ctx.work_dir else None
        for m in self.frozen:
            if any(p.requires_grad for p in m.parameters()):
                raise ValueError("frozen modules must not have parameters that require gradients")

    # ---- state -------------------------------------------------------------------------------------------
    def _frozen_keys(self) -> set[str]:
        ids = {id(t) for m in self.frozen for t in (*m.parameters(), *m.buffers())}
        return {k for k, v in self.model.state_dict(keep_vars=True).items() if id(v) in ids}

    def _saved_state_dict(self) -> dict[str, torch.Tensor]:
        skip = self._frozen_keys()
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items() if k not in skip}

    def _read_state(self) -> dict[str, Any] | None:
        if self.state_path is None or not self.state_path.is_file():
            return None
        try:
            return torch.load(self.state_path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise BenchError(f"{self.state_path} is unreadable ({type(e).__name__})",
                             "delete it to start over, or pass another --work-dir") from None

    def _check_state(self, state: dict[str, Any]) -> None:
        done, total = state.get("epoch"), state.get("epochs")
        if state.get("format") != STATE_FORMAT or state.get("key") != self.key:
            raise BenchError(
                f"{self.state_path} belongs to a different run (other protocol constants, checkpoint, data or seed)",
                f"pass another --work-dir, or delete {self.state_path.parent} to start over",
            )
        if not self.resume and not state.get("finished"):
            raise BenchError(
                f"{self.state_path.parent} holds an interrupted run ({done}/{total} epochs done)",
                f"add --resume to continue it, or delete {self.state_path.parent} (or pass another --work-dir) to start over",
            )

    def _write_state(self, optimizer: torch.optim.Optimizer, epoch: int, history: list[dict], finished: bool) -> None:
        if self.state_path is None or not is_main():
            return
        save_state(self.state_path, {
            "format": STATE_FORMAT, "key": self.key, "run": sha256_json(self.run_key), "epoch": epoch,
            "epochs": self.cfg.epochs, "finished": finished, "model": self._saved_state_dict(),
            "optimizer": optimizer.state_dict(), "history": history,
        })

    def _load_model_state(self, sd: dict[str, torch.Tensor]) -> None:
        expected = set(self.model.state_dict()) - self._frozen_keys()
        if set(sd) != expected:
            missing, extra = sorted(expected - set(sd)), sorted(set(sd) - expected)
            raise BenchError(f"{self.state_path} does not match the model (missing {missing[:3]}, unexpected {extra[:3]})",
                             f"delete {self.state_path.parent} to start over")
        self.model.load_state_dict(sd, strict=False)  # exactly the non-frozen keys, checked above

    # ---- loop --------------------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        if env_is_distributed():
            _, device = init_distributed(self.ctx.device.type)
            return device
        return self.ctx.device

    def fit(self) -> FitResult:
        device = self._device()
        with exact_fp32(device, self.cfg.precision):
            return self._fit(device)

    def _fit(self, device: torch.device) -> FitResult:
        t_start = time.time()
        rank, world = rank_world()
        cfg = self.cfg
        if cfg.batch_size % world:
            raise BenchError(f"batch size {cfg.batch_size} is not divisible by the {world} processes",
                             f"use a multiple of {world} (--set batch_size=...) or another number of GPUs")
        per_rank = cfg.batch_size // world
        groups = bn_groups(per_rank, cfg.bn_batch)
        if groups > 1 and world > 1:
            raise BenchError(f"bn_batch={cfg.bn_batch} needs {groups} BatchNorm groups per process with {world} processes; "
                             "grouped BatchNorm runs on one process or with one group per process",
                             f"run on one GPU or on {cfg.batch_size // cfg.bn_batch} GPUs, or --set bn_batch={per_rank}")
        if cfg.sync_bn and cfg.bn_batch not in (0, cfg.batch_size):
            raise BenchError(f"sync_bn=True normalises over the global batch, but bn_batch={cfg.bn_batch}",
                             f"--set bn_batch={cfg.batch_size} (or 0) with sync_bn, or sync_bn=False")
        model = self.model.to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        if cfg.sync_bn and world > 1:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            self.model = model
        param_groups = [{"params": g.params, "lr": g.lr, "weight_decay": g.weight_decay, "name": g.name}
                        for g in self.groups]
        if cfg.optimizer == "adamw":
            optimizer: torch.optim.Optimizer = torch.optim.AdamW(param_groups, lr=self.groups[0].lr,
                                                                 betas=tuple(cfg.betas), eps=cfg.eps)
        else:
            optimizer = torch.optim.SGD(param_groups, lr=self.groups[0].lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
        history: list[dict[str, Any]] = []
        start, resumed_from = 0, None
        state = self._read_state()
        if state is not None:
            self._check_state(state)
            if self.resume or state.get("finished"):
                if self.resume:
                    self._load_model_state(state["model"])
                    optimizer.load_state_dict(state["optimizer"])
                    history = list(state["history"])
                    start = resumed_from = int(state["epoch"])
                # a finished run without --resume starts over (a deliberate re-run)
        elif self.resume and self.state_path is None:
            raise BenchError("--resume needs a work directory", "pass --work-dir DIR (the one the interrupted run used)")
        model.to(device)
        train_model: nn.Module = model
        if world > 1:
            kw = {"device_ids": [device.index]} if device.type == "cuda" else {}
            train_model = nn.parallel.DistributedDataParallel(model, **kw)
        ce = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        loop = _FinetuneLoop(self, train_model, optimizer, device, groups, ce, per_rank, rank, world)
        loop.writer = self._writer()
        loop.history = history
        base_lrs = [g.lr for g in self.groups]
        schedule = self.lr_schedule or (lambda base, epoch: step_lr(base, epoch, cfg.milestones, cfg.gamma))
        loop.register_hooks([
            LRSchedule(optimizer, lambda epoch: [schedule(base, epoch) for base in base_lrs]),
            EpochCallback(lambda tr: self._end_epoch(tr, model, optimizer, device)),
        ])
        loop.train(start, cfg.epochs)
        writer, history, skipped = loop.writer, loop.history, loop.skipped
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
        if cfg.epochs == 0 and self.eval_set is not None:  # nothing to train: score the initial model
            history = [{"epoch": 0, "loss": None, "lr": {}, "samples": 0, "seconds": 0.0,
                        **self._evaluate(model, device, "eval")}]
        evaluated = [h for h in history if "top1" in h]
        final = {k: evaluated[-1][k] for k in ("epoch", "top1", "top5")} if evaluated else {}
        best_entry = max(evaluated, key=lambda h: (h["top1"], -h["epoch"])) if evaluated else None
        best = {k: best_entry[k] for k in ("epoch", "top1", "top5")} if best_entry else {}
        return FitResult(history=history, final=final, best=best, evaluated_epochs=[h["epoch"] for h in evaluated],
                         resumed_from_epoch=resumed_from, world_size=world, per_rank_batch=per_rank,
                         amp="bf16" if cfg.precision == "bf16" else None, seconds=time.time() - t_start,
                         skipped_batches=skipped)

    def _end_epoch(self, tr: _FinetuneLoop, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device) -> None:
        """After an epoch (a hook): the mean loss over ranks (a non-finite one stops the run), evaluation when due, the
        history entry, TensorBoard, the resumable state, and ``on_epoch_end``."""
        cfg, epoch, world = self.cfg, tr.epoch, tr.world
        lrs = {g.name: lr for g, lr in zip(self.groups, tr.lr)}
        stats = torch.stack([tr.loss_sum, torch.tensor(float(tr.count), dtype=torch.float64, device=device)])
        if world > 1:
            dist.all_reduce(stats)
        mean_loss = float(stats[0] / stats[1]) if stats[1] > 0 else float("nan")
        if tr.count and not math.isfinite(mean_loss):
            raise BenchError(f"training diverged: the loss is {mean_loss} in epoch {epoch + 1}",
                             "lower the learning rate (--set lr...=...) or check the checkpoint and the data")
        entry: dict[str, Any] = {"epoch": epoch + 1, "loss": mean_loss, "lr": lrs, "samples": int(stats[1]),
                                 "seconds": round(time.time() - tr.t0, 3)}
        last = epoch + 1 == cfg.epochs
        if self.eval_set is not None and (last or (cfg.eval_every > 0 and (epoch + 1) % cfg.eval_every == 0)):
            if world > 1:  # every rank scores its val shard with rank 0's BatchNorm statistics (as DDP's forward)
                for b in model.buffers():
                    dist.broadcast(b, 0)
            entry.update(self._evaluate(model, device, f"eval {epoch + 1}/{cfg.epochs}"))
        tr.history.append(entry)
        tr.writer = self._log(tr.writer, entry)
        if last or (cfg.save_every > 0 and (epoch + 1) % cfg.save_every == 0):
            self._write_state(optimizer, epoch + 1, tr.history, finished=last)
        if world > 1:
            dist.barrier()
        if self.on_epoch_end is not None:
            self.on_epoch_end(epoch + 1)

    def _evaluate(self, model: nn.Module, device: torch.device, desc: str) -> dict[str, float]:
        bs = self.eval_batch_size or self.ctx.batch_size or (256 if device.type == "cuda" else 64)
        r = evaluate_model(model, self.eval_set, device, batch_size=bs, workers=self.ctx.workers,
                           progress=self.ctx.progress, desc=desc, precision=self.cfg.precision)
        return {"top1": r["top1"], "top5": r["top5"], "eval_n": r["n"]}

    @staticmethod
    def _log(writer, entry: dict[str, Any]):
        """TensorBoard scalars of one epoch; a logging failure disables logging, it never ends a long run."""
        if writer is None:
            return None
        try:
            step = entry["epoch"]
            writer.add_scalar("train/loss", entry["loss"], step)
            for name, v in entry["lr"].items():
                writer.add_scalar(f"lr/{name}", v, step)
            for k in ("top1", "top5"):
                if k in entry:
                    writer.add_scalar(f"eval/{k}", entry[k], step)
            writer.flush()
            return writer
        except Exception as e:  # e.g. the log directory was removed or the disk is full
            import sys

            print(f"warning: TensorBoard logging stopped ({type(e).__name__}: {e})", file=sys.stderr)
            with contextlib.suppress(Exception):
                writer.close()
            return None

    def _writer(self):
        if self.log_dir is None or not is_main():
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # pragma: no cover - tensorboard is a dependency, but optional at run time
            return None
        return SummaryWriter(str(self.log_dir))


# ---- linear head on cached features -----------------------------------------------------------------------

@dataclass
class LinearFit:
    weight: torch.Tensor  # [C, D] in the raw feature space (normalisation folded in)
    bias: torch.Tensor  # [C]
    history: list[dict[str, Any]]
    final: dict[str, Any]
    best: dict[str, Any]
    evaluated_epochs: list[int]
    seconds: float


def fit_linear_on_features(
    x_train: np.ndarray | torch.Tensor, y_train: np.ndarray | torch.Tensor,
    x_eval: np.ndarray | torch.Tensor | None, y_eval: np.ndarray | torch.Tensor | None, *,
    num_classes: int, epochs: int, batch_size: int, lr: float, weight_decay: float = 0.0,
    optimizer: str = "adamw", momentum: float = 0.9, schedule: str = "cosine", feature_norm: str = "standardize",
    eval_every: int = 1, seed: int = 0, device: torch.device | str = "cpu", progress: bool = True,
) -> LinearFit:
    """Softmax regression ``W x + b`` on features with mini-batch AdamW/SGD, evaluated on ``(x_eval, y_eval)``.

    ``feature_norm="standardize"`` trains on per-dimension standardised features (train mean/std); the returned
    weight and bias are folded back so that they apply to raw features: ``W' = W / s``, ``b' = b - W' mu``.
    Zero-initialised, the data order seeded by ``seed``; ``schedule`` is ``cosine`` (per step, to 0) or ``constant``.
    """
    from tqdm.auto import tqdm

    t0 = time.time()
    device = torch.device(device)
    x = torch.as_tensor(x_train).float().to(device)
    y = torch.as_tensor(y_train).long().to(device)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError("x_train must be [N, D] and y_train [N]")
    if x.shape[0] == 0:
        raise BenchError("no training features", "check the train split of the dataset")
    if feature_norm == "standardize":
        mu = x.mean(0)
        sd = x.std(0, unbiased=False).clamp_min(1e-6)
    elif feature_norm == "none":
        mu = torch.zeros(x.shape[1], device=device)
        sd = torch.ones(x.shape[1], device=device)
    else:
        raise BenchError(f"feature_norm={feature_norm!r} is unknown", "use standardize or none")
    x.sub_(mu).div_(sd)
    xe = ye = None
    if x_eval is not None:
        xe = ((torch.as_tensor(x_eval).float().to(device) - mu) / sd)
        ye = torch.as_tensor(y_eval).long().to(device)
    lin = nn.Linear(x.shape[1], num_classes).to(device)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    if optimizer == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(lin.parameters(), lr=lr, weight_decay=weight_decay)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(lin.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        raise BenchError(f"optimizer={optimizer!r} is unknown", "use adamw or sgd")
    if schedule not in ("cosine", "constant"):
        raise BenchError(f"schedule={schedule!r} is unknown", "use cosine or constant")
    n = x.shape[0]
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    total = max(1, epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(int(seed))
    history: list[dict[str, Any]] = []
    step = 0

    def scores(xs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([lin(xs[i:i + 65536]) for i in range(0, xs.shape[0], 65536)]).float()

    for epoch in tqdm(range(epochs), desc="linear head", disable=not progress, leave=False):
        perm = torch.randperm(n, generator=gen).to(device)
        loss_sum = 0.0
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            set_lr(opt, cosine_lr(lr, step, total) if schedule == "cosine" else lr)  # x0.5 is exact: same floats
            loss = nn.functional.cross_entropy(lin(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * idx.numel()
            step += 1
        entry: dict[str, Any] = {"epoch": epoch + 1, "loss": loss_sum / n}
        if not math.isfinite(entry["loss"]):
            raise BenchError(f"linear head diverged (loss {entry['loss']}) in epoch {epoch + 1}", "lower --set lr=...")
        if xe is not None and (epoch + 1 == epochs or (eval_every > 0 and (epoch + 1) % eval_every == 0)):
            entry.update(topk_accuracy(scores(xe), ye, (1, 5)))
        history.append(entry)
    if epochs == 0 and xe is not None:
        history.append({"epoch": 0, "loss": None, **topk_accuracy(scores(xe), ye, (1, 5))})
    evaluated = [h for h in history if "top1" in h]
    final = {k: evaluated[-1][k] for k in ("epoch", "top1", "top5")} if evaluated else {}
    b_entry = max(evaluated, key=lambda h: (h["top1"], -h["epoch"])) if evaluated else None
    best = {k: b_entry[k] for k in ("epoch", "top1", "top5")} if b_entry else {}
    with torch.no_grad():
        w_raw = lin.weight / sd
        b_raw = lin.bias - w_raw @ mu
    return LinearFit(weight=w_raw.cpu(), bias=b_raw.cpu(), history=history, final=final, best=best,
                     evaluated_epochs=[h["epoch"] for h in evaluated], seconds=time.time() - t0)
