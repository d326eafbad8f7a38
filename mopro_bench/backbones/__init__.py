"""Backbones: the interface every task relies on, and the families that implement it.

A backbone is an ``nn.Module`` with

==========================  ==============================================================================================
``family``                  ``resnet`` | ``vit`` | ``convnext`` (:data:`FAMILIES`); protocols name the families they accept
``name`` / ``arch``         e.g. ``resnet50x2``, ``vit_small_patch16_224``, ``convnext_tiny``
``config``                  what builds the network again (recorded with the checkpoint)
``feature_dim``             size of the pooled feature
``feature``                 what the pooled feature is, in words (recorded in results)
``forward(x)``              the pooled feature ``[N, feature_dim]``: ResNet -- global average pool of res5; ViT -- CLS
                            token after the final LayerNorm; ConvNeXt -- average pool through the head LayerNorm
``supports_detection``      whether detectron2 has this backbone (only ResNets: ``coco_maskrcnn`` exports them)
``num_parameters``
==========================  ==============================================================================================

plus family extras (ResNet: ``forward_features`` stage maps, ``stage_channels``; ViT: ``block_outputs`` /
``last_blocks_feature`` for DINO's linear probe). A checkpoint's classifier head (class space, size) is kept beside the
backbone by :mod:`mopro_bench.checkpoints`, and the preprocessing its weights expect is a :class:`Preprocess`.

The ResNets are this package's own (:mod:`.resnet`, torchvision names); ViT and ConvNeXt are timm's model definitions
(:mod:`.vit`, :mod:`.convnext`), built from a checkpoint's shapes, never downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mopro_bench.backbones.resnet import (
    ARCHS,
    ROOTS,
    STAGES,
    WIDTHS,
    Backbone,
    arch_for_blocks,
    build_backbone,
    check_arch,
    feature_dim,
    parse_arch,
)
from mopro_bench.errors import BenchError

FAMILIES = ("resnet", "vit", "convnext")


@dataclass(frozen=True)
class Preprocess:
    """What a checkpoint's network expects as input.

    ``mean``/``std``/``channel_order``/``scale`` are applied to every image (they define the input); ``interpolation``,
    ``input_size`` and ``crop_pct`` say how the weights were evaluated by their authors (timm's ``pretrained_cfg``
    terms) and are recorded -- the protocol, not the checkpoint, decides the resize and crop of a benchmark."""

    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    channel_order: str = "RGB"  # or "BGR"
    scale: float = 1.0  # pixel range is [0, scale] before normalisation (1 for torchvision, 255 for caffe-style)
    interpolation: str = "bilinear"  # bilinear (torchvision ResNets, MoCo v3) | bicubic (DINO, MAE, DINOv2, ConvNeXt)
    input_size: int = 224  # the crop the weights were evaluated at
    crop_pct: float = 0.875  # crop / resize (224 / 256)

    def normalisation(self) -> dict[str, Any]:
        """The part that changes the input tensor (feature-cache keys hold this)."""
        return {"mean": list(self.mean), "std": list(self.std), "channel_order": self.channel_order, "scale": self.scale}

    def record(self) -> dict[str, Any]:
        return {**self.normalisation(), "interpolation": self.interpolation, "input_size": self.input_size,
                "crop_pct": self.crop_pct}


# the preprocessing the ViT/ConvNeXt papers' evaluations use: ImageNet mean/std, Resize 256 (bicubic) + CenterCrop 224
# (dino/eval_linear.py `pth_transforms.Resize(256, interpolation=3)`; ConvNeXt main.py crop_pct 224/256 bicubic)
BICUBIC_PREPROCESS = Preprocess(interpolation="bicubic")


def trunk_family(trunk: dict[str, torch.Tensor]) -> str:
    """The family a mapped trunk (timm / torchvision names) belongs to, from its keys."""
    if "patch_embed.proj.weight" in trunk:
        return "vit"
    if "stem.0.weight" in trunk and any(k.startswith("stages.") for k in trunk):
        return "convnext"
    return "resnet"


def is_trunk_key(key: str) -> bool:
    """A key that belongs to some family's trunk (ResNet ``conv1..layer4``, ViT ``cls_token..norm``, ConvNeXt ``stem``,
    ``stages``, ``head.norm``); heads (``fc``, ``head.fc``, ``head``) are not."""
    from mopro_bench.backbones.convnext import CONVNEXT_ROOTS
    from mopro_bench.backbones.vit import VIT_ROOTS

    root = key.split(".", 1)[0]
    return root in ROOTS or root in VIT_ROOTS or root in CONVNEXT_ROOTS or key.startswith("head.norm.")


def parse_any_arch(spec: str) -> tuple[str, dict[str, Any]]:
    """``resnet50x2`` / ``vit_small_patch16_224`` / ``convnext_tiny`` -> (family, config); BenchError otherwise."""
    from mopro_bench.backbones.convnext import parse_convnext_arch
    from mopro_bench.backbones.vit import parse_vit_arch

    spec = spec.strip().lower()
    vit = parse_vit_arch(spec)
    if vit is not None:
        return "vit", vit
    cnx = parse_convnext_arch(spec)
    if cnx is not None:
        return "convnext", cnx
    arch, width = parse_arch(spec)
    check_arch(arch, width)
    return "resnet", {"arch": arch, "width": width}


def build_family(family: str, config: dict[str, Any]) -> nn.Module:
    """A backbone of ``family`` from its ``config`` (a :func:`parse_any_arch` / trunk description result)."""
    if family == "vit":
        from mopro_bench.backbones.vit import build_vit

        return build_vit(config)
    if family == "convnext":
        from mopro_bench.backbones.convnext import build_convnext

        return build_convnext(config)
    if family == "resnet":
        return build_backbone(config["arch"], config.get("width", 1), stride_in_1x1=config.get("stride_in_1x1", False),
                              wide_stem=config.get("wide_stem", True))
    raise BenchError(f"unknown backbone family {family!r}", "use one of: " + ", ".join(FAMILIES))


def family_of(module: nn.Module) -> str:
    """A backbone's family (modules without the attribute -- plug-ins' own trunks -- count as ResNets)."""
    return getattr(module, "family", "resnet")


def default_preprocess(family: str) -> Preprocess:
    return Preprocess() if family == "resnet" else BICUBIC_PREPROCESS


__all__ = ["ARCHS", "STAGES", "WIDTHS", "Backbone", "BICUBIC_PREPROCESS", "FAMILIES", "Preprocess",
           "arch_for_blocks", "build_backbone", "build_family", "check_arch", "default_preprocess", "family_of",
           "feature_dim", "is_trunk_key", "parse_any_arch", "parse_arch", "trunk_family"]
