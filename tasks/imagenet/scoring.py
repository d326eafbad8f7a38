"""Per-image hits of the ImageNet tasks: :func:`topk_hits` (the ``torch.topk`` rule), :func:`per_image_record` (the
``details.per_image`` format ``mopro-bench compare`` reads), :func:`evaluate_hits` (a model on a dataset, sharded over
ranks, hits put back in dataset order), :class:`HitTrainer` (a :class:`~.finetune.SupervisedTrainer` keeping every
evaluation's hits) and :func:`linear_hits` (a linear head on cached features)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from mopro_bench.engine.precision import exact_fp32
from mopro_bench.engine.precision import precision_autocast as _autocast
from mopro_bench.errors import BenchError
from mopro_bench.io import sha256_lines
from mopro_bench.runtime import all_gather_cat
from mopro_bench.tasks.imagenet.finetune import SupervisedTrainer

KS = (1, 5)


def topk_hits(logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = KS) -> torch.Tensor:
    """``bool [N, len(ks)]``: whether each row's target is among its k highest logits -- the ``torch.topk`` rule of
    :func:`mopro_bench.metrics.classification.topk_correct` (same ties, k clipped to the number of classes)."""
    c = logits.shape[1]
    top = logits.topk(min(max(ks), c), dim=1).indices
    hit = top.eq(targets.to(top.device).view(-1, 1)).cumsum(dim=1).clamp_(max=1).bool()
    return torch.stack([hit[:, min(k, c) - 1] for k in ks], dim=1)


def per_image_record(ids: list[str], hits: np.ndarray, source: str) -> dict[str, Any]:
    """``details.per_image`` of ``hits`` (``[N, len(KS)]``, rows in the order of ``ids``), the format ``compare`` reads."""
    hits = np.asarray(hits, dtype=np.uint8)
    if hits.shape != (len(ids), len(KS)):
        raise ValueError(f"hits {hits.shape} do not match {len(ids)} ids")
    return {"ids_sha256": sha256_lines(list(ids)), "n": len(ids), "source": source,
            **{f"top{k}": {"correct": hits[:, j].tolist()} for j, k in enumerate(KS)}}


@dataclass
class HitEval:
    top1: float
    top5: float
    n: int
    hits: np.ndarray | None  # uint8 [n, len(KS)] in dataset order; None if the ranks' shards did not cover the set


@torch.no_grad()
def evaluate_hits(model: nn.Module, dataset: Dataset, device: torch.device, *, batch_size: int, workers: int = 0,
                  progress: bool = True, desc: str = "eval", precision: str = "fp32") -> HitEval:
    """Top-1/top-5 (percent) of ``model`` (eval mode) on ``dataset`` of ``(x, label, index)`` plus each image's hits.

    The same computation as :func:`mopro_bench.tasks.imagenet.finetune.evaluate_model` (shard ``rank::world``, ``precision`` as in
    training, channels_last on CUDA, ``torch.topk`` on float logits); the hits of all ranks are gathered and placed by the
    dataset index each item carries, so the vector is in dataset order whatever the sharding.
    """
    from tqdm.auto import tqdm

    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    was_training = model.training
    model.eval()
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    loader = DataLoader(Subset(dataset, list(range(rank, len(dataset), world))), batch_size=batch_size, shuffle=False,
                        num_workers=workers, pin_memory=device.type == "cuda")
    idx_parts, hit_parts = [torch.zeros(0, dtype=torch.long, device=device)], [torch.zeros(0, len(KS), dtype=torch.uint8,
                                                                                            device=device)]
    amp = _autocast(device, precision)
    for x, y, index in tqdm(loader, desc=desc, disable=not (progress and rank == 0), leave=False):
        x = x.to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.to(memory_format=torch.channels_last)
        with amp, exact_fp32(device, precision):
            logits = model(x)
        hit_parts.append(topk_hits(logits.float(), y.to(device)).to(torch.uint8))
        idx_parts.append(torch.as_tensor(index, dtype=torch.long, device=device))
    model.train(was_training)
    idx, hits = torch.cat(idx_parts), torch.cat(hit_parts)
    if world > 1:  # shards differ in length by at most one: pad, gather, drop the padding
        size = all_gather_cat(torch.tensor([idx.numel()], dtype=torch.long, device=device))
        pad = int(size.max()) - idx.numel()
        idx = all_gather_cat(torch.cat([idx, torch.full((pad,), -1, dtype=torch.long, device=device)]))
        hits = all_gather_cat(torch.cat([hits, torch.zeros(pad, len(KS), dtype=torch.uint8, device=device)]))
        keep = idx >= 0
        idx, hits = idx[keep], hits[keep]
    idx_np, hits_np = idx.cpu().numpy(), hits.cpu().numpy()
    n = len(idx_np)
    if n == 0:
        raise BenchError("the evaluation set is empty", "check the val split of the dataset")
    counts = hits_np.sum(0)
    ordered: np.ndarray | None = None
    if n == len(dataset) and np.array_equal(np.sort(idx_np), np.arange(n)):
        ordered = np.empty_like(hits_np)
        ordered[idx_np] = hits_np
    return HitEval(top1=100.0 * float(counts[0]) / n, top5=100.0 * float(counts[1]) / n, n=n, hits=ordered)


class HitTrainer(SupervisedTrainer):
    """:class:`SupervisedTrainer` whose evaluations also keep each val image's hits (:func:`evaluate_hits`), in
    order (``evals``); ``last`` is the latest evaluation."""

    last: HitEval | None = None

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.evals: list[HitEval] = []

    def _evaluate(self, model: nn.Module, device: torch.device, desc: str) -> dict[str, float]:
        bs = self.eval_batch_size or self.ctx.batch_size or (256 if device.type == "cuda" else 64)
        self.last = evaluate_hits(model, self.eval_set, device, batch_size=bs, workers=self.ctx.workers,
                                  progress=self.ctx.progress, desc=desc, precision=self.cfg.precision)
        self.evals.append(self.last)
        return {"top1": self.last.top1, "top5": self.last.top5, "eval_n": self.last.n}


@torch.no_grad()
def linear_hits(weight: torch.Tensor, bias: torch.Tensor, feats: np.ndarray, labels: list[int],
                 device: torch.device | str = "cpu", chunk: int = 8192) -> np.ndarray:
    """uint8 ``[N, len(KS)]`` hits of the linear classifier ``feats @ weight.T + bias``."""
    w, b = weight.float().to(device), bias.float().to(device)
    y = torch.as_tensor(labels, dtype=torch.long)
    out = []
    for s in range(0, feats.shape[0], chunk):
        x = torch.from_numpy(np.ascontiguousarray(feats[s:s + chunk])).float().to(device)
        out.append(topk_hits(x @ w.T + b, y[s:s + chunk]).to(torch.uint8).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, len(KS)), np.uint8)
