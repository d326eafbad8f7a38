"""MoPro training: one code path for CPU, one GPU and torchrun (env://, DDP) on many GPUs and nodes.

One optimizer step (:func:`mopro_step`), for the global batch of B images spread over W processes:

1. query encoder on the weak view -> classifier logits, embedding q (under DDP: the wrapped encoder, grads synced);
2. key encoder <- EMA of the query encoder (m = 0.999), then keys k of the strong view with *shuffled BN*: the key
   images of all processes are gathered, permuted with a permutation drawn from ``(seed, step)`` (the same on every
   process), process r encodes the r-th chunk, the keys are gathered and un-permuted. Inside a process, BatchNorm is
   split into ``bn_splits`` contiguous groups (:class:`~mopro_bench.pretrain.model.SplitBatchNorm2d`), so the
   statistics are those of ``W * bn_splits`` "virtual devices" whatever W is; on one process with ``bn_splits = G``
   this is exactly MoCo's shuffle-BN on G devices (a key is never normalised with the statistics of the batch
   its query saw);
3. instance InfoNCE of q against k and the queue; prototype logits q . prototypes^T / T (prototypes before this
   step's update);
4. from ``start_clean_epoch`` on, noise cleaning (:mod:`~mopro_bench.pretrain.cleaning`) corrects labels and marks
   OOD samples; before, every sample keeps its given label;
5. the keys of the global batch are enqueued; the prototypes are updated with the kept embeddings of the global batch
   (all_gather, batch order) -- :mod:`~mopro_bench.pretrain.prototypes`;
6. loss = CE(classifier, label) + w_inst * InfoNCE + w_proto * CE(prototype logits, label) (the last from
   ``proto_start_epoch`` on), the label terms over kept samples only; SGD step.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from mopro_bench import __version__
from mopro_bench.backbones import Preprocess
from mopro_bench.config import apply_overrides
from mopro_bench.data.common import ImageList, eval_transform
from mopro_bench.engine.distributed import all_gather_cat, cleanup_distributed, init_distributed
from mopro_bench.engine.loop import DivergenceGuard, EpochCallback, HookBase, LRSchedule, Progress, TrainerBase
from mopro_bench.engine.precision import autocast as _autocast
from mopro_bench.engine.schedule import epoch_lr
from mopro_bench.engine.seeding import seed_everything
from mopro_bench.errors import BenchError
from mopro_bench.io import atomic_write_json
from mopro_bench.pretrain import checkpoint as ckptlib
from mopro_bench.pretrain.cleaning import clean_labels
from mopro_bench.pretrain.config import PretrainConfig, from_dict, validate
from mopro_bench.pretrain.data import GlobalBatchSampler, SeededDataset, TwoViews, derive_seed
from mopro_bench.pretrain.losses import instance_logits, kept_cross_entropy, proto_logits
from mopro_bench.pretrain.model import MoPro

STAT_KEYS = ("loss", "loss_inst", "loss_cls", "loss_proto", "acc_inst", "samples", "kept", "relabelled", "confident")
STRUCTURAL = ("model.", "mopro.queue_size", "data.batch_size", "aug.image_size", "run.seed")
FAULT_ENV = "MOPRO_BENCH_FAULT"  # tests: "kill@N" (SIGKILL after step N) or "term@N" (SIGTERM after step N)


def lr_at(cfg: PretrainConfig, epoch: int) -> float:
    """Learning rate of an epoch (set once per epoch, like the reference): step decay or cosine."""
    o = cfg.optim
    return epoch_lr(o.schedule, cfg.effective_lr(), epoch, epochs=o.epochs, milestones=o.milestones, gamma=o.gamma)


def resolve_bn_splits(cfg: PretrainConfig, world: int, local_batch: int) -> int:
    g = cfg.model.bn_splits
    if g == 0:  # auto: the paper's 8 BN batches of B/8 images, but never fewer than 8 images per BN batch
        g = max(1, 8 // world)
        while g > 1 and (local_batch % g or local_batch // g < 8):
            g -= 1
        return g
    if local_batch % g:
        raise BenchError(f"model.bn_splits={g} does not divide the per-process batch {local_batch}",
                         "choose bn_splits dividing data.batch_size / world_size (or 0 = auto)")
    if local_batch // g < 2:
        raise BenchError(f"model.bn_splits={g} leaves {local_batch // g} image(s) per BatchNorm group",
                         "use fewer BN splits or a larger batch (BatchNorm needs at least 2 images)")
    return g


# ------------------------------------------------------------------------------------------------------------- step
@dataclass
class StepEnv:
    """What a step needs besides model and batch."""

    cfg: PretrainConfig
    world: int = 1
    rank: int = 0
    amp_dtype: torch.dtype | None = None  # bf16 autocast on CUDA
    channels_last: bool = False


@torch.no_grad()
def shuffled_keys(model: MoPro, x_k: torch.Tensor, perm_seed: int, world: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys of this process's images and of the whole global batch, computed with shuffled BN (see module doc)."""
    local = x_k.shape[0]
    x_all = all_gather_cat(x_k)
    perm = torch.randperm(x_all.shape[0], generator=torch.Generator().manual_seed(perm_seed)).to(x_all.device)
    mine = perm[rank * local:(rank + 1) * local]
    _, k_part = model.encoder_k(x_all[mine])
    k_shuffled = all_gather_cat(k_part.to(model.queue.dtype).contiguous())
    k_all = torch.empty_like(k_shuffled)
    k_all[perm] = k_shuffled
    return k_all[rank * local:(rank + 1) * local], k_all


