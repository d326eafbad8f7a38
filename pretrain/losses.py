"""MoPro's three losses, written out so a test can compare them with a slow re-derivation.

* instance contrastive loss (InfoNCE, MoCo-style): logits ``[q.k, q.queue] / T``, target index 0;
* prototypical contrastive loss: cross-entropy of ``q . prototypes^T / T`` against the (cleaned) label;
* cross-entropy of the classifier against the (cleaned) label.

The two label losses are averaged over the samples kept by noise cleaning in the *global* batch: each process
sums over its kept samples and divides by ``n_kept_global / world_size``, so that DDP's gradient averaging yields
exactly the global-batch mean (the reference divides by the local kept count instead, which is the same when every
process keeps the same number of samples -- always before cleaning starts -- and a slightly different weighting
otherwise). A batch in which nothing is kept contributes 0 (not NaN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def instance_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """[B, 1 + K]: positive logit (q . k) first, then q against every queued key ([low_dim, K])."""
    pos = (q * k).sum(1, keepdim=True)
    neg = q @ queue
    return torch.cat([pos, neg], dim=1) / temperature


def instance_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = instance_logits(q, k, queue, temperature)
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def proto_logits(q: torch.Tensor, prototypes: torch.Tensor, temperature: float,
                 target: torch.Tensor | None = None) -> torch.Tensor:
    """``q . prototypes^T / T``. With ``target`` given, classes whose prototype is still all-zero (no sample of the
    class seen yet) are left out (logit -inf), except each sample's own label, which keeps the reference's logit 0.

    The reference keeps unseen classes at logit 0. On WebVision every class has a prototype after the first epoch,
    before the prototypical loss starts, so both agree; on data that uses a few of the ``num_class`` labels
    (generated sets, WebVision subsets) the reference's hundreds of zero logits reward moving every embedding
    towards the mean of the real prototypes, which collapses the embedding. ``mopro.mask_unseen_protos`` chooses.
    """
    logits = q @ prototypes.t() / temperature
    if target is not None:
        unseen = (prototypes == 0).all(dim=1)
        if bool(unseen.any()):
            mask = unseen[None, :].expand_as(logits).clone()
            mask[torch.arange(len(target), device=logits.device), target] = False
            logits = logits.masked_fill(mask, float("-inf"))
    return logits


def kept_cross_entropy(logits: torch.Tensor, target: torch.Tensor, keep: torch.Tensor, denom: float) -> torch.Tensor:
    """sum of CE over kept samples / denom (denom = global kept count / world size, at least 1 / world size)."""
    ce = F.cross_entropy(logits, target.clamp(min=0), reduction="none")
    return (ce * keep.to(ce.dtype)).sum() / denom
