"""Momentum prototypes: the reference's per-sample loop and an equivalent vectorised update.

The reference implementation walks the globally gathered batch in order::

    for z, y in zip(feats, labels):
        P[y] = m * P[y] + (1 - m) * z
    P = normalize(P)              # once, after the batch ("batch" mode, the default)

while the paper's Eq. (5) normalises after every sample (``P[y] = normalize(m * P[y] + (1 - m) * z)``, "sample" mode).

Vectorised "batch" mode, closed form: if class c receives samples z_1..z_n (in batch order), the loop leaves
``m^n P_c + (1 - m) * sum_j m^(n-j) z_j``. So each sample gets the weight ``(1 - m) m^(n_c - 1 - r_i)`` where r_i is
its 0-based rank among the samples of its class, one ``index_add_`` accumulates them, and untouched classes keep
``m^0 = 1``. The order within a class matters only through these weights.

Vectorised "sample" mode: the per-sample normalisation makes the result depend on the running norms, so there is
no weight-only closed form; instead the update is a scan over the within-class rank r = 0, 1, ..., max_c n_c - 1,
each round updating *all* classes that have an r-th sample at once (at most one sample per class per round). The
number of rounds is the largest per-class count in the batch (a handful for 1000 classes), not the batch size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def update_prototypes_sequential(protos: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor, m: float,
                                 norm: str = "batch") -> torch.Tensor:
    """The obvious per-sample loop (reference semantics). Returns a new tensor."""
    p = protos.clone()
    for z, y in zip(feats, labels.tolist()):
        p[y] = p[y] * m + (1 - m) * z
        if norm == "sample":
            p[y] = F.normalize(p[y], dim=0)
    if norm == "batch":
        p = F.normalize(p, dim=1)
    return p


def within_class_rank(labels: torch.Tensor, num_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rank of each sample among the samples of its class in batch order, per-class counts)."""
    n = labels.numel()
    counts = torch.bincount(labels, minlength=num_class)
    order = torch.argsort(labels, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(labels)
    rank[order] = torch.arange(n, device=labels.device) - starts[labels[order]]
    return rank, counts


def update_prototypes(protos: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor, m: float,
                      norm: str = "batch") -> torch.Tensor:
    """Vectorised equivalent of :func:`update_prototypes_sequential`. Returns a new tensor."""
    labels = labels.long()
    c = protos.shape[0]
    if labels.numel() == 0:
        return F.normalize(protos, dim=1) if norm == "batch" else protos.clone()
    rank, counts = within_class_rank(labels, c)
    if norm == "batch":
        exps = (counts[labels] - 1 - rank).to(protos.dtype)
        w = (1 - m) * torch.pow(torch.as_tensor(m, dtype=protos.dtype, device=protos.device), exps)
        out = protos * torch.pow(torch.as_tensor(m, dtype=protos.dtype, device=protos.device), counts.to(protos.dtype))[:, None]
        out.index_add_(0, labels, feats * w[:, None])
        return F.normalize(out, dim=1)
    if norm != "sample":
        raise ValueError(f"unknown prototype normalisation {norm!r}")
    out = protos.clone()
    for r in range(int(counts.max())):
        sel = rank == r
        ys = labels[sel]
        out[ys] = F.normalize(out[ys] * m + (1 - m) * feats[sel], dim=1)
    return out
