"""timm layouts: ``train.py`` checkpoints ``{state_dict, state_dict_ema, arch, args, version ...}`` (any family), and a
timm-named ViT / ConvNeXt state dict, bare (the HF hub's ``model.safetensors`` / ``pytorch_model.bin``, DINO's and
MAE's backbone-only releases, ``export --format timm``) or wrapped (``{model: ...}`` as DeiT saves it,
``{state_dict: ...}``) and/or prefixed (``module.``).

ViT classifier ``head.weight``/``head.bias`` and ConvNeXt ``head.fc.*`` are kept as the classifier head (1000 rows:
``imagenet1k``). A timm-named ResNet dict without ``train.py``'s metadata is the ``torchvision`` adapter's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mopro_bench.backbones import BICUBIC_PREPROCESS, Preprocess, parse_any_arch
from mopro_bench.checkpoints.formats.base import (
    Mapped,
    _count,
    _pick,
    family_parts,
    is_tensor_dict,
    jsonable,
    namespace_args,
    sub,
)
from mopro_bench.checkpoints.formats.torchvision import _SECONDARY, TorchvisionAdapter, _networks
from mopro_bench.errors import BenchError

_MARKERS = {"patch_embed.proj.weight": "vit", "stem.0.weight": "convnext"}


def family_networks(obj: Mapping[str, Any]) -> dict[str, tuple[str | None, str, str]]:
    """ViT / ConvNeXt trunks in timm names in a bare or wrapped dict: select name -> (wrapper key, key prefix, family)."""
    dicts = [(None, obj)] if is_tensor_dict(obj) else [(k, v) for k, v in obj.items() if is_tensor_dict(v)]
    found: dict[str, tuple[str | None, str, str]] = {}
    for wrapper, sd in dicts:
        for k in sd:
            for marker, family in _MARKERS.items():
                if not (k == marker or k.endswith("." + marker)):
                    continue
                prefix = k[: -len(marker)]
                if family == "convnext" and not any(x.startswith(prefix + "stages.0.blocks.0.") for x in sd):
                    continue
                inner = prefix[len("module."):] if prefix.startswith("module.") else prefix
                name = "/".join(p for p in (wrapper, inner.rstrip(".")) if p) or "model"
                found[name] = (wrapper, prefix, family)
    return dict(sorted(found.items(), key=lambda kv: (any(s in kv[0] for s in _SECONDARY), len(kv[0]), kv[0])))


def arch_hints(arch: Any, family: str, source: str) -> dict[str, Any]:
    """Depth (and ViT heads) a file's own architecture name fixes, when it parses as one of this suite's names."""
    if not isinstance(arch, str):
        return {}
    try:
        fam, cfg = parse_any_arch(arch.split(".", 1)[0])  # timm names may carry a pretrained tag: vit_small_patch16_224.augreg
    except BenchError:
        return {}
    if fam != family:
        return {}
    if family == "vit":
        return {"depth": cfg["depth"], "num_heads": cfg["num_heads"], "source": f"{source} {arch!r}",
                "num_heads_source": f"timm's {arch.split('.', 1)[0]} has {cfg['num_heads']} heads"}
    return {"depths": cfg["depths"], "source": f"{source} {arch!r}"}


def train_preprocess(args: dict[str, Any] | None) -> Preprocess:
    """What timm's ``train.py`` args record about the input (``mean``/``std``/``interpolation``/``crop_pct`` are None
    unless given on its command line, and then the model's defaults apply: ImageNet mean/std, bicubic)."""
    a = args or {}
    base = BICUBIC_PREPROCESS
    try:
        mean = tuple(float(x) for x in a["mean"]) if a.get("mean") else base.mean
        std = tuple(float(x) for x in a["std"]) if a.get("std") else base.std
        interp = a["interpolation"] if a.get("interpolation") in ("bilinear", "bicubic") else base.interpolation
        crop = float(a["crop_pct"]) if a.get("crop_pct") else base.crop_pct
    except (TypeError, ValueError):
        return base
    if len(mean) != 3 or len(std) != 3:
        return base
    return Preprocess(mean=mean, std=std, interpolation=interp, input_size=base.input_size, crop_pct=crop)


class TimmAdapter(TorchvisionAdapter):
    name = "timm"
    priority = 70
    description = ("timm: train.py checkpoint (state_dict / state_dict_ema, arch, args), or a timm-named ViT / ConvNeXt "
                   "state dict (HF hub model.safetensors, DeiT, DINO / MAE backbone releases), bare or wrapped")

    @staticmethod
    def _resnet_train(obj) -> bool:
        return (not is_tensor_dict(obj) and is_tensor_dict(obj.get("state_dict")) and "arch" in obj
                and ("version" in obj or "state_dict_ema" in obj) and bool(_networks(obj)))

    def detect(self, obj):
        return self._resnet_train(obj) or bool(family_networks(obj))

    def selects(self, obj):
        if self._resnet_train(obj):
            return super().selects(obj)
        nets = family_networks(obj)
        return list(nets) if len(nets) > 1 else []

    def convert(self, obj, select, where):
        if self._resnet_train(obj):
            m = super().convert(obj, select, where)
            m.meta.update({"source": "timm train.py", "version": jsonable(obj.get("version")),
                           "metric": jsonable(obj.get("metric")), "args": namespace_args(obj.get("args"))})
            return m
        nets = family_networks(obj)
        name = _pick(select, list(nets), self.name, where) if len(nets) > 1 else next(iter(nets))
        wrapper, prefix, family = nets[name]
        sd = obj if wrapper is None else obj[wrapper]
        trunk, heads, ignored, rest = family_parts(sub(sd, prefix), where, self.name,
                                                   head_desc=f"{name}.head" if wrapper else "head")
        for k in sd:
            if not k.startswith(prefix):
                group = k.split(".", 1)[0]
                ignored[group] = ignored.get(group, 0) + 1
        for other, (w, _p, _f) in nets.items():
            if w != wrapper and other != name and w is not None:
                ignored[w] = _count(obj[w])
        train = wrapper is not None and "arch" in obj and ("version" in obj or "state_dict_ema" in obj)
        args = namespace_args(obj.get("args")) if wrapper is not None else None
        meta: dict[str, Any] = {"source": "timm train.py" if train else "timm-named state dict", "wrapper": wrapper,
                                "key_prefix": prefix, "epoch": jsonable(obj.get("epoch")) if wrapper else None,
                                "arch_in_file": jsonable(obj.get("arch")) if wrapper else None}
        if train:
            meta.update({"version": jsonable(obj.get("version")), "metric": jsonable(obj.get("metric")), "args": args})
            pre = train_preprocess(args)
            meta["preprocess_source"] = "timm train.py args (ImageNet mean/std, bicubic where they are unset)"
        else:
            if args:
                meta["args"] = args
            pre = BICUBIC_PREPROCESS
            meta["preprocess_source"] = ("not recorded in the file: assumed ImageNet mean/std, bicubic (a config.json "
                                         "beside a hub file is read instead)")
        hints = arch_hints(meta["arch_in_file"], family, "arch in the file") if train else {}
        return Mapped(trunk, heads, [prefix + k for k in rest], ignored, meta, pre, hints=hints)


ADAPTER = TimmAdapter()
