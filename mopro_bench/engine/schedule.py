"""Learning-rate schedules, one formula each, as the three training loops use them.

Every function is the exact expression its caller used before the engine existed (same operation order, so the
same floats): pretraining and cRT set the LR once per epoch (step or cosine), finetuning uses the step schedule per
parameter group, the linear head on cached features a per-step cosine to 0, the ViT fine-tuning recipe (iBOT / DeiT)
timm's per-epoch warm-up cosine (``warmup_cosine_lr``). ``warmup_factor`` is detectron2's linear
warm-up, written down for completeness (the detection task passes its warm-up to detectron2 itself).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def step_lr(base: float, epoch: int, milestones: Iterable[int], gamma: float) -> float:
    """``base * gamma ** #{m in milestones : epoch >= m}`` (0-based ``epoch``)."""
    return base * gamma ** sum(epoch >= m for m in milestones)


def cosine_lr(base: float, t: float, total: float) -> float:
    """Half-cosine from ``base`` (t = 0) to 0 (t = total): ``base * 0.5 * (1 + cos(pi t / total))``."""
    return base * 0.5 * (1.0 + math.cos(math.pi * t / total))


def warmup_cosine_lr(base: float, t: int, *, epochs: int, warmup_epochs: int, warmup_lr: float, min_lr: float) -> float:
    """timm's ``CosineLRScheduler`` per epoch (``t_in_epochs``, one cycle, no prefix), as DeiT-style scripts build it
    with ``create_scheduler``: ``warmup_lr + t (base - warmup_lr) / warmup_epochs`` for ``t < warmup_epochs``, then
    ``min_lr + (base - min_lr) (1 + cos(pi t / epochs)) / 2``, and ``min_lr`` from ``t >= epochs`` on (the warm-up is part
    of the cosine's span, not a prefix)."""
    if t < warmup_epochs:
        return warmup_lr + t * (base - warmup_lr) / warmup_epochs
    if t >= epochs:
        return min_lr
    return min_lr + 0.5 * (base - min_lr) * (1.0 + math.cos(math.pi * t / epochs))


def constant_lr(base: float) -> float:
    return base


def epoch_lr(schedule: str, base: float, epoch: int, *, epochs: int, milestones: Iterable[int] = (),
             gamma: float = 0.1) -> float:
    """The LR of an epoch under ``schedule``: ``cos``/``cosine`` (over ``epochs``), ``step``, ``const``/``constant``.

    Unknown names fall back to ``step`` (the pretraining config validates its schedule before this is called)."""
    if schedule in ("cos", "cosine"):
        return cosine_lr(base, epoch, epochs)
    if schedule in ("const", "constant"):
        return constant_lr(base)
    return step_lr(base, epoch, milestones, gamma)


def warmup_factor(it: int, warmup_iters: int, factor: float) -> float:
    """Linear warm-up multiplier (detectron2's ``WarmupMultiStepLR``): ``factor`` at it = 0 rising to 1 at
    ``warmup_iters``; 1 afterwards."""
    if it >= warmup_iters:
        return 1.0
    alpha = it / warmup_iters
    return factor * (1 - alpha) + alpha


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's LR to ``lr``."""
    for g in optimizer.param_groups:
        g["lr"] = lr
