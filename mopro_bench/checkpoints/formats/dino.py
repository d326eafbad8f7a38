"""DINO training checkpoint: ``teacher``/``student`` with ``module.backbone.``/``module.head.`` and a pickled
``argparse.Namespace`` ``args``; the backbone a ResNet (torchvision names) or a ViT (DINO's names are timm's:
``cls_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks.N``, ``norm``).

DINO wraps the student in DDP always and the teacher only when it has BatchNorm (a ResNet), so a ViT file has
``module.backbone.*`` in ``student`` and ``backbone.*`` in ``teacher`` (``dino/main_dino.py``); both are read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mopro_bench.backbones import BICUBIC_PREPROCESS, Preprocess, trunk_family
from mopro_bench.checkpoints.formats.base import (
    Adapter,
    Mapped,
    _count,
    _pick,
    _t,
    family_parts,
    is_tensor_dict,
    jsonable,
    namespace_args,
    partition,
    projection_head,
    strip_module,
    sub,
    vit_hints,
)

# DINO's ViT sizes (dino/vision_transformer.py: vit_tiny / vit_small / vit_base): args.arch -> (embed_dim, depth, heads)
DINO_VITS = {"vit_tiny": (192, 12, 3), "vit_small": (384, 12, 6), "vit_base": (768, 12, 12)}


class DinoAdapter(Adapter):
    name = "dino"
    priority = 30
    description = "DINO training checkpoint (teacher/student), ResNet or ViT backbone"

    def detect(self, obj):
        return any(isinstance(obj.get(n), Mapping) and any("backbone." in k for k in obj[n]) for n in ("teacher", "student"))

    def selects(self, obj):
        return [n for n in ("teacher", "student") if is_tensor_dict(obj.get(n))]

    def convert(self, obj, select, where):
        net_name = _pick(select, self.selects(obj), self.name, where)
        net, ddp = strip_module(obj[net_name])
        backbone = sub(net, "backbone.")
        ignored: dict[str, Any] = {}
        if "patch_embed.proj.weight" in backbone or "cls_token" in backbone:  # a ViT (iBOT adds masked_embed: ignored)
            trunk, _, ignored, rest_bb = family_parts(backbone, where, self.name)
            rest_bb += sorted(k for k in backbone if k.startswith("head."))  # DINO's ViT has no head of its own
        else:
            trunk, _, rest_bb = partition(backbone, {})
        heads = {}
        head = {k[len("head."):]: _t(v) for k, v in net.items() if k.startswith("head.")}
        if head:
            heads["projection"] = projection_head(head, f"{net_name}.head: DINO projection head")
        unplaced = [f"backbone.{k}" for k in rest_bb] + [k for k in net if not k.startswith(("backbone.", "head."))]
        other = [n for n in ("teacher", "student") if n != net_name and isinstance(obj.get(n), Mapping)]
        ignored.update({n: _count(obj[n]) for n in other})
        meta = {"source": "iBOT" if "ibot_loss" in obj else "DINO", "module_prefix": ddp, "epoch": jsonable(obj.get("epoch")),
                "args": namespace_args(obj.get("args"))}
        if meta["args"]:
            meta["arch_in_file"] = meta["args"].get("arch")
        hints: dict[str, Any] = {}
        pre = Preprocess()
        if trunk_family(trunk) == "vit":
            # DINO evaluates ViTs with Resize(256, bicubic) + CenterCrop(224), ImageNet mean/std (dino/eval_linear.py)
            pre = BICUBIC_PREPROCESS
            dim = int(trunk["patch_embed.proj.weight"].shape[0])
            hints = vit_hints(meta.get("arch_in_file"), dim, DINO_VITS, "dino/vision_transformer.py")
            meta["preprocess_source"] = "dino/eval_linear.py: Resize(256, bicubic), CenterCrop(224), ImageNet mean/std"
        return Mapped(trunk, heads, unplaced, ignored, meta, pre, hints=hints)


ADAPTER = DinoAdapter()
