"""What the timm-built families share: a backbone is a timm model with no classifier whose ``forward`` is timm's
pre-logits feature, built from a ``cfg`` dict (recorded as ``config``) and named by it."""

from __future__ import annotations

from typing import Any

import torch


class TimmBackboneMixin:
    """Mixed in before the timm model class: ``self._init_backbone(cfg, feature_dim, arch)`` after the model's own
    ``__init__``; gives ``name``, ``config``, ``num_parameters`` and the pooled ``forward``."""

    supports_detection = False  # detectron2 has ResNet backbones only
    width = 1  # (the ResNet width multiplier; 1 for every other family)

    def _init_backbone(self, cfg: dict[str, Any], feature_dim: int, arch: str) -> None:
        self.cfg, self.feature_dim, self.arch = dict(cfg), int(feature_dim), arch

    @property
    def name(self) -> str:
        return self.arch

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.cfg)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled feature: timm's ``forward_head(..., pre_logits=True)`` (ViT: CLS token after the final norm;
        ConvNeXt: average pool through the head LayerNorm)."""
        return self.forward_head(self.forward_features(x), pre_logits=True)
