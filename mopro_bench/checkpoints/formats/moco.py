"""MoCo v1/v2 and PCL ``state_dict`` with ``module.encoder_q.``/``encoder_k.`` and ``fc`` or ``fc.0``/``fc.2``;
MoCo v3 (``module.base_encoder.``/``momentum_encoder.``, ``predictor``) with a ResNet (projection MLP ``fc``) or a ViT
(timm names, projection MLP ``head``; ``moco-v3/vits.py``, ``moco/builder.py``).

MoCo v3's ViT-S has **12** attention heads, not the 6 of DeiT/DINO/timm's ViT-S (``vits.py``: ``vit_small`` =
embed 384, depth 12, num_heads 12); no shape shows it, so the adapter passes it on as a hint, from the file's
``arch`` (``vit_small``/``vit_base``/...) or, without one, from the embedding width."""

from __future__ import annotations

from typing import Any

from mopro_bench.backbones import Preprocess
from mopro_bench.checkpoints import Head
from mopro_bench.checkpoints.formats.base import (
    Adapter,
    Mapped,
    _pick,
    _state_dict,
    _t,
    jsonable,
    partition,
    projection_head,
    sub,
    vit_hints,
)
from mopro_bench.errors import BenchError

# moco-v3/vits.py: arch -> (embed_dim, depth, num_heads); vit_conv_* (convolutional stem, depth 11) are not built here
MOCO_V3_VITS = {"vit_small": (384, 12, 12), "vit_base": (768, 12, 12), "vit_large": (1024, 24, 16),
                "vit_huge": (1280, 32, 16)}


def moco_v3_vit_hints(arch: Any, trunk: dict, where: str) -> tuple[dict[str, Any], list[str]]:
    """(hints, warnings) for a MoCo v3 ViT: heads and depth from ``arch``, else heads from the embedding width."""
    if isinstance(arch, str) and arch.startswith("vit_conv"):
        raise BenchError(f"{where} is a MoCo v3 {arch} (a ViT with a convolutional stem, patch_embed.proj.N.*), which "
                         "this suite does not build", "use a MoCo v3 vit_small / vit_base checkpoint")
    w = trunk.get("patch_embed.proj.weight")
    if w is None:
        return {}, []  # the coverage check names what is missing
    dim = int(w.shape[0])
    named = vit_hints(arch, dim, MOCO_V3_VITS, "moco-v3/vits.py")
    if named:
        return named, []
    by_dim = {d: (name, h) for name, (d, _, h) in MOCO_V3_VITS.items()}
    if dim not in by_dim:
        return {}, []
    name, heads = by_dim[dim]
    warn = [f"the file says arch {arch!r} ({MOCO_V3_VITS[arch][0]} wide) but its tensors are {dim} wide: read as "
            f"MoCo v3 {name} ({heads} heads)"] if isinstance(arch, str) and arch in MOCO_V3_VITS else []
    return {"num_heads": heads, "num_heads_source": f"moco-v3/vits.py: {name} ({dim} wide) has {heads} heads"}, warn


class MocoAdapter(Adapter):
    name = "moco"
    priority = 20
    description = "MoCo v1/v2, PCL (encoder_q/encoder_k) or MoCo v3 (base_encoder/momentum_encoder; ResNet or ViT)"
    PAIRS = (("encoder_q", "encoder_k"), ("base_encoder", "momentum_encoder"))

    def detect(self, obj):
        sd = _state_dict(obj)
        return sd is not None and any(k.startswith(("encoder_q.", "base_encoder.")) for k in sd)

    def selects(self, obj):
        sd = _state_dict(obj) or {}
        return [e for pair in self.PAIRS for e in pair if any(k.startswith(e + ".") for k in sd)]

    def convert(self, obj, select, where):
        sd = _state_dict(obj)
        ddp = all(k.startswith("module.") for k in obj["state_dict"])
        enc = _pick(select, self.selects(obj), self.name, where)
        inside = sub(sd, enc + ".")
        vit = enc in self.PAIRS[1] and any(k.startswith(("patch_embed.", "cls_token", "blocks.")) for k in inside)
        trunk, groups, rest = partition(inside, {"fc.": "fc", "head.": "head"} if vit else {"fc.": "fc"})
        heads: dict[str, Head] = {}
        if "fc" in groups:
            heads["projection"] = projection_head(groups["fc"], f"{enc}.fc: projection head")
        if "head" in groups:
            heads["projection"] = projection_head(groups["head"], f"{enc}.head: projection MLP")
        ignored: dict[str, Any] = {}
        predictor = {k: _t(v) for k, v in sd.items() if k.startswith("predictor.")}
        if predictor:
            heads["predictor"] = projection_head(predictor, "MoCo v3 predictor", kind="predictor")
        encoders = {e for pair in self.PAIRS for e in pair}
        for k in sd:
            if k.startswith(enc + ".") or k.startswith("predictor."):
                continue
            group = k.split(".", 1)[0]
            key = "queue" if k in ("queue", "queue_ptr") else group if group in encoders else k
            ignored[key] = ignored.get(key, 0) + 1
        v3 = enc in self.PAIRS[1]
        variant = "v3" if v3 else ("v2/PCL (MLP head)" if f"{enc}.fc.0.weight" in sd else "v1 (linear head)")
        meta = {"source": f"MoCo {variant}", "module_prefix": ddp, "epoch": jsonable(obj.get("epoch")),
                "arch_in_file": jsonable(obj.get("arch"))}
        if not vit:
            return Mapped(trunk, heads, [f"{enc}.{k}" for k in rest], ignored, meta)
        hints, warnings = moco_v3_vit_hints(meta["arch_in_file"], trunk, where)
        meta["source"] = "MoCo v3 (ViT)"
        # moco-v3/main_lincls.py evaluates with Resize(256) (bilinear, torchvision's default) + CenterCrop(224)
        meta["preprocess_source"] = "moco-v3/main_lincls.py: Resize(256) bilinear, CenterCrop(224), ImageNet mean/std"
        if warnings:
            meta["warnings"] = warnings
        return Mapped(trunk, heads, [f"{enc}.{k}" for k in rest], ignored, meta, Preprocess(), hints=hints)


ADAPTER = MocoAdapter()
