"""detectron2 ``.pkl``: ``{model: {stem.conv1.*, res2.0.conv1.*, res2.0.shortcut.* ...}}`` (numpy), also whole
detectors (``backbone.bottom_up.``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mopro_bench.checkpoints import Head
from mopro_bench.checkpoints.detectron2 import from_detectron2, preprocess_from_pkl
from mopro_bench.checkpoints.formats.base import Adapter, Mapped, _is_array, _t, classifier_head, jsonable, projection_head


class Detectron2Adapter(Adapter):
    name = "detectron2"
    priority = 40
    description = "detectron2 backbone or detector (.pkl with numpy arrays, or .pth)"

    def detect(self, obj):
        model = obj.get("model")
        return isinstance(model, Mapping) and any(
            k in model for k in ("stem.conv1.weight", "backbone.bottom_up.stem.conv1.weight"))

    def convert(self, obj, select, where):
        model = obj["model"]
        trunk, rest, prefix = from_detectron2(model)
        heads: dict[str, Head] = {}
        unplaced: list[str] = []
        ignored: dict[str, Any] = {}
        head_keys = {k: _t(v) for k, v in rest.items() if _is_array(v) and k.startswith(("stem.fc", "fc.", "linear."))}
        if head_keys:
            if all(k.startswith("linear.") for k in head_keys) and "linear.weight" in head_keys:
                rows = int(head_keys["linear.weight"].shape[0])
                heads["classifier"] = classifier_head(head_keys, "linear.", "imagenet1k" if rows == 1000 else "custom",
                                                      f"linear: {rows}-way classifier")
            else:
                heads["projection"] = projection_head(head_keys, "head tensors carried in the detectron2 file")
        for k in rest:
            if k in head_keys:
                continue
            inner = k[len(prefix):] if k.startswith(prefix) else None
            if inner is not None and inner.startswith(("stem.", "res")):
                unplaced.append(k)  # looks like trunk, but no ResNet name
            elif prefix:
                group = "detector:" + k.split(".", 1)[0] + ("." + k.split(".")[1] if k.startswith("backbone.") else "")
                ignored[group] = ignored.get(group, 0) + 1
            else:
                ignored[k] = 1
        pre, stride, how = preprocess_from_pkl(obj, rest)
        meta = {"source": "detectron2", "author": jsonable(obj.get("__author__")),
                "matching_heuristics": jsonable(obj.get("matching_heuristics")), "model_prefix": prefix,
                "preprocess_source": how, "stride_in_1x1": stride}
        if "assumed" in how:
            meta["warnings"] = [f"input preprocessing and stride placement are not recorded in the file: {how}"]
        if isinstance(obj.get("mopro_bench"), Mapping):
            meta["mopro_bench"] = jsonable(dict(obj["mopro_bench"]))
        return Mapped(trunk, heads, unplaced, ignored, meta, pre, stride)




ADAPTER = Detectron2Adapter()
