"""The MoPro step under benchmark: the trainer's set-up and :func:`mopro_step`, and a faithful naive step.

``build`` calls the trainer's own set-up (:func:`~mopro_bench.pretrain.trainer.build_model_and_optimizer`: ``MoPro``
with the trainer's BN-split rule, channels_last on CUDA, bf16 autocast, fused SGD on CUDA (foreach on CPU), optional
``torch.compile`` of the query encoder, DDP around the query encoder) with the variant's precision.

``naive_step`` is the same math written the obvious way, as a direct port of the reference code would be: fp32,
NCHW, the key encoder's EMA out of place (two new tensors per parameter, assigned to ``.data``), the prototype update
as the per-sample Python loop (:func:`~mopro_bench.pretrain.prototypes.update_prototypes_sequential`), and
``torch.optim.SGD`` with its defaults. Everything else is the project's own pieces (encoders, shuffled-BN keys,
losses, cleaning rule, queue), so both compute the same step; the benchmarks print the first step's loss of each.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mopro_bench.pretrain.cleaning import clean_labels
from mopro_bench.pretrain.config import PretrainConfig
from mopro_bench.pretrain.data import derive_seed
from mopro_bench.pretrain.losses import instance_logits, kept_cross_entropy, proto_logits
from mopro_bench.pretrain.model import MoPro
from mopro_bench.pretrain.prototypes import update_prototypes_sequential
from mopro_bench.pretrain.trainer import StepEnv, build_model_and_optimizer, mopro_step, resolve_bn_splits, shuffled_keys

# variant -> (precision, what it is)
VARIANTS = {
    "naive": "fp32 NCHW, per-sample prototype loop, out-of-place EMA, SGD defaults",
    "fp32": "trainer mopro_step, fp32 NCHW, fused (CUDA) / foreach (CPU) SGD",
    "bf16": "trainer mopro_step, bf16 autocast + channels_last on CUDA (run.precision=auto or bf16; the default is fp32)",
    "compile": "as bf16 + torch.compile of the query encoder (run.compile=true)",
}


@dataclass
class Setup:
    variant: str
    model: MoPro
    q_net: nn.Module
    optimizer: torch.optim.Optimizer
    env: StepEnv
    bn_splits: int

    def step(self, x_q: torch.Tensor, x_k: torch.Tensor, target: torch.Tensor, *, epoch: int, step: int) -> torch.Tensor:
        """One step; returns the trainer's statistics vector on the CPU (the trainer reads it back every step too)."""
        if self.variant == "naive":
            return naive_step(self.model, self.optimizer, x_q, x_k, target, epoch=epoch, step=step, cfg=self.env.cfg)
        return mopro_step(self.model, self.q_net, self.optimizer, x_q, x_k, target, epoch=epoch, step=step,
                          env=self.env).double().cpu()


def build(cfg: PretrainConfig, device: torch.device, variant: str, *, world: int = 1, rank: int = 0,
          ddp: bool = False) -> Setup:
    """The trainer's own set-up (:func:`~mopro_bench.pretrain.trainer.build_model_and_optimizer`) with the variant's
    precision (fp32 for naive/fp32, bf16 autocast + channels_last on CUDA for bf16/compile, ``torch.compile`` for
    compile); every class already has a prototype; the naive variant swaps in ``torch.optim.SGD`` with its defaults."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}")
    fast = variant in ("bf16", "compile")
    run = dataclasses.replace(cfg.run, precision="bf16" if fast else "fp32", compile=variant == "compile",
                              channels_last=fast and cfg.run.channels_last)
    cfg_v = dataclasses.replace(cfg, run=run)
    bn_splits = resolve_bn_splits(cfg_v, world, cfg.data.batch_size // world)
    use_ddp = ddp and variant != "naive"
    b = build_model_and_optimizer(cfg_v, device, world=world if use_ddp else 1, rank=rank if use_ddp else 0,
                                  bn_splits=bn_splits)
    model = b.model
    with torch.no_grad():  # every class already has a prototype, as after the first epoch on WebVision
        g = torch.Generator().manual_seed(derive_seed("bench-protos", cfg.run.seed))
        model.prototypes.copy_(F.normalize(torch.randn(model.prototypes.shape, generator=g), dim=1).to(model.prototypes))
    opt = b.optimizer
    if variant == "naive":
        o = cfg.optim
        opt = torch.optim.SGD(model.encoder_q.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    env = StepEnv(cfg_v, world, rank, b.env.amp_dtype, b.env.channels_last)
    return Setup(variant, model, b.q_net, opt, env, bn_splits)


def naive_step(model: MoPro, optimizer: torch.optim.Optimizer, x_q: torch.Tensor, x_k: torch.Tensor,
               target: torch.Tensor, *, epoch: int, step: int, cfg: PretrainConfig) -> torch.Tensor:
    """One MoPro step on one process, written plainly (see the module doc). Returns the trainer's stats layout."""
    m = cfg.mopro
    device = x_q.device
    cls_out, q = model.encoder_q(x_q)
    with torch.no_grad():
        for pk, pq in zip(model.encoder_k.parameters(), model.encoder_q.parameters()):
            pk.data = pk.data * m.moco_m + pq.data * (1.0 - m.moco_m)  # out of place: new tensors every step
        k, k_all = shuffled_keys(model, x_k, derive_seed("shuffle", cfg.run.seed, step), 1, 0)
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
        if m.mask_unseen_protos:  # the loss's mask spares the cleaned label (as mopro_step)
            logits_proto = proto_logits(q, protos, m.temperature, tgt)
    else:
        tgt, keep = target, torch.ones_like(target, dtype=torch.bool)
        relab = conf = torch.zeros_like(keep)
    model.enqueue(k_all)
    with torch.no_grad():
        model.prototypes.copy_(update_prototypes_sequential(model.prototypes, q.detach()[keep], tgt[keep], m.proto_m,
                                                            m.proto_norm))
    n_kept = int(keep.sum())
    loss_cls = kept_cross_entropy(cls_out, tgt, keep, max(n_kept, 1))
    loss_proto = kept_cross_entropy(logits_proto, tgt, keep, max(n_kept, 1)) if epoch >= m.proto_start_epoch else \
        torch.zeros((), device=device)
    loss = m.w_cls * loss_cls + m.w_inst * loss_inst + m.w_proto * loss_proto
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    acc = (logits_inst.argmax(1) == 0).sum()
    vals = (loss, loss_inst, loss_cls, loss_proto, acc, q.shape[0], n_kept, relab.sum(), conf.sum())
    return torch.tensor([float(v.detach()) if torch.is_tensor(v) else float(v) for v in vals], dtype=torch.float64)


def synthetic_batches(cfg: PretrainConfig, device: torch.device, local_batch: int, n: int = 2, seed: int = 0):
    """``n`` in-memory (x_q, x_k, target) batches of normalised-image statistics, made on the CPU with a fixed
    generator (identical for every variant) and moved to ``device``."""
    g = torch.Generator().manual_seed(derive_seed("bench-batches", seed))
    s = cfg.aug.image_size
    out = []
    for _ in range(n):
        x_q = torch.randn(local_batch, 3, s, s, generator=g)
        x_k = torch.randn(local_batch, 3, s, s, generator=g)
        y = torch.randint(0, cfg.model.num_class, (local_batch,), generator=g)
        out.append((x_q.to(device), x_k.to(device), y.to(device)))
    return out
