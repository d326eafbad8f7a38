"""MoCo v1/v2 and PCL ``state_dict`` with ``module.encoder_q.``/``encoder_k.`` and ``fc`` or ``fc.0``/``fc.2``;
MoCo v3 ResNets (``module.base_encoder.``/``momentum_encoder.``)."""

from __future__ import annotations

from typing import Any

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
)


class MocoAdapter(Adapter):
    name = "moco"
    priority = 20
    description = "MoCo v1/v2, PCL (encoder_q/encoder_k) or MoCo v3 (base_encoder/momentum_encoder)"
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
        trunk, groups, rest = partition(sub(sd, enc + "."), {"fc.": "fc"})
        heads: dict[str, Head] = {}
        if "fc" in groups:
            heads["projection"] = projection_head(groups["fc"], f"{enc}.fc: projection head")
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
        return Mapped(trunk, heads, [f"{enc}.{k}" for k in rest], ignored, meta)


ADAPTER = MocoAdapter()
