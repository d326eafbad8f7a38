"""DINO training checkpoint: ``teacher``/``student`` with ``module.backbone.``/``module.head.`` and a pickled
``argparse.Namespace`` ``args``."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from mopro_bench.checkpoints.formats.base import (
    Adapter,
    Mapped,
    _count,
    _pick,
    _t,
    is_tensor_dict,
    jsonable,
    partition,
    projection_head,
    strip_module,
    sub,
)
from mopro_bench.checkpoints.verify import VIT_MARKERS, first
from mopro_bench.errors import BenchError


class DinoAdapter(Adapter):
    name = "dino"
    priority = 30
    description = "DINO training checkpoint (teacher/student)"

    def detect(self, obj):
        return any(isinstance(obj.get(n), Mapping) and any("backbone." in k for k in obj[n]) for n in ("teacher", "student"))

    def selects(self, obj):
        return [n for n in ("teacher", "student") if is_tensor_dict(obj.get(n))]

    def convert(self, obj, select, where):
        net_name = _pick(select, self.selects(obj), self.name, where)
        net, ddp = strip_module(obj[net_name])
        backbone = sub(net, "backbone.")
        vit = [k for k in backbone if k.startswith(VIT_MARKERS)]
        if vit:
            raise BenchError(f"{where} is a DINO Vision Transformer ({first(vit)}); this suite evaluates ResNets",
                             "use a DINO ResNet-50 checkpoint")
        trunk, _, rest_bb = partition(backbone, {})
        heads = {}
        head = {k[len("head."):]: _t(v) for k, v in net.items() if k.startswith("head.")}
        if head:
            heads["projection"] = projection_head(head, f"{net_name}.head: DINO projection head")
        unplaced = [f"backbone.{k}" for k in rest_bb] + [k for k in net if not k.startswith(("backbone.", "head."))]
        other = [n for n in ("teacher", "student") if n != net_name and isinstance(obj.get(n), Mapping)]
        ignored: dict[str, Any] = {n: _count(obj[n]) for n in other}
        args = obj.get("args")
        meta = {"source": "DINO", "module_prefix": ddp, "epoch": jsonable(obj.get("epoch")),
                "args": {k: jsonable(v) for k, v in vars(args).items()} if isinstance(args, argparse.Namespace) else None}
        if meta["args"]:
            meta["arch_in_file"] = meta["args"].get("arch")
        return Mapped(trunk, heads, unplaced, ignored, meta)


ADAPTER = DinoAdapter()
