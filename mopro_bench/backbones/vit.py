"""Vision Transformers (family ``vit``) on timm's :class:`~timm.models.vision_transformer.VisionTransformer`.

The parameter names are timm's, which are also DINO's, MoCo v3's, MAE's and DINOv2's own (``cls_token``,
``pos_embed``, ``patch_embed.proj``, ``blocks.N.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.fc1,mlp.fc2,ls2.gamma}``,
``norm``; DINOv2's ``register_tokens`` are timm's ``reg_token``). A checkpoint's configuration is read from its shapes
(:func:`describe_vit`), except the number of attention heads, which no shape shows: it comes from the standard size
table (:data:`SIZES`: ViT-S 6 heads as DINO and timm, ViT-B 12, ...) unless the format adapter knows better (MoCo v3's
``vit_small`` has 12 heads, ``moco-v3/vits.py``).

``forward`` gives the **CLS token after the final LayerNorm** -- the feature DINO's k-NN / linear evaluation
(``dino/eval_linear.py``, ``n_last_blocks=1``) and MoCo v3's linear probe (``moco-v3/main_lincls.py``, timm head on the
token) take. :meth:`VisionTransformerBackbone.last_blocks_feature` gives DINO's linear-probe feature (CLS tokens of the
last ``n`` blocks, each through the final norm, concatenated; optionally interleaved with the mean patch token).

Position embeddings are stored at the checkpoint's own grid (``img_size`` = grid x patch, e.g. 518 for DINOv2) and
resampled on the fly to the input's grid by timm (bicubic, antialiased), so any crop size runs and a crop at the
native resolution uses them unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer

from mopro_bench.backbones.timm_base import TimmBackboneMixin
from mopro_bench.errors import BenchError

# embed_dim -> (size name, standard depth, heads)  (ViT paper Table 1; DeiT for tiny/small; timm's vit_* definitions)
SIZES: dict[int, tuple[str, int, int]] = {
    192: ("tiny", 12, 3),
    384: ("small", 12, 6),
    768: ("base", 12, 12),
    1024: ("large", 24, 16),
    1280: ("huge", 32, 16),
}
VIT_ROOTS = ("cls_token", "pos_embed", "patch_embed", "blocks", "norm", "reg_token", "norm_pre")


def arch_name(cfg: dict[str, Any]) -> str:
    """``vit_small_patch16_224``, ``vit_base_patch14_reg4_518``: size, patch, registers, native resolution."""
    size = SIZES.get(cfg["embed_dim"], (f"d{cfg['embed_dim']}",))[0]
    if cfg["embed_dim"] in SIZES and SIZES[cfg["embed_dim"]][1] != cfg["depth"]:
        size = f"{size}{cfg['depth']}"
    reg = f"_reg{cfg['reg_tokens']}" if cfg.get("reg_tokens") else ""
    return f"vit_{size}_patch{cfg['patch_size']}{reg}_{cfg['img_size']}"


def parse_vit_arch(spec: str) -> dict[str, Any] | None:
    """``vit_small_patch16_224`` (also without the resolution, which is then 224) -> a config, or None."""
    parts = spec.lower().split("_")
    if len(parts) < 3 or parts[0] != "vit" or not parts[2].startswith("patch") or not parts[2][5:].isdigit():
        return None
    by_name = {v[0]: (d, v[1], v[2]) for d, v in SIZES.items()}
    if parts[1] not in by_name:
        return None
    dim, depth, heads = by_name[parts[1]]
    cfg = {"embed_dim": dim, "depth": depth, "num_heads": heads, "patch_size": int(parts[2][5:]), "img_size": 224,
           "mlp_ratio": 4.0, "qkv_bias": True, "init_values": None, "reg_tokens": 0}
    for p in parts[3:]:
        if p.startswith("reg") and p[3:].isdigit():
            cfg["reg_tokens"] = int(p[3:])
        elif p.isdigit():
            cfg["img_size"] = int(p)
        elif p == "dinov2":
            cfg.update(img_size=518, init_values=1e-5)
        else:
            return None
    return cfg


def describe_vit(trunk: dict[str, torch.Tensor], num_heads: int | None = None) -> dict[str, Any]:
    """The timm configuration a ViT trunk's shapes imply (``num_heads``: from the adapter, else :data:`SIZES`)."""
    w = trunk.get("patch_embed.proj.weight")
    if w is None or w.ndim != 4 or w.shape[1] != 3 or w.shape[2] != w.shape[3]:
        raise BenchError("the ViT trunk has no square patch embedding patch_embed.proj.weight [D, 3, p, p]",
                         "pass a complete ViT checkpoint")
    if "cls_token" not in trunk:
        raise BenchError("the ViT has no cls_token: the protocols take the CLS token (DINO, MoCo v3)",
                         "use a ViT with a class token")
    if "fc_norm.weight" in trunk:
        raise BenchError("the ViT has fc_norm (a global-average-pooled classifier, e.g. MAE fine-tuned): the protocols "
                         "take the CLS token after the final norm", "use the pretrained (not fine-tuned) checkpoint")
    swiglu = [k for k in trunk if ".mlp.w12." in k or ".mlp.w3." in k]
    if swiglu:
        raise BenchError(f"the ViT has SwiGLU MLPs ({swiglu[0]}; DINOv2 ViT-g) which this suite does not build",
                         "use a ViT-S/B/L checkpoint")
    dim, patch = int(w.shape[0]), int(w.shape[2])
    depth = 1 + max((int(k.split(".")[1]) for k in trunk if k.startswith("blocks.") and k.split(".")[1].isdigit()),
                    default=-1)
    if depth < 1:
        raise BenchError("the ViT trunk has no blocks.N.*", "pass a complete ViT checkpoint")
    fc1 = trunk.get("blocks.0.mlp.fc1.weight")
    mlp_ratio = float(fc1.shape[0]) / dim if fc1 is not None else 4.0
    regs = [k for k in trunk if k in ("reg_token", "register_tokens")]
    if regs:  # DINOv2-reg keeps the class token's position apart from the patches'; not built here yet
        raise BenchError(f"the ViT has register tokens ({regs[0]}; DINOv2 with registers), which this suite does not build",
                         "use a DINOv2 checkpoint without registers")
    reg_tokens = 0
    pos = trunk.get("pos_embed")
    if pos is None or pos.ndim != 3:
        raise BenchError("the ViT trunk has no learned pos_embed [1, N, D]", "pass a complete ViT checkpoint")
    n = int(pos.shape[1])
    grid2 = n - 1  # pos_embed covers the class token and the patches
    grid = math.isqrt(grid2)
    if grid * grid != grid2:
        raise BenchError(f"pos_embed has {n} positions: not 1 class token + a square grid of patches",
                         "pass a ViT with a square patch grid")
    heads = num_heads or SIZES.get(dim, (None, None, None))[2]
    if heads is None or dim % heads:
        raise BenchError(f"no standard number of attention heads for embedding width {dim}",
                         "this ViT size is not supported (supported widths: " + ", ".join(map(str, SIZES)) + ")")
    return {"embed_dim": dim, "depth": depth, "num_heads": int(heads), "patch_size": patch, "img_size": grid * patch,
            "mlp_ratio": mlp_ratio, "qkv_bias": "blocks.0.attn.qkv.bias" in trunk,
            "init_values": 1e-5 if "blocks.0.ls1.gamma" in trunk else None, "reg_tokens": reg_tokens}


