"""MoPro's noise-cleaning rule (paper Sec. 3.3), shared by the trainer and ``mopro-bench noise-clean``.

    s = alpha * softmax(classifier logits) + (1 - alpha) * softmax(prototype logits)
    if max_k s_k > threshold:          the label becomes argmax_k s_k          ("confident")
    kept  = s[original label] > 1 / num_class  or  confident
    the rest are out-of-distribution: no CE, no prototypical loss, no prototype update (instance loss only).

``relabelled`` counts the samples whose label actually changed (a confident sample whose argmax is its own label
keeps it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class CleanResult:
    target: torch.Tensor  # possibly corrected labels [B]
    kept: torch.Tensor  # bool [B]
    confident: torch.Tensor  # bool [B]: max score > threshold
    relabelled: torch.Tensor  # bool [B]: the label changed
    soft: torch.Tensor  # soft labels [B, C]


def soft_labels(cls_logits: torch.Tensor, proto_logits: torch.Tensor, alpha: float) -> torch.Tensor:
    dt = torch.promote_types(cls_logits.dtype, torch.float32)  # at least float32 (bf16 logits under autocast)
    return alpha * F.softmax(cls_logits.to(dt), dim=1) + (1 - alpha) * F.softmax(proto_logits.to(dt), dim=1)


@torch.no_grad()
def clean_labels(cls_logits: torch.Tensor, proto_logits: torch.Tensor, target: torch.Tensor, *, alpha: float,
                 threshold: float, num_class: int | None = None) -> CleanResult:
    soft = soft_labels(cls_logits, proto_logits, alpha)
    num_class = num_class or soft.shape[1]
    target = target.long()
    gt_score = soft.gather(1, target[:, None]).squeeze(1)
    max_score, hard = soft.max(1)
    confident = max_score > threshold
    new_target = torch.where(confident, hard, target)
    kept = (gt_score > 1.0 / num_class) | confident
    return CleanResult(new_target, kept, confident, new_target != target, soft)