def mopro_step(model: MoPro, q_net: nn.Module, optimizer: torch.optim.Optimizer, x_q: torch.Tensor, x_k: torch.Tensor,
               target: torch.Tensor, *, epoch: int, step: int, env: StepEnv) -> torch.Tensor:
    """One MoPro optimizer step. Returns the global statistics vector (see :data:`STAT_KEYS`), summed over the
    global batch where they are counts, global means where they are losses."""
    cfg, m = env.cfg, env.cfg.mopro
    device = x_q.device
    if env.channels_last:
        x_q, x_k = x_q.contiguous(memory_format=torch.channels_last), x_k.contiguous(memory_format=torch.channels_last)
    with _autocast(device, env.amp_dtype):
        cls_out, q = q_net(x_q)
    dt = model.prototypes.dtype  # float32 (autocast outputs are cast back); float64 in the exactness tests
    cls_out, q = cls_out.to(dt), q.to(dt)
    with torch.no_grad():
        model.momentum_update(m.moco_m)
        with _autocast(device, env.amp_dtype):
            k, k_all = shuffled_keys(model, x_k, derive_seed("shuffle", cfg.run.seed, step), env.world, env.rank)
    queue = model.queue.clone().detach()
    protos = model.prototypes.clone().detach()
    logits_inst = instance_logits(q, k, queue, m.temperature)
    loss_inst = F.cross_entropy(logits_inst, torch.zeros(q.shape[0], dtype=torch.long, device=device))
    target = target.long()
    logits_proto = proto_logits(q, protos, m.temperature, target if m.mask_unseen_protos else None)
    if epoch >= m.start_clean_epoch:
        cr = clean_labels(cls_out.detach(), logits_proto.detach(), target, alpha=m.alpha, threshold=m.pseudo_th,
                          num_class=cfg.model.num_class)
        tgt, keep, relab, conf = cr.target, cr.kept, cr.relabelled, cr.confident
        if m.mask_unseen_protos and bool(relab.any()):
            # the loss's mask must spare the *cleaned* label: a sample relabelled to a class whose prototype is still
            # zero would otherwise get logit -inf for its own target (an infinite loss)
            logits_proto = proto_logits(q, protos, m.temperature, tgt)
    else:
        tgt, keep = target, torch.ones_like(target, dtype=torch.bool)
        relab = conf = torch.zeros_like(keep)
    # global batch, in batch order: features, labels, kept flags -> queue and prototypes
    feats_all = all_gather_cat(q.detach())
    tgt_all = all_gather_cat(tgt)
    keep_all = all_gather_cat(keep.to(torch.uint8)).bool()
    model.enqueue(k_all)
    model.update_prototypes(feats_all[keep_all], tgt_all[keep_all], m.proto_m, m.proto_norm)
    n_kept = int(keep_all.sum().item())
    denom = max(n_kept, 1) / env.world
    loss_cls = kept_cross_entropy(cls_out, tgt, keep, denom)
    if epoch >= m.proto_start_epoch:
        loss_proto = kept_cross_entropy(logits_proto, tgt, keep, denom)
    else:
        loss_proto = torch.zeros((), device=device)
    loss = m.w_cls * loss_cls + m.w_inst * loss_inst + m.w_proto * loss_proto
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        w = float(env.world)
        acc_inst = (logits_inst.argmax(1) == 0).float().sum()
        stats = torch.stack([t.float() for t in (
            loss.detach() / w, loss_inst.detach() / w, loss_cls.detach() / w, loss_proto.detach() / w, acc_inst,
            torch.tensor(float(q.shape[0]), device=device), torch.zeros((), device=device), relab.sum(), conf.sum())])
        if env.world > 1:
            dist.all_reduce(stats)
        stats[6] = n_kept
    return stats


@dataclass
class Built:
    """What :func:`build_model_and_optimizer` returns: the model, the (DDP-wrapped) query encoder that takes the
    gradient, the optimizer, the step's environment and the resolved BN split count."""

    model: MoPro
    q_net: nn.Module
    optimizer: torch.optim.Optimizer
    env: StepEnv
    bn_splits: int


