"""MAE pre-training checkpoint (facebookresearch/mae ``main_pretrain.py``, ``util/misc.py save_model``):
``{model: {encoder, mask_token, decoder_embed.*, decoder_pos_embed, decoder_blocks.*, decoder_norm.*, decoder_pred.*},
optimizer, epoch, scaler, args}``. The encoder (``cls_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks.N``,
``norm``: timm's names, ``models_mae.py``) is the trunk; the decoder and ``mask_token`` are counted as ignored.

MAE's encoder-only release (``mae_pretrain_vit_base.pth``: ``{model: encoder}``) carries nothing MAE-specific and is
read by the ``timm`` adapter; MAE *fine-tuned* files (``fc_norm``, global-pool classifier) are refused by name."""

from __future__ import annotations

from typing import Any

from mopro_bench.backbones import BICUBIC_PREPROCESS
from mopro_bench.checkpoints.formats.base import (
    Adapter,
    Mapped,
    family_parts,
    is_tensor_dict,
    jsonable,
    namespace_args,
    strip_module,
)
from mopro_bench.checkpoints.formats.timm import arch_hints


class MaeAdapter(Adapter):
    name = "mae"
    priority = 33
    description = "MAE pre-training checkpoint ({model: ViT encoder + decoder_*, mask_token}, args)"

    def detect(self, obj):
        model = obj.get("model")
        if not is_tensor_dict(model):
            return False
        sd, _ = strip_module(model)
        return "patch_embed.proj.weight" in sd and any(k.startswith("decoder_") for k in sd)

    def convert(self, obj, select, where):
        sd, ddp = strip_module(obj["model"])
        trunk, heads, ignored, rest = family_parts(sd, where, self.name)
        args_d = namespace_args(obj.get("args"))
        meta: dict[str, Any] = {"source": "MAE pre-training", "module_prefix": ddp, "epoch": jsonable(obj.get("epoch")),
                                "args": args_d, "arch_in_file": (args_d or {}).get("model"),
                                # mae/main_linprobe.py: Resize(256, interpolation=3 = bicubic), CenterCrop(224)
                                "preprocess_source": "mae/main_linprobe.py: Resize(256, bicubic), CenterCrop(224), "
                                                     "ImageNet mean/std"}
        hints: dict[str, Any] = {}
        arch = meta["arch_in_file"]
        if isinstance(arch, str) and arch.startswith("mae_"):  # mae_vit_base_patch16 (models_mae.py) ~ vit_base_patch16
            hints = arch_hints(arch[len("mae_"):], "vit", "args.model in the file")
            if hints:
                hints["source"] = f"args.model {arch!r} in the file"
                hints["num_heads_source"] = f"mae/models_mae.py: {arch} has {hints['num_heads']} heads"
        return Mapped(trunk, heads, rest, ignored, meta, BICUBIC_PREPROCESS, hints=hints)


ADAPTER = MaeAdapter()
