"""ConvNeXt (family ``convnext``) on timm's :class:`~timm.models.convnext.ConvNeXt`, parameter names timm's
(``stem.0``, ``stages.i.downsample``, ``stages.i.blocks.j.{conv_dw,norm,mlp.fc1,mlp.fc2,gamma}``, ``head.norm``;
ConvNeXt V2's ``mlp.grn``). Facebook's own layout (``downsample_layers``, ``stages.i.j.dwconv``, ``norm``, ``head``) is
renamed to these by the checkpoint adapter. Depths, widths, layer scale, GRN and the MLP's kind (``nn.Linear`` on
channels-last, or timm's 1x1 convolutions -- ``conv_mlp``, timm's atto..nano sizes; the same function) are read from
the shapes.

``forward`` gives timm's pre-logits feature: the global average pool of the last stage through the head's LayerNorm
(``head.norm``) -- the feature the checkpoint's own classifier reads, as for a ResNet the pooled res5 output.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from timm.models.convnext import ConvNeXt

from mopro_bench.backbones.timm_base import TimmBackboneMixin
from mopro_bench.errors import BenchError

# (depths, dims) -> name (ConvNeXt paper Table 9 / timm convnext_*; V2 sizes from the ConvNeXt V2 paper, use_grn)
SIZES: dict[tuple[tuple[int, ...], tuple[int, ...]], str] = {
    ((3, 3, 9, 3), (96, 192, 384, 768)): "tiny",
    ((3, 3, 27, 3), (96, 192, 384, 768)): "small",
    ((3, 3, 27, 3), (128, 256, 512, 1024)): "base",
    ((3, 3, 27, 3), (192, 384, 768, 1536)): "large",
    ((3, 3, 27, 3), (256, 512, 1024, 2048)): "xlarge",
    ((2, 2, 6, 2), (40, 80, 160, 320)): "atto",
    ((2, 2, 6, 2), (48, 96, 192, 384)): "femto",
    ((2, 2, 6, 2), (64, 128, 256, 512)): "pico",
    ((2, 2, 8, 2), (80, 160, 320, 640)): "nano",
    ((3, 3, 27, 3), (352, 704, 1408, 2816)): "huge",
}
# timm builds these sizes with 1x1-convolution MLPs (``conv_mlp=True``: fc1/fc2 weights [out, in, 1, 1]; timm
# convnext.py convnext_atto..convnext_nano, convnextv2_atto..convnextv2_nano)
CONV_MLP_SIZES = ("atto", "femto", "pico", "nano")
CONVNEXT_ROOTS = ("stem", "stages")  # and head.norm (the head's LayerNorm is part of the trunk; head.fc is the classifier)
_BLOCK = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.")


def arch_name(cfg: dict[str, Any]) -> str:
    size = SIZES.get((tuple(cfg["depths"]), tuple(cfg["dims"])))
    if size is None:
        size = "d" + "-".join(map(str, cfg["depths"])) + "_w" + "-".join(map(str, cfg["dims"]))
    return f"convnext{'v2' if cfg['use_grn'] else ''}_{size}"


def parse_convnext_arch(spec: str) -> dict[str, Any] | None:
    """``convnext_tiny`` / ``convnextv2_tiny`` -> a config, or None."""
    m = re.fullmatch(r"convnext(v2)?_([a-z]+)", spec.lower())
    if not m:
        return None
    for (depths, dims), size in SIZES.items():
        if size == m.group(2):
            v2 = bool(m.group(1))
            return {"depths": list(depths), "dims": list(dims), "use_grn": v2, "ls_init_value": None if v2 else 1e-6,
                    "conv_mlp": size in CONV_MLP_SIZES}
    return None


def describe_convnext(trunk: dict[str, torch.Tensor]) -> dict[str, Any]:
    stem = trunk.get("stem.0.weight")
    if stem is None or stem.ndim != 4 or stem.shape[1] != 3 or tuple(stem.shape[2:]) != (4, 4):
        raise BenchError("the ConvNeXt trunk has no 4x4 patchify stem stem.0.weight [C, 3, 4, 4]",
                         "pass a complete ConvNeXt checkpoint")
    depths = [0, 0, 0, 0]
    for k in trunk:
        m = _BLOCK.match(k)
        if m and int(m.group(1)) < 4:
            depths[int(m.group(1))] = max(depths[int(m.group(1))], int(m.group(2)) + 1)
    if min(depths) < 1:
        raise BenchError(f"the ConvNeXt trunk has block counts {depths}: a stage is empty", "pass a complete checkpoint")
    dims = [int(trunk[f"stages.{i}.blocks.0.conv_dw.weight"].shape[0]) if f"stages.{i}.blocks.0.conv_dw.weight" in trunk
            else 0 for i in range(4)]
    if 0 in dims:
        raise BenchError("the ConvNeXt trunk lacks a stage's first depth-wise convolution (conv_dw)",
                         "pass a complete ConvNeXt checkpoint")
    fc1 = trunk.get("stages.0.blocks.0.mlp.fc1.weight")
    return {"depths": depths, "dims": dims, "use_grn": "stages.0.blocks.0.mlp.grn.weight" in trunk,
            "ls_init_value": 1e-6 if "stages.0.blocks.0.gamma" in trunk else None,
            "conv_mlp": fc1 is not None and fc1.ndim == 4}


class ConvNeXtBackbone(TimmBackboneMixin, ConvNeXt):
    """timm's ConvNeXt with no classifier; ``forward`` = global average pool -> head LayerNorm."""

    family = "convnext"
    feature = "global average pool of the last stage through the head LayerNorm (timm pre-logits)"

    def __init__(self, cfg: dict[str, Any]):
        cfg = dict(cfg)
        cfg.setdefault("conv_mlp", False)
        super().__init__(depths=tuple(cfg["depths"]), dims=tuple(cfg["dims"]), use_grn=cfg["use_grn"],
                         ls_init_value=cfg["ls_init_value"], conv_mlp=cfg["conv_mlp"], num_classes=0)
        self._init_backbone(cfg, cfg["dims"][-1], arch_name(cfg))


def build_convnext(cfg: dict[str, Any]) -> ConvNeXtBackbone:
    return ConvNeXtBackbone(cfg)
