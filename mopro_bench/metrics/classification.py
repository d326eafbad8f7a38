"""Classification metrics: top-k accuracy (percent), streamed over batches and summed over ranks.

``topk_correct`` counts, for each k, the samples whose label is among the k highest-scoring classes (``torch.topk``;
exact ties between scores are broken as torch breaks them). ``k`` larger than the number of classes is clipped to it, so
top-5 of a 3-way classifier is 100%. Labels outside ``[0, C)`` are an error (they would silently count as wrong).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def topk_correct(logits, targets, ks: Sequence[int] = (1, 5)) -> dict[int, int]:
    """``{k: number of rows whose target is in the row's top-k}`` for ``logits [N, C]`` and ``targets [N]``."""
    logits, targets = _as_tensor(logits), _as_tensor(targets).long()
    if logits.ndim != 2 or targets.ndim != 1 or logits.shape[0] != targets.shape[0]:
        raise ValueError(f"expected logits [N, C] and targets [N], got {tuple(logits.shape)} and {tuple(targets.shape)}")
    n, c = logits.shape
    if n == 0:
        return {int(k): 0 for k in ks}
    if int(targets.min()) < 0 or int(targets.max()) >= c:
        raise ValueError(f"targets must lie in [0, {c}); got range [{int(targets.min())}, {int(targets.max())}]")
    kmax = min(max(ks), c)
    top = logits.topk(kmax, dim=1).indices  # [N, kmax], best first
    hit = top.eq(targets.to(top.device).view(-1, 1))  # at most one True per row
    cum = hit.cumsum(dim=1).clamp_(max=1)
    return {int(k): int(cum[:, min(k, c) - 1].sum()) for k in ks}


def topk_accuracy(logits, targets, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """``{"top1": %, "top5": %}`` (percent) of ``logits [N, C]`` against ``targets [N]``."""
    n = int(_as_tensor(targets).shape[0])
    if n == 0:
        raise ValueError("top-k accuracy of an empty set")
    counts = topk_correct(logits, targets, ks)
    return {f"top{k}": 100.0 * counts[k] / n for k in ks}


def mean_per_class_accuracy(logits, targets) -> float:
    """Top-1 accuracy averaged over the classes present in ``targets`` (percent)."""
    logits, targets = _as_tensor(logits), _as_tensor(targets).long()
    pred = logits.argmax(dim=1).cpu()
    targets = targets.cpu()
    accs = [float((pred[targets == c] == c).float().mean()) for c in torch.unique(targets).tolist()]
    if not accs:
        raise ValueError("mean per-class accuracy of an empty set")
    return 100.0 * float(np.mean(accs))


class TopKMeter:
    """Accumulate top-k hit counts over batches; :meth:`reduce` sums them over ranks (torch.distributed)."""

    def __init__(self, ks: Sequence[int] = (1, 5)):
        self.ks = tuple(int(k) for k in ks)
        self.correct = {k: 0 for k in self.ks}
        self.n = 0

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        for k, v in topk_correct(logits, targets, self.ks).items():
            self.correct[k] += v
        self.n += int(targets.shape[0])

    def reduce(self, device: torch.device | None = None) -> TopKMeter:
        """Sum the counts over all ranks (no-op in a world of one). Returns ``self``."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            t = torch.tensor([self.n, *(self.correct[k] for k in self.ks)], dtype=torch.float64, device=device)
            dist.all_reduce(t)
            vals = [int(round(v)) for v in t.tolist()]
            self.n, self.correct = vals[0], dict(zip(self.ks, vals[1:]))
        return self

    def result(self) -> dict[str, float]:
        if self.n == 0:
            raise ValueError("top-k accuracy of an empty set")
        return {f"top{k}": 100.0 * self.correct[k] / self.n for k in self.ks}