class VisionTransformerBackbone(TimmBackboneMixin, VisionTransformer):
    """timm's ViT with no classifier (``num_classes=0``) and dynamic image size; ``forward`` = final-norm CLS token."""

    family = "vit"
    feature = "CLS token after the final LayerNorm (DINO eval, MoCo v3 linear probe)"

    def __init__(self, cfg: dict[str, Any]):
        cfg = dict(cfg)
        super().__init__(img_size=cfg["img_size"], patch_size=cfg["patch_size"], embed_dim=cfg["embed_dim"],
                         depth=cfg["depth"], num_heads=cfg["num_heads"], mlp_ratio=cfg["mlp_ratio"],
                         qkv_bias=cfg["qkv_bias"], init_values=cfg["init_values"], reg_tokens=cfg["reg_tokens"],
                         num_classes=0, global_pool="token", dynamic_img_size=True)
        self._init_backbone(cfg, cfg["embed_dim"], arch_name(cfg))

    def check_last_blocks(self, n: int, avgpool_patchtokens: bool = False) -> None:
        """Refuse (one line) a ``last_blocks_feature(x, n, avgpool_patchtokens)`` this ViT cannot compute."""
        if not 1 <= n <= len(self.blocks):
            raise BenchError(f"n_last_blocks={n} but the ViT has {len(self.blocks)} blocks",
                             f"--set n_last_blocks=1..{len(self.blocks)}")
        if avgpool_patchtokens and n != 1:
            raise BenchError("avgpool_patchtokens needs n_last_blocks=1 (DINO interleaves one CLS with the mean token)",
                             "--set n_last_blocks=1")

    def block_outputs(self, x: torch.Tensor, n: int) -> list[torch.Tensor]:
        """The token sequences after each of the last ``n`` blocks, each through the final norm (DINO's
        ``get_intermediate_layers``), prefix tokens (class, registers) first."""
        self.check_last_blocks(n)
        x = self.norm_pre(self.patch_drop(self._pos_embed(self.patch_embed(x))))
        outs = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i >= len(self.blocks) - n:
                outs.append(self.norm(x))
        return outs

    def last_blocks_feature(self, x: torch.Tensor, n: int, avgpool_patchtokens: bool = False) -> torch.Tensor:
        """DINO's linear-probe feature (``eval_linear.py``): the CLS tokens of the last ``n`` blocks concatenated; with
        ``avgpool_patchtokens`` (DINO's ViT-B setting, n = 1) interleaved element-wise with the mean patch token, in
        DINO's order (``cat((cls.unsqueeze(-1), mean.unsqueeze(-1)), -1).reshape(B, -1)``)."""
        self.check_last_blocks(n, avgpool_patchtokens)
        outs = self.block_outputs(x, n)
        cls = torch.cat([o[:, 0] for o in outs], dim=-1)
        if not avgpool_patchtokens:
            return cls
        mean = outs[-1][:, self.num_prefix_tokens:].mean(dim=1)
        return torch.cat((cls.unsqueeze(-1), mean.unsqueeze(-1)), dim=-1).reshape(cls.shape[0], -1)


def build_vit(cfg: dict[str, Any]) -> VisionTransformerBackbone:
    return VisionTransformerBackbone(cfg)
