"""ConvNeXt in Facebook's own layout (facebookresearch/ConvNeXt ``models/convnext.py``, and ConvNeXt-V2's fine-tuned
models): ``{model: {...}}`` (released files; training checkpoints add ``model_ema``, ``optimizer``, ``epoch``, ``args``),
or bare. Renamed here to timm's names:

====================================================  ====================================================
Facebook                                              timm
====================================================  ====================================================
``downsample_layers.0.0`` (4x4 stem conv)             ``stem.0``
``downsample_layers.0.1`` (stem LayerNorm)            ``stem.1``
``downsample_layers.i.0`` / ``.1`` (LN, 2x2 conv)     ``stages.i.downsample.0`` / ``.1``  (i = 1..3)
``stages.i.j.dwconv``                                 ``stages.i.blocks.j.conv_dw``
``stages.i.j.norm``                                   ``stages.i.blocks.j.norm``
``stages.i.j.pwconv1`` / ``pwconv2``                  ``stages.i.blocks.j.mlp.fc1`` / ``mlp.fc2``
``stages.i.j.gamma``                                  ``stages.i.blocks.j.gamma``
``stages.i.j.grn.gamma`` / ``grn.beta`` [1,1,1,C]     ``stages.i.blocks.j.mlp.grn.weight`` / ``.bias`` [C]
``norm`` (LayerNorm of the pooled feature)            ``head.norm``
``head`` (classifier)                                 ``head.fc`` -- kept as the classifier head
====================================================  ====================================================

Both compute the same function: Facebook's block is dwconv -> LayerNorm (channels last) -> Linear -> GELU -> Linear
-> gamma, its head mean-pool -> LayerNorm -> Linear; timm's ConvNeXt (``conv_mlp=False``) is that with these names."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from mopro_bench.backbones import BICUBIC_PREPROCESS, Preprocess
from mopro_bench.checkpoints.formats.base import (
    Adapter,
    Mapped,
    _count,
    _pick,
    _t,
    is_tensor_dict,
    jsonable,
    linear_classifier,
    namespace_args,
    strip_module,
)
from mopro_bench.checkpoints.formats.timm import arch_hints

_DOWN = re.compile(r"^downsample_layers\.([0-3])\.([01])\.(weight|bias)$")
_BLOCK = re.compile(r"^stages\.([0-3])\.(\d+)\.(.+)$")
_PARTS = {"dwconv": "conv_dw", "norm": "norm", "pwconv1": "mlp.fc1", "pwconv2": "mlp.fc2"}
_WRAPPERS = ("model", "model_ema", "state_dict")


def fb_to_timm(key: str, value: torch.Tensor) -> tuple[str, torch.Tensor] | None:
    """One Facebook ConvNeXt trunk tensor in timm's name (and shape, for GRN), or None when it is not trunk."""
    m = _DOWN.match(key)
    if m:
        i, j, leaf = m.groups()
        return (f"stem.{j}.{leaf}" if i == "0" else f"stages.{i}.downsample.{j}.{leaf}"), value
    m = _BLOCK.match(key)
    if m:
        i, j, rest = m.groups()
        block = f"stages.{i}.blocks.{j}."
        if rest == "gamma":
            return block + "gamma", value
        if rest in ("grn.gamma", "grn.beta"):  # ConvNeXt-V2 GRN: [1, 1, 1, C] -> [C]
            return block + ("mlp.grn.weight" if rest == "grn.gamma" else "mlp.grn.bias"), value.reshape(-1)
        part, _, leaf = rest.rpartition(".")
        if part in _PARTS and leaf in ("weight", "bias"):
            return f"{block}{_PARTS[part]}.{leaf}", value
        return None
    if key in ("norm.weight", "norm.bias"):
        return "head." + key, value
    return None


def _is_fb(sd: Any) -> bool:
    return (is_tensor_dict(sd) and any(k.endswith("downsample_layers.0.0.weight") for k in sd)
            and any(".dwconv." in k for k in sd))


class ConvNeXtAdapter(Adapter):
    name = "convnext"
    priority = 37
    description = "ConvNeXt in facebookresearch/ConvNeXt's layout ({model: downsample_layers, stages.i.j.dwconv, norm, head})"

    def _networks(self, obj) -> list[str | None]:
        if _is_fb(obj):
            return [None]
        return [w for w in _WRAPPERS if _is_fb(obj.get(w))]

    def detect(self, obj):
        return bool(self._networks(obj))

    def selects(self, obj):
        nets = [n for n in self._networks(obj) if n is not None]
        return nets if len(nets) > 1 else []

    def convert(self, obj, select, where):
        nets = self._networks(obj)
        wrapper = _pick(select, nets, self.name, where) if len(nets) > 1 else nets[0]
        sd, ddp = strip_module(obj if wrapper is None else obj[wrapper])
        trunk: dict[str, torch.Tensor] = {}
        head: dict[str, torch.Tensor] = {}
        rest: list[str] = []
        for k, v in sd.items():
            if k in ("head.weight", "head.bias"):
                head[k] = _t(v)
                continue
            mapped = fb_to_timm(k, _t(v))
            if mapped is None:
                rest.append(k)
            else:
                trunk[mapped[0]] = mapped[1]
        heads = {}
        if "head.weight" in head and head["head.weight"].ndim == 2:
            heads["classifier"] = linear_classifier(head, "head.", "head", "sorted-wnid order", {21841: "ImageNet-22k"})
        elif head:
            rest += sorted(head)
        ignored: dict[str, Any] = {}
        if wrapper is not None:
            for w in _WRAPPERS:
                if w != wrapper and isinstance(obj.get(w), Mapping) and is_tensor_dict(obj[w]):
                    ignored[w] = _count(obj[w])
        args_d = namespace_args(obj.get("args")) if wrapper is not None else None
        meta: dict[str, Any] = {"source": "facebookresearch/ConvNeXt", "wrapper": wrapper, "module_prefix": ddp,
                                "epoch": jsonable(obj.get("epoch")) if wrapper else None, "args": args_d,
                                "arch_in_file": (args_d or {}).get("model"),
                                # ConvNeXt main.py / datasets.py: eval at input_size with crop_pct 224/256, bicubic
                                "preprocess_source": "ConvNeXt datasets.py: Resize(input_size/crop_pct, bicubic), "
                                                     "CenterCrop(input_size), ImageNet mean/std"}
        pre = BICUBIC_PREPROCESS
        if args_d:
            try:
                pre = Preprocess(interpolation="bicubic", input_size=int(args_d.get("input_size") or 224),
                                 crop_pct=float(args_d.get("crop_pct") or 0.875))
            except (TypeError, ValueError):
                pass
        hints = arch_hints(meta["arch_in_file"], "convnext", "args.model in the file")
        return Mapped(trunk, heads, rest, ignored, meta, pre, hints=hints)


ADAPTER = ConvNeXtAdapter()
