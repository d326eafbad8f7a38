"""Bare torchvision ResNet dict (supervised with ``fc``; DINO backbone-only, BYOL/SimCLR converted, timm ResNets),
optionally wrapped (``{state_dict: ...}``, ``{model: ...}``) and/or prefixed (``module.``, ``backbone.``, ...). The
generic fallback: tried last."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mopro_bench.checkpoints import Head
from mopro_bench.checkpoints.formats.base import (
    Adapter,
    Mapped,
    _count,
    _fc_head,
    _pick,
    is_tensor_dict,
    jsonable,
    partition,
    sub,
)

_SECONDARY = ("ema", "momentum", "target", "teacher", "_k", "key")


def _networks(obj: Mapping[str, Any]) -> dict[str, tuple[str | None, str]]:
    """ResNet trunks in a bare or wrapped dict: select name -> (wrapper key or None, key prefix)."""
    dicts = [(None, obj)] if is_tensor_dict(obj) else [(k, v) for k, v in obj.items() if is_tensor_dict(v)]
    found: dict[str, tuple[str | None, str]] = {}
    for wrapper, sd in dicts:
        for k in sd:
            if k.endswith("layer1.0.conv1.weight"):
                prefix = k[: -len("layer1.0.conv1.weight")]
                if prefix + "conv1.weight" not in sd and prefix + "conv1.0.weight" not in sd:  # (deep stem: refused later)
                    continue
                inner = prefix[len("module."):] if prefix.startswith("module.") else prefix
                name = "/".join(p for p in (wrapper, inner.rstrip(".")) if p) or "model"
                found[name] = (wrapper, prefix)
    return dict(sorted(found.items(), key=lambda kv: (any(s in kv[0] for s in _SECONDARY), len(kv[0]), kv[0])))


class TorchvisionAdapter(Adapter):
    name = "torchvision"
    priority = 80
    description = ("torchvision-layout ResNet state dict (torchvision, timm, DINO backbone-only, BYOL/SimCLR converted), "
                   "bare or wrapped")

    def detect(self, obj):
        return bool(_networks(obj))

    def selects(self, obj):
        nets = _networks(obj)
        return list(nets) if len(nets) > 1 else []

    def convert(self, obj, select, where):
        nets = _networks(obj)
        name = _pick(select, list(nets), self.name, where) if len(nets) > 1 else next(iter(nets))
        wrapper, prefix = nets[name]
        sd = obj if wrapper is None else obj[wrapper]
        inside = sub(sd, prefix)
        trunk, groups, rest = partition(inside, {"fc.": "fc"})
        heads: dict[str, Head] = {}
        if "fc" in groups:
            kind, head = _fc_head(groups["fc"])
            heads[kind] = head
        ignored: dict[str, Any] = {}
        for k in sd:
            if not k.startswith(prefix):
                group = k.split(".", 1)[0]
                ignored[group] = ignored.get(group, 0) + 1
        for other, (w, _p) in nets.items():
            if w != wrapper and other != name and w is not None:
                ignored[w] = _count(obj[w])
        meta = {"source": "torchvision-layout state dict", "wrapper": wrapper, "key_prefix": prefix,
                "epoch": jsonable(obj.get("epoch")) if wrapper else None,
                "arch_in_file": jsonable(obj.get("arch")) if wrapper else None}
        return Mapped(trunk, heads, [prefix + k for k in rest], ignored, meta)


ADAPTER = TorchvisionAdapter()