def build_model_and_optimizer(cfg: PretrainConfig, device: torch.device, *, world: int = 1, rank: int = 0,
                              bn_splits: int | None = None) -> Built:
    """The trainer's own set-up of model and optimizer (benchmarks call it too): seeded MoPro with the BN-split rule,
    channels_last on CUDA when ``run.channels_last``, the precision of ``run.precision`` (bf16 autocast, or fp64
    weights), rank 0's weights broadcast and DDP around the query encoder for ``world > 1``, optional
    ``torch.compile``, SGD (fused on CUDA, foreach on CPU) at the first epoch's LR."""
    if bn_splits is None:
        bn_splits = resolve_bn_splits(cfg, world, cfg.data.batch_size // world)
    seed_everything(cfg.run.seed)
    m = cfg.model
    model = MoPro(m.arch, m.width, m.num_class, m.low_dim, cfg.mopro.queue_size, m.wide_stem)
    model.set_bn_splits(bn_splits)
    cuda = device.type == "cuda"
    channels_last = cuda and cfg.run.channels_last
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    prec = cfg.run.precision
    if prec == "bf16" and not (cuda or device.type == "cpu"):
        raise BenchError("run.precision=bf16 needs a CUDA device or the CPU", "use run.precision=fp32")
    amp_dtype = torch.bfloat16 if (prec == "bf16" or (prec == "auto" and cuda)) else None
    if prec == "fp64":
        model.double()
    if world > 1:  # identical start on every process
        for t in model.state_dict().values():
            dist.broadcast(t, 0)
    if cfg.run.compile:
        model.encoder_q.compile()
    if world > 1:
        q_net: nn.Module = nn.parallel.DistributedDataParallel(
            model.encoder_q, device_ids=[device.index] if cuda else None, broadcast_buffers=False)
    else:
        q_net = model.encoder_q
    opt_kw: dict[str, Any] = {"fused": True} if cuda else {"foreach": True}
    optimizer = torch.optim.SGD(model.encoder_q.parameters(), lr=lr_at(cfg, 0), momentum=cfg.optim.momentum,
                                weight_decay=cfg.optim.weight_decay, **opt_kw)
    env = StepEnv(cfg, world, rank, amp_dtype, channels_last)
    return Built(model, q_net, optimizer, env, bn_splits)


# ------------------------------------------------------------------------------------------------------------- eval
@torch.no_grad()
def evaluate_classifier(model: MoPro, samples: list[tuple[Any, int]], image_size: int, pre: Preprocess, device: torch.device,
                        batch_size: int, workers: int, world: int, rank: int, amp_dtype: torch.dtype | None,
                        progress: bool = False, desc: str = "val") -> dict[str, float]:
    """Top-1/top-5 of the query encoder's classifier and top-1 of the nearest prototype (sharded over processes)."""
    from tqdm import tqdm

    enc = model.encoder_q
    was_training = enc.training
    enc.eval()
    shard = samples[rank::world]
    ds = ImageList([p for p, _ in shard], [y for _, y in shard], eval_transform(image_size, pre=pre))
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda")
    counts = torch.zeros(4, dtype=torch.float64, device=device)  # top1, top5, proto top1, n
    protos = model.prototypes
    unseen = (protos == 0).all(dim=1)[None, :]
    for x, y, _ in tqdm(loader, desc=desc, leave=False, disable=not progress, dynamic_ncols=True):
        x, y = x.to(device, protos.dtype, non_blocking=True), y.to(device, non_blocking=True)
        with _autocast(device, amp_dtype):
            logits, q = enc(x)
        top5 = logits.float().topk(min(5, logits.shape[1]), dim=1).indices
        counts[0] += (top5[:, 0] == y).sum()
        counts[1] += (top5 == y[:, None]).any(1).sum()
        sims = (q.to(protos.dtype) @ protos.t()).masked_fill(unseen, float("-inf"))
        counts[2] += (sims.argmax(1) == y).sum()
        counts[3] += y.numel()
    if world > 1:
        dist.all_reduce(counts)
    enc.train(was_training)
    n = max(counts[3].item(), 1.0)
    return {"top1": 100.0 * counts[0].item() / n, "top5": 100.0 * counts[1].item() / n,
            "proto_top1": 100.0 * counts[2].item() / n, "images": int(counts[3].item())}


# ------------------------------------------------------------------------------------------------------------ trainer
def train_list_sha256(samples: list[tuple[str, int]]) -> str:
    """Fingerprint of a train list: sha256 over ``relpath<TAB>label<LF>`` lines in list order (the order fixes which
    image every sampler index means). Independent of the data root's location, so a moved dataset still resumes."""
    h = hashlib.sha256()
    for rel, y in samples:
        h.update(f"{rel}\t{int(y)}\n".encode())
    return h.hexdigest()


# Noise-cleaning collapse: a cleaning epoch that marks at least this fraction of its samples out-of-distribution, or
# relabels at least COLLAPSE_RELABEL_FRACTION of them, or whose validation top-1 falls by more than COLLAPSE_VAL_DROP
# (and by >= COLLAPSE_VAL_POINTS) from the last warm-up epoch's. Observed on low-resolution data with 40% flips + 10%
# OOD and default crops: ~60% OOD per batch from the first cleaning epoch, val top-1 38% -> 20% (README, "Short runs
# and small data sets"); on generated data the same recipe then relabelled 60-78% of every epoch, mostly to one class.
COLLAPSE_OOD_FRACTION = 0.5
COLLAPSE_RELABEL_FRACTION = 0.5
COLLAPSE_VAL_DROP = 0.25
COLLAPSE_VAL_POINTS = 5.0
VAL_KEY = "webvision_val/top1"


def collapse_advice(cfg: PretrainConfig) -> str:
    a, m, o = cfg.aug, cfg.mopro, cfg.optim
    return (f"likely causes: warm-up too short (mopro.start_clean_epoch={m.start_clean_epoch} of optim.epochs={o.epochs}; "
            f"try about half the run), crops too aggressive for the image size (aug.crop_scale={list(a.crop_scale)} at "
            f"aug.image_size={a.image_size}; on low-resolution images use e.g. --set aug.crop_scale=[0.6,1.0]), or a class "
            f"space that does not match the data (model.num_class={cfg.model.num_class}, class_space="
            f"{cfg.model.class_space})")


def detect_collapse(history: list[dict[str, Any]], *, ood_fraction: float = COLLAPSE_OOD_FRACTION,
                    relabel_fraction: float = COLLAPSE_RELABEL_FRACTION, val_drop: float = COLLAPSE_VAL_DROP,
                    val_points: float = COLLAPSE_VAL_POINTS) -> str | None:
    """What looks like a noise-cleaning collapse in the newest epoch record of ``history`` (None: nothing).

    Each record needs ``epoch``, ``cleaning`` (bool), ``samples``, ``ood``, optionally ``relabelled`` and
    :data:`VAL_KEY`. Three signs, any is enough, in a cleaning epoch: >= ``ood_fraction`` of its samples marked OOD;
    >= ``relabel_fraction`` of them relabelled (real web data has far fewer wrong labels than that); its validation
    top-1 below ``(1 - val_drop)`` x that of the last warm-up epoch with a validation, and at least ``val_points``
    lower."""
    if not history or not history[-1].get("cleaning"):
        return None
    rec = history[-1]
    signs = []
    if rec.get("samples"):
        frac = rec["ood"] / rec["samples"]
        if frac >= ood_fraction:
            signs.append(f"{100 * frac:.0f}% of its samples were marked out-of-distribution")
        relab = rec.get("relabelled", 0) / rec["samples"]
        if relab >= relabel_fraction:
            signs.append(f"{100 * relab:.0f}% of its samples were relabelled")
    warm = [r for r in history[:-1] if not r.get("cleaning") and r.get(VAL_KEY) is not None]
    if warm and rec.get(VAL_KEY) is not None:
        before, now = float(warm[-1][VAL_KEY]), float(rec[VAL_KEY])
        if now < (1 - val_drop) * before and before - now >= val_points:
            signs.append(f"validation top-1 fell to {now:.1f}% from {before:.1f}% at the last warm-up epoch "
                         f"({warm[-1]['epoch']})")
    if not signs:
        return None
    return f"noise cleaning looks collapsed at epoch {rec['epoch']}: " + "; ".join(signs)


def load_train_set(data_root: str | Path, cfg: PretrainConfig, annotation: str | None = None):
    """The WebVision train set, with labels checked against ``model.num_class`` (never silently dropped)."""
    from mopro_bench.data.webvision import MAX_CLASSES, WebVision

    ds = WebVision(data_root, num_class=MAX_CLASSES, annotation=annotation or cfg.data.annotation)
    samples = ds.train_samples()
    top = max(y for _, y in samples)
    if top >= cfg.model.num_class:
        n_bad = sum(y >= cfg.model.num_class for _, y in samples)
        raise BenchError(f"{n_bad} training label(s) are >= model.num_class={cfg.model.num_class} (largest {top})",
                         f"use --set model.num_class={top + 1 if top >= 1000 else 1000} or a matching train list")
    return ds, samples


@dataclass
class TrainResult:
    status: str  # "done" | "preempted"
    out: Path
    epoch: int
    step: int
    checkpoint: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    is_main: bool = True
    warnings: list[str] = field(default_factory=list)


@dataclass
class ResolvedRun:
    """A run's config, resolved once (by the command): with a checkpoint to resume, that run's saved config with the
    ``--set`` overrides over it (structural ones must agree); otherwise the overrides over the defaults."""

    cfg: PretrainConfig
    resume_path: Path | None = None
    resume_obj: dict[str, Any] | None = None


def resolve_run(overrides: dict[str, Any] | None, out: str | Path, resume: str | None,
                base_config: PretrainConfig | None = None) -> ResolvedRun:
    """The config of the run in ``out`` (``resume``: None, ``auto`` or a checkpoint file); see :class:`ResolvedRun`."""
    overrides = dict(overrides or {})
    out = Path(out).expanduser()
    resume_path = ckptlib.find_resume(out, resume)
    resume_obj = ckptlib.load_file(resume_path) if resume_path else None
    if resume_obj is not None:
        saved = from_dict(resume_obj["mopro_bench"]["config"])
        for k, v in overrides.items():
            if k.startswith(STRUCTURAL) and apply_overrides(saved, {k: v}) != saved:
                raise BenchError(f"--set {k} differs from the checkpoint being resumed ({resume_path.name})",
                                 "resume with the same model, queue, batch, image size and seed, or start a new --out")
        return ResolvedRun(validate(apply_overrides(saved, overrides)), resume_path, resume_obj)
    if ckptlib.list_checkpoints(out) and resume is None:
        raise BenchError(f"{out} already holds checkpoints",
                         "pass --resume auto to continue that run, or choose a new --out")
    return ResolvedRun(validate(apply_overrides(base_config or PretrainConfig(), overrides)))


class _StopFlag:
    def __init__(self):
        self.signum: int | None = None

    def __call__(self, signum, frame):  # signal handler: only set the flag; the loop saves at the end of the step
        self.signum = signum


class _PretrainLoop(TrainerBase):
    """MoPro pretraining on the engine's loop: the epoch's data is the global-batch sampler from ``(epoch, batch)``
    (a resumed run starts mid-epoch), the step is :func:`mopro_step`; LR, progress bar, divergence guard, step log,
    preemption / mid-epoch checkpoints and the end of an epoch are hooks."""

    def __init__(self, trainer: Trainer, start_batch: int):
        super().__init__()
        self.t = trainer
        self.start_batch = start_batch
        self.status, self.ckpt_path = "done", None
        self.bar: Progress | None = None

    def epoch_batches(self):
        t, epoch = self.t, self.epoch
        self.t0 = time.time()
        if epoch != self.start_epoch or self.start_batch == 0:
            self.start_batch = 0
            t.epoch_stats.zero_()
        t.sampler.set_epoch(epoch, self.start_batch)
        loader = DataLoader(t.dataset, batch_sampler=t.sampler, num_workers=t.workers,
                            pin_memory=t.device.type == "cuda" and t.cfg.data.pin_memory, persistent_workers=False)
        self.batch_idx = self.start_batch
        return self.bar.wrap(loader, total=len(t.sampler), dynamic_ncols=True)

    def run_step(self, batch) -> torch.Tensor:
        t = self.t
        views, target, _ = batch
        dt = t.model.queue.dtype
        x_q = views[0].to(t.device, dt, non_blocking=True)
        x_k = views[1].to(t.device, dt, non_blocking=True)
        target = target.to(t.device, non_blocking=True)
        stats = mopro_step(t.model, t.q_net, t.optimizer, x_q, x_k, target, epoch=self.epoch, step=t.global_step, env=t.env)
        t.global_step += 1
        self.batch_idx += 1
        self.st = stats.double().cpu()
        return self.st[:5]  # the losses and acc: the same on every process (the stats are all-reduced)


class _StepLog(HookBase):
    """After every step: the epoch's sums, and every ``run.log_every`` steps a line of train_log.jsonl, TensorBoard
    scalars and the progress bar's postfix (main process)."""

    def after_step(self) -> None:
        loop: _PretrainLoop = self.trainer  # type: ignore[assignment]
        t, st = loop.t, loop.st
        t.epoch_stats += st
        if t.is_main and (t.global_step % max(1, t.cfg.run.log_every) == 0):
            rec = {"step": t.global_step, "epoch": loop.epoch, "lr": loop.lr,
                   **{k: float(v) for k, v in zip(STAT_KEYS, st.tolist())}}
            t.steps_fh.write(json.dumps(rec) + "\n")
            t.steps_fh.flush()
            if t.tb is not None:
                for k in ("loss", "loss_inst", "loss_cls", "loss_proto"):
                    t.tb.add_scalar(f"train/{k}", rec[k], t.global_step)
                t.tb.add_scalar("train/lr", loop.lr, t.global_step)
            loop.bar.bar.set_postfix(t._postfix(rec, loop.lr, loop.epoch))


class _Preemption(HookBase):
    """After every step: SIGTERM/SIGUSR1 (agreed over processes) or ``ckpt.every_steps`` -> a mid-epoch checkpoint; a
    stop ends the run as "preempted". ``MOPRO_BENCH_FAULT`` (tests) sends SIGTERM / SIGKILL after a given step."""

    def __init__(self, stop: _StopFlag, fault_kind: str, fault_step: str):
        self.stop, self.fault_kind, self.fault_step = stop, fault_kind, fault_step

    def after_step(self) -> None:
        loop: _PretrainLoop = self.trainer  # type: ignore[assignment]
        t = loop.t
        if self.fault_kind == "term" and str(t.global_step) == self.fault_step:
            os.kill(os.getpid(), signal.SIGTERM)
        stop_now = t._agree_stop(self.stop)
        mid = loop.batch_idx < t.sampler.batches_per_epoch
        every = t.cfg.ckpt.every_steps
        if mid and (stop_now or (every and t.global_step % every == 0)):
            loop.ckpt_path = t._save(loop.epoch, loop.epoch, loop.batch_idx)
        if self.fault_kind == "kill" and str(t.global_step) == self.fault_step:
            os.kill(os.getpid(), signal.SIGKILL)
        if stop_now and mid:
            loop.status = "preempted"
            loop.stop_requested = True


class Trainer:
    """``Trainer(overrides, data_root, out, ...).fit()``. Every process of a torchrun job runs the same code."""

    def __init__(self, overrides: dict[str, Any] | None, data_root: str | Path, out: str | Path, *,
                 device: str = "auto", workers: int = 0, resume: str | None = None, imagenet: str | None = None,
                 progress: bool = True, base_config: PretrainConfig | None = None, extra_signals: tuple[int, ...] = (),
                 run: ResolvedRun | None = None):
        self.info, self.device = init_distributed(device)
        self.world, self.rank = self.info.world_size, self.info.rank
        self.is_main = self.rank == 0
        self.out = Path(out).expanduser()
        self.data_root = Path(data_root).expanduser()
        self.workers, self.progress = int(workers), bool(progress) and self.is_main
        self.imagenet = imagenet
        self.extra_signals = extra_signals
        overrides = dict(overrides or {})
        if self.is_main:
            ckptlib.check_out_dir(self.out)
        if run is None:
            run = resolve_run(overrides, self.out, resume, base_config)
        self.resume_path, self.resume_obj, self.cfg = run.resume_path, run.resume_obj, run.cfg
        self._check_world()

    # ---------------------------------------------------------------------------------------------- setup
    def _check_world(self) -> None:
        cfg = self.cfg
        b = cfg.data.batch_size
        if b % self.world:
            raise BenchError(f"data.batch_size={b} (the global batch) is not divisible by {self.world} processes",
                             f"use a batch size that is a multiple of {self.world}")
        if cfg.mopro.queue_size % b:
            raise BenchError(f"mopro.queue_size={cfg.mopro.queue_size} is not a multiple of the global batch {b}",
                             "the queue is filled one whole batch at a time: choose queue_size = k * batch_size")
        self.local_batch = b // self.world
        self.bn_splits = resolve_bn_splits(cfg, self.world, self.local_batch)

    def _log(self, msg: str) -> None:
        if self.is_main:
            print(msg, flush=True)

    def _setup(self) -> None:
        cfg = self.cfg
        dev = self.device
        self.train_ds, samples = load_train_set(self.data_root, cfg)
        from mopro_bench.data.webvision import WebVisionTrain

        if len(samples) < cfg.data.batch_size:
            raise BenchError(f"{len(samples)} training images are fewer than one global batch ({cfg.data.batch_size})",
                             "use a smaller --set data.batch_size (and queue_size a multiple of it)")
        self.num_train = len(samples)
        self.train_sha256 = train_list_sha256(samples)
        self.dataset = SeededDataset(WebVisionTrain(self.train_ds, TwoViews(cfg.aug)), cfg.run.seed)
        self.sampler = GlobalBatchSampler(self.num_train, cfg.data.batch_size, self.rank, self.world, cfg.run.seed)
        self.val_samples = [(self.train_ds.path(r), y) for r, y in self.train_ds.val_samples() if y < cfg.model.num_class]
        if cfg.data.max_val_images:
            self.val_samples = self.val_samples[:cfg.data.max_val_images]
        self.imagenet_samples: list[tuple[Any, int]] = []
        if self.imagenet:
            from mopro_bench.data.imagenet import ImageNetFolder

            self.imagenet_samples = ImageNetFolder(self.imagenet).samples("val")
            if cfg.data.max_val_images:
                self.imagenet_samples = self.imagenet_samples[:cfg.data.max_val_images]

        built = build_model_and_optimizer(cfg, dev, world=self.world, rank=self.rank, bn_splits=self.bn_splits)
        self.model, self.q_net, self.optimizer, self.env = built.model, built.q_net, built.optimizer, built.env
        self.amp_dtype, self.channels_last = built.env.amp_dtype, built.env.channels_last
        self.pre = Preprocess(mean=tuple(cfg.aug.mean), std=tuple(cfg.aug.std))

    # ------------------------------------------------------------------------------------------ checkpoint
    def _state(self, epoch_done: int, sampler_epoch: int, sampler_batch: int) -> dict[str, Any]:
        cfg, m = self.cfg, self.cfg.model
        return {
            "mopro_bench": {"kind": "pretrain", "version": ckptlib.FORMAT_VERSION, "arch": m.arch, "width": m.width,
                            "num_class": m.num_class, "low_dim": m.low_dim, "class_space": m.class_space,
                            "config": cfg.to_dict(), "suite_version": __version__, "world_size": self.world,
                            "bn_splits": self.bn_splits,
                            "precision": "bf16-autocast" if self.amp_dtype else str(self.model.queue.dtype).split(".")[-1]},
            "epoch": epoch_done,
            "arch": self.model.encoder_q.name,
            "state_dict": {k: v.detach().to("cpu", copy=True).contiguous() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"name": cfg.optim.schedule, "epoch": sampler_epoch,
                          "lr": lr_at(cfg, min(sampler_epoch, cfg.optim.epochs - 1))},
            "step": self.global_step,
            "rng": ckptlib.capture_rng(),
            "sampler": {"epoch": sampler_epoch, "batch": sampler_batch, "seed": cfg.run.seed,
                        "global_batch": cfg.data.batch_size, "num_samples": self.num_train,
                        "train_list_sha256": self.train_sha256},
            "epoch_stats": [float(v) for v in self.epoch_stats.tolist()],
            "metrics": dict(self.last_metrics),
        }

    def _newest_checkpoint(self) -> str:
        found = ckptlib.list_checkpoints(self.out)
        return f"the newest checkpoint is still {found[-1]}" if found else "no checkpoint was written"

    def _diverged(self, epoch: int, batch_idx: int, what: str) -> None:
        """Stop: a non-finite loss (or weights). Nothing of this state is saved; the last good checkpoint stays newest."""
        raise self._divergence(epoch, batch_idx, what)

    def _divergence(self, epoch: int, batch_idx: int, what: str) -> BenchError:
        lr = lr_at(self.cfg, epoch)
        prec = self.cfg.run.precision
        return BenchError(
            f"pretraining diverged: {what} at epoch {epoch}, batch {batch_idx} of {self.sampler.batches_per_epoch} "
            f"(global step {self.global_step}, lr {lr:.4g}); nothing saved from it, {self._newest_checkpoint()}",
            f"lower optim.lr (e.g. --set optim.lr={lr / 10:.4g}), check the data (`mopro-bench data check`)"
            + (f", use run.precision=fp32 (now {prec})" if prec not in ("fp32", "fp64") else "")
            + "; then run again: --resume auto continues from the last good checkpoint, if there is one")

    def _postfix(self, rec: dict[str, Any], lr: float, epoch: int) -> dict[str, str]:
        post = {"loss": f"{rec['loss']:.3f}", "lr": f"{lr:.4g}"}
        if epoch >= self.cfg.mopro.start_clean_epoch:
            s = dict(zip(STAT_KEYS, self.epoch_stats.tolist()))
            if s["samples"]:
                frac = (s["samples"] - s["kept"]) / s["samples"]
                relab = s["relabelled"] / s["samples"]
                post["ood"] = f"{100 * frac:.0f}%"
                post["relabelled"] = f"{100 * relab:.0f}%"
                if frac >= COLLAPSE_OOD_FRACTION or relab >= COLLAPSE_RELABEL_FRACTION:
                    post["warning"] = "cleaning collapse? (see log)"
        if self.collapse_warnings and "warning" not in post:
            post["warning"] = "cleaning collapsed earlier (see log)"
        return post

    def _check_collapse(self) -> None:
        if not self.is_main:
            return
        msg = detect_collapse(self.history)
        if msg is None:
            return
        first = not self.collapse_warnings
        self.collapse_warnings.append(msg)
        self.history[-1]["warning"] = msg
        atomic_write_json(self.out / "log.json", self.history)
        # stdout, next to the epoch lines it explains (the run's log when redirected)
        print(f"warning: {msg}" + (f"; {collapse_advice(self.cfg)}" if first else ""), flush=True)

    def _save(self, epoch_done: int, sampler_epoch: int, sampler_batch: int) -> Path | None:
        bad = next((k for k, v in self.model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()),
                   None)
        if bad is not None:  # never write non-finite weights over the last good checkpoint
            ep, b = (sampler_epoch - 1, self.sampler.batches_per_epoch) if sampler_batch == 0 else (sampler_epoch, sampler_batch)
            self._diverged(ep, b, f"non-finite weights ({bad})")
        path = None
        if self.is_main:
            state = self._state(epoch_done, sampler_epoch, sampler_batch)
            path = ckptlib.save_checkpoint(self.out, state, self.cfg.ckpt.keep_last)
        if self.world > 1:
            dist.barrier()
        return path or self.out / ckptlib.checkpoint_name(self.global_step)

    def _restore(self, obj: dict[str, Any]) -> tuple[int, int]:
        smp = obj["sampler"]
        if smp["num_samples"] != self.num_train:
            raise BenchError(f"the checkpoint was trained on {smp['num_samples']} images, the data now has {self.num_train}",
                             "resume with the same --data (and annotation) or start a new --out")
        saved = smp.get("train_list_sha256")
        if saved is None:
            print(f"warning: {self.resume_path} predates train-list fingerprints; cannot check that --data and the "
                  f"annotation are the ones it was trained on ({self.num_train} images, as before)", file=sys.stderr)
        elif saved != self.train_sha256:
            raise BenchError(f"the checkpoint was trained on another train list ({self.num_train} images both, but other "
                             f"images or labels: fingerprint {saved[:12]} vs {self.train_sha256[:12]} now)",
                             "resume with the same --data and annotation as the run in --out, or start a new --out")
        self.model.load_state_dict(obj["state_dict"])
        self.optimizer.load_state_dict(obj["optimizer"])
        self.global_step = int(obj["step"])
        self.epoch_stats = torch.tensor(obj.get("epoch_stats") or [0.0] * len(STAT_KEYS), dtype=torch.float64)
        self.last_metrics = dict(obj.get("metrics") or {})
        ckptlib.restore_rng(obj.get("rng") or {})
        return int(smp["epoch"]), int(smp["batch"])

    # ------------------------------------------------------------------------------------------------ logs
    def _open_logs(self) -> None:
        self.tb = None
        self.history: list[dict[str, Any]] = []
        if not self.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.out / "config.json", self.cfg.to_dict())
        log = self.out / "log.json"
        if log.is_file() and self.resume_obj is not None:
            self.history = [r for r in json.loads(log.read_text()) if r["epoch"] < int(self.resume_obj["epoch"])]
        steps = self.out / "train_log.jsonl"
        if steps.is_file():  # drop lines past the resumed step (they are redone)
            keep = []
            for line in steps.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= self.global_step:
                        keep.append(line)
                except (ValueError, KeyError):
                    continue
            steps.write_text("".join(line + "\n" for line in keep))
        self.steps_fh = open(steps, "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.out / "tb"), purge_step=self.global_step if self.global_step else None)
        except Exception as e:  # pragma: no cover - tensorboard missing or broken
            print(f"warning: no TensorBoard log ({type(e).__name__}: {e})", file=sys.stderr)

    def _close_logs(self) -> None:
        if self.is_main:
            self.steps_fh.close()
            if self.tb is not None:
                self.tb.close()

    def _epoch_record(self, epoch: int, lr: float, seconds: float, metrics: dict[str, Any]) -> dict[str, Any]:
        s = dict(zip(STAT_KEYS, self.epoch_stats.tolist()))
        n_steps = max(1, self.sampler.batches_per_epoch)
        samples = max(1.0, s["samples"])
        rec = {"epoch": epoch, "step": self.global_step, "lr": lr, "seconds": round(seconds, 3),
               "loss": s["loss"] / n_steps, "loss_inst": s["loss_inst"] / n_steps, "loss_cls": s["loss_cls"] / n_steps,
               "loss_proto": s["loss_proto"] / n_steps, "acc_inst": 100.0 * s["acc_inst"] / samples,
               "cleaning": epoch >= self.cfg.mopro.start_clean_epoch, "samples": int(s["samples"]),
               "relabelled": int(s["relabelled"]), "ood": int(s["samples"] - s["kept"]), "confident": int(s["confident"])}
        rec.update(metrics)
        return rec

    # ------------------------------------------------------------------------------------------------- fit
    def fit(self) -> TrainResult:
        cfg = self.cfg
        self.global_step = 0
        self.epoch_stats = torch.zeros(len(STAT_KEYS), dtype=torch.float64)
        self.last_metrics: dict[str, Any] = {}
        self.collapse_warnings: list[str] = []
        self._setup()
        start_epoch, start_batch = 0, 0
        if self.resume_obj is not None:
            start_epoch, start_batch = self._restore(self.resume_obj)
            self._log(f"resumed from {self.resume_path} (epoch {start_epoch}, batch {start_batch}, step {self.global_step})")
        self._open_logs()
        stop = _StopFlag()
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGUSR1, *self.extra_signals):
                handlers[sig] = signal.signal(sig, stop)
        fault = os.environ.get(FAULT_ENV, "")
        fault_kind, _, fault_step = fault.partition("@")
        if self.is_main and start_batch == 0 and start_epoch == 0:
            self._log(f"MoPro pretraining: {cfg.model.arch} x{cfg.model.width}, {self.num_train} images, global batch "
                      f"{cfg.data.batch_size} on {self.world} process(es) x {self.bn_splits} BN group(s), "
                      f"{self.sampler.batches_per_epoch} steps/epoch, device {self.device}, "
                      f"{'bf16' if self.amp_dtype else 'fp32'}")
        loop = _PretrainLoop(self, start_batch)
        loop.stop = stop
        bar = Progress(lambda epoch: f"epoch {epoch}", enabled=self.progress)
        loop.bar = bar
        loop.register_hooks([
            LRSchedule(self.optimizer, lambda epoch: lr_at(cfg, epoch)),  # once per epoch, like the reference
            bar,
            DivergenceGuard(lambda tr: self._divergence(tr.epoch, tr.batch_idx, f"non-finite loss ({float(tr.st[0])})")),
            _StepLog(),
            _Preemption(stop, fault_kind, fault_step),
            EpochCallback(self._end_epoch),
        ])
        try:
            loop.train(start_epoch, cfg.optim.epochs)
            if loop.status == "preempted":
                self._log(f"stopped by signal {stop.signum}: saved {loop.ckpt_path}; continue with --resume auto")
            return TrainResult(loop.status, self.out, loop.epoch, self.global_step, loop.ckpt_path, self.last_metrics,
                               self.history, self.is_main, list(self.collapse_warnings))
        finally:
            for sig, h in handlers.items():
                signal.signal(sig, h)
            self._close_logs()

    def _end_epoch(self, loop: _PretrainLoop) -> None:
        """After an epoch (a hook): validation when due, the epoch record, the checkpoint, the log, the collapse check,
        and a stop asked for during the last step."""
        if loop.status == "preempted":  # stopped mid-epoch: saved already, nothing of this epoch is recorded
            return
        cfg, epoch = self.cfg, loop.epoch
        metrics = {}
        last = epoch == cfg.optim.epochs - 1
        if cfg.run.eval_every and ((epoch + 1) % cfg.run.eval_every == 0 or last):
            metrics = self._validate(epoch)
            self.last_metrics = dict(metrics)
        rec = self._epoch_record(epoch, loop.lr, time.time() - loop.t0, metrics)
        loop.ckpt_path = self._save(epoch + 1, epoch + 1, 0)
        self._finish_epoch(rec)
        self._check_collapse()
        if self._agree_stop(loop.stop) and not last:
            loop.status = "preempted"
            loop.stop_requested = True

    def _agree_stop(self, stop: _StopFlag) -> bool:
        flag = torch.tensor([1.0 if stop.signum is not None else 0.0], device=self.device)
        if self.world > 1:
            dist.all_reduce(flag)
        return bool(flag.item() > 0)

    def _validate(self, epoch: int) -> dict[str, Any]:
        cfg = self.cfg
        metrics: dict[str, Any] = {}
        sets = [("webvision_val", self.val_samples)]
        if self.imagenet_samples:
            sets.append(("imagenet_val", self.imagenet_samples))
        for name, samples in sets:
            if not samples:
                continue
            r = evaluate_classifier(self.model, samples, cfg.aug.image_size, self.pre, self.device, cfg.data.val_batch_size,
                                    self.workers, self.world, self.rank, self.amp_dtype, self.progress, desc=name)
            for k in ("top1", "top5", "proto_top1"):
                metrics[f"{name}/{k}"] = r[k]
        return metrics

    def _finish_epoch(self, rec: dict[str, Any]) -> None:
        if not self.is_main:
            return
        self.history.append(rec)
        atomic_write_json(self.out / "log.json", self.history)
        if self.tb is not None:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch", "step"):
                    self.tb.add_scalar(f"epoch/{k}", v, rec["epoch"])
            self.tb.flush()
        val = "  ".join(f"{k.split('/')[0].replace('_val', '')} {k.split('/')[1]} {v:.2f}" for k, v in rec.items() if "/" in k)
        print(f"epoch {rec['epoch']:3d}  loss {rec['loss']:.4f} (inst {rec['loss_inst']:.3f} cls {rec['loss_cls']:.3f} "
              f"proto {rec['loss_proto']:.3f})  relabelled {rec['relabelled']}  ood {rec['ood']}  "
              f"{rec['seconds']:.1f}s  {val}", flush=True)


def run_pretrain(overrides: dict[str, Any] | None, data_root: str | Path, out: str | Path, **kw) -> TrainResult:
    try:
        return Trainer(overrides, data_root, out, **kw).fit()
    finally:
        cleanup_distributed()
