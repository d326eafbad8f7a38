"""MoPro checkpoints: the reference implementation's ``{epoch, arch, state_dict, optimizer}`` with
``module.encoder_q.`` (and ``encoder_k``), ``classifier`` [C, D], ``fc1``/``fc2``, ``queue``, ``queue_ptr``, ``prototypes``;
and our pretrainer's files (top-level ``mopro_bench`` dict, no ``module.``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mopro_bench.backbones import Preprocess
from mopro_bench.checkpoints import Head
from mopro_bench.checkpoints.formats.base import (
    WEBVISION_SPACES,
    Adapter,
    Mapped,
    _pick,
    _state_dict,
    _t,
    classifier_head,
    is_tensor_dict,
    jsonable,
    partition,
    projection_head,
    strip_module,
    sub,
)
from mopro_bench.errors import BenchError


class MoProAdapter(Adapter):
    name = "mopro"
    priority = 10
    description = "MoPro (reference implementation or mopro-bench pretrain)"

    def detect(self, obj):
        ours = obj.get("mopro_bench")
        if isinstance(ours, Mapping) and ours.get("kind") == "pretrain":
            return True
        sd = _state_dict(obj)
        if sd is None or not any(k.startswith("encoder_q.") for k in sd):
            return False
        return "prototypes" in sd or "encoder_q.classifier.weight" in sd or "encoder_q.fc1.weight" in sd

    def selects(self, obj):
        sd = _state_dict(obj) or {}
        return [e for e in ("encoder_q", "encoder_k") if any(k.startswith(e + ".") for k in sd)]

    def convert(self, obj, select, where):
        ours = obj.get("mopro_bench") if isinstance(obj.get("mopro_bench"), Mapping) else None
        if not is_tensor_dict(obj.get("state_dict")):
            raise BenchError(f"{where} (adapter mopro) has no state_dict of tensors", "pass a MoPro checkpoint")
        sd, ddp = strip_module(obj["state_dict"])
        enc = _pick(select, self.selects(obj), self.name, where)
        trunk, groups, rest = partition(sub(sd, enc + "."), {"classifier.": "classifier", "fc1.": "proj", "fc2.": "proj"})
        heads: dict[str, Head] = {}
        cls_space = None
        if "classifier" in groups:
            rows = int(groups["classifier"]["classifier.weight"].shape[0])
            cls_space = (ours or {}).get("class_space") or WEBVISION_SPACES.get(rows, "custom")
            heads["classifier"] = classifier_head(groups["classifier"], "classifier.", cls_space,
                                                  f"{enc}.classifier: {rows}-way WebVision classifier")
        if "proj" in groups:
            heads["projection"] = projection_head(groups["proj"], f"{enc}.fc1/fc2: projection to the contrastive space")
        ignored: dict[str, Any] = {}
        for k, v in sd.items():
            if k.startswith(enc + "."):
                continue
            group = k.split(".", 1)[0]
            if k == "prototypes":
                heads["prototypes"] = Head(kind="prototypes", state_dict={"prototypes": _t(v)}, num_classes=int(v.shape[0]),
                                           class_space=cls_space, description="class prototypes [C, low_dim]")
            elif group in ("encoder_q", "encoder_k"):
                ignored[group] = ignored.get(group, 0) + 1
            elif k in ("queue", "queue_ptr"):
                ignored["queue"] = ignored.get("queue", 0) + 1
            else:
                ignored[k] = 1
        meta = {"source": "mopro-bench pretrain" if ours else "MoPro reference", "module_prefix": ddp,
                "epoch": jsonable(obj.get("epoch")), "arch_in_file": jsonable(obj.get("arch"))}
        if ours:
            meta["mopro_bench"] = {k: jsonable(v) for k, v in ours.items() if k != "config"}
        pre = Preprocess()
        aug = ((ours or {}).get("config") or {}).get("aug") if isinstance((ours or {}).get("config"), Mapping) else None
        if ours and isinstance(ours.get("preprocess"), Mapping):
            p = ours["preprocess"]
            pre = Preprocess(mean=tuple(p["mean"]), std=tuple(p["std"]), channel_order=p.get("channel_order", "RGB"),
                             scale=float(p.get("scale", 1.0)))
        elif isinstance(aug, Mapping) and aug.get("mean") is not None and aug.get("std") is not None:
            pre = Preprocess(mean=tuple(float(x) for x in aug["mean"]), std=tuple(float(x) for x in aug["std"]))
        return Mapped(trunk, heads, [f"{enc}.{k}" for k in rest], ignored, meta, pre)


ADAPTER = MoProAdapter()
