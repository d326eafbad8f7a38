"""SwAV / DeepCluster-v2 / SeLa-v2: a bare dict with ``module.`` plus ``projection_head.*`` and ``prototypes.*``."""

from __future__ import annotations

from mopro_bench.checkpoints import Head
from mopro_bench.checkpoints.formats.base import Adapter, Mapped, is_tensor_dict, partition, projection_head, strip_module


class SwavAdapter(Adapter):
    name = "swav"
    priority = 60
    description = "SwAV / DeepCluster-v2 / SeLa-v2 (facebookresearch/swav)"

    def detect(self, obj):
        if not is_tensor_dict(obj):
            return False
        sd, _ = strip_module(obj)
        return "conv1.weight" in sd and any(k.startswith(("projection_head.", "prototypes.")) for k in sd)

    def convert(self, obj, select, where):
        sd, ddp = strip_module(obj)
        trunk, groups, rest = partition(sd, {"projection_head.": "proj", "prototypes.": "proto"})
        heads: dict[str, Head] = {}
        if "proj" in groups:
            heads["projection"] = projection_head(groups["proj"], "projection_head: MLP to the clustering space")
        if "proto" in groups:
            w = [v for k, v in groups["proto"].items() if k.endswith("weight")]
            heads["prototypes"] = Head(kind="prototypes", state_dict=groups["proto"],
                                       num_classes=int(w[0].shape[0]) if w else None, class_space=None,
                                       description="prototypes: learned cluster centres (not classes)")
        return Mapped(trunk, heads, rest, {}, {"source": "SwAV", "module_prefix": ddp})


ADAPTER = SwavAdapter()
