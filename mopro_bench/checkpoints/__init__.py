"""Checkpoint import: any supported file in, a verified :class:`Backbone` out, heads kept aside.

Public API (used by every task)::

    ck = load_checkpoint("path/to/file.pth.tar")      # or "random:resnet50", "random:resnet50x2"
    ck.backbone            # Backbone with 100% of its parameters and buffers loaded and shape-checked
    ck.heads               # {"classifier": Head(...), "projection": Head(...)}  (may be empty)
    ck.classifier()        # nn.Linear with the checkpoint's classifier, or None
    ck.sha256, ck.format, ck.arch, ck.width, ck.preprocess, ck.name, ck.path
    ck.record()            # the "checkpoint" block of a result record
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mopro_bench.backbones import Backbone, Preprocess, build_backbone, parse_arch
from mopro_bench.errors import BenchError

# class spaces a classifier head can be in
CLASS_SPACES = ("imagenet1k", "webvision1k", "webvision5k", "custom")
# WebVision 1.0's 1000 classes are ImageNet-1k's, in sorted-wnid order: a webvision1k head is an imagenet1k head.
IMAGENET_COMPATIBLE = ("imagenet1k", "webvision1k")


@dataclass
class Head:
    """A head kept aside from the backbone: its tensors and what they mean."""

    kind: str  # "classifier" | "projection" | "prototypes" | ...
    state_dict: dict[str, torch.Tensor]
    num_classes: int | None = None
    class_space: str | None = None  # one of CLASS_SPACES for classifiers
    description: str = ""

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "num_classes": self.num_classes,
            "class_space": self.class_space,
            "shapes": {k: list(v.shape) for k, v in self.state_dict.items()},
        }


@dataclass
class LoadedCheckpoint:
    backbone: Backbone
    format: str
    arch: str
    width: int
    sha256: str | None
    path: str
    name: str
    heads: dict[str, Head] = field(default_factory=dict)
    preprocess: Preprocess = field(default_factory=Preprocess)
    meta: dict[str, Any] = field(default_factory=dict)
    coverage: dict[str, Any] = field(default_factory=dict)

    def classifier(self, class_space: tuple[str, ...] | None = None) -> nn.Linear | None:
        """The classifier head as an ``nn.Linear`` (optionally only if its class space is in ``class_space``)."""
        head = self.heads.get("classifier")
        if head is None:
            return None
        if class_space is not None and head.class_space not in class_space:
            return None
        w = head.state_dict["weight"]
        b = head.state_dict.get("bias")
        lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
        with torch.no_grad():
            lin.weight.copy_(w)
            if b is not None:
                lin.bias.copy_(b)
        return lin

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "sha256": self.sha256,
            "format": self.format,
            "arch": self.arch,
            "width": self.width,
            "heads": {k: h.summary() for k, h in self.heads.items()},
            "preprocess": {
                "mean": list(self.preprocess.mean),
                "std": list(self.preprocess.std),
                "channel_order": self.preprocess.channel_order,
                "scale": self.preprocess.scale,
            },
        }


def load_random(spec: str, seed: int = 0) -> LoadedCheckpoint:
    """``random:ARCH`` -- an explicitly untrained baseline (torchvision init, seeded)."""
    arch, width = parse_arch(spec.split(":", 1)[1])
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        bb = build_backbone(arch, width)
    finally:
        torch.random.set_rng_state(gen_state)
    return LoadedCheckpoint(
        backbone=bb, format="random", arch=arch, width=width, sha256=None, path=spec, name=spec,
        coverage={"loaded": 0, "expected": len(bb.state_dict()), "note": "untrained (random init)"},
    )


def load_checkpoint(spec: str | Path, *, arch: str | None = None, trust: bool = False, name: str | None = None,
                    seed: int = 0) -> LoadedCheckpoint:
    """Load ``spec`` (a file, or ``random:ARCH``) and verify the backbone. See :mod:`.adapters`."""
    spec = str(spec)
    if spec.startswith("random:"):
        ck = load_random(spec, seed=seed)
    else:
        from mopro_bench.checkpoints.adapters import load_file

        ck = load_file(Path(spec), arch=arch, trust=trust)
    if name:
        ck.name = name
    return ck


__all__ = ["Head", "LoadedCheckpoint", "load_checkpoint", "CLASS_SPACES", "IMAGENET_COMPATIBLE", "BenchError"]
