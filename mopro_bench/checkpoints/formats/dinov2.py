"""DINOv2 backbone releases (``dinov2_vits14_pretrain.pth`` ... from the facebookresearch/dinov2 README / torch.hub):
a bare dict ``cls_token``, ``pos_embed`` [1, 1 + 37*37, D], ``mask_token`` [1, D], ``patch_embed.proj``,
``blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}``, ``norm`` -- timm's names
(timm ``vit_*_patch14_dinov2``: img_size 518, LayerScale). ``mask_token`` (iBOT masking in training) is counted as
ignored.

The position embeddings cover a 37x37 grid (518 px at patch 14); other input sizes resample them on the fly
(:mod:`mopro_bench.backbones.vit`). Not built: the register variants (``register_tokens``) and ViT-g/14 (SwiGLU MLPs),
both refused by name."""

from __future__ import annotations

from mopro_bench.backbones import BICUBIC_PREPROCESS
from mopro_bench.checkpoints.formats.base import Adapter, Mapped, family_parts, is_tensor_dict, strip_module


class Dinov2Adapter(Adapter):
    name = "dinov2"
    priority = 35
    description = "DINOv2 backbone release (bare ViT dict with mask_token and LayerScale ls1/ls2)"

    def detect(self, obj):
        if not is_tensor_dict(obj):
            return False
        sd, _ = strip_module(obj)
        return "mask_token" in sd and "patch_embed.proj.weight" in sd and not any(k.startswith("decoder_") for k in sd)

    def convert(self, obj, select, where):
        sd, ddp = strip_module(obj)
        trunk, heads, ignored, rest = family_parts(sd, where, self.name)
        pos = trunk.get("pos_embed")
        patch = trunk.get("patch_embed.proj.weight")
        grid = None
        if pos is not None and pos.ndim == 3 and patch is not None and patch.ndim == 4:
            side = int(round((pos.shape[1] - 1) ** 0.5))
            grid = f"{side}x{side} patches of {int(patch.shape[-1])} px ({side * int(patch.shape[-1])} px)"
        meta = {"source": "DINOv2 backbone release", "module_prefix": ddp, "native_grid": grid,
                # dinov2/data/transforms.py make_classification_eval_transform: Resize(256, bicubic), CenterCrop(224)
                "preprocess_source": "dinov2 make_classification_eval_transform: Resize(256, bicubic), CenterCrop(224), "
                                     "ImageNet mean/std"}
        return Mapped(trunk, heads, rest, ignored, meta, BICUBIC_PREPROCESS)


ADAPTER = Dinov2Adapter()
