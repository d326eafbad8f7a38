"""Detectron/MSRA caffe2 blobs (``conv1_w``, ``res2_0_branch2a_w``, ``..._bn_s``/``_bn_b``, ``pred_w``), bare or
under ``blobs``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from mopro_bench.checkpoints import Head
from mopro_bench.checkpoints.formats.base import Adapter, Mapped, _is_array, _t

_C2_BLOCK = re.compile(r"^res([2-5])_(\d+)_branch(1|2a|2b|2c)_(w|bn_s|bn_b|bn_rm|bn_riv)$")
_C2_LEAF = {"w": "weight", "bn_s": "weight", "bn_b": "bias", "bn_rm": "running_mean", "bn_riv": "running_var"}
_C2_PART = {"2a": ("conv1", "bn1"), "2b": ("conv2", "bn2"), "2c": ("conv3", "bn3"), "1": ("downsample.0", "downsample.1")}
BN_EPS = 1e-5


def caffe2_to_tv_key(key: str) -> str | None:
    """Detectron/MSRA caffe2 blob names -> torchvision (``res3_1_branch2b_bn_s`` -> ``layer2.1.bn2.weight``)."""
    if key == "conv1_w":
        return "conv1.weight"
    if key.startswith("res_conv1_bn_"):
        leaf = _C2_LEAF.get("bn_" + key[len("res_conv1_bn_"):])
        return f"bn1.{leaf}" if leaf else None
    m = _C2_BLOCK.match(key)
    if not m:
        return None
    stage, block, branch, leaf = m.groups()
    conv, bn = _C2_PART[branch]
    return f"layer{int(stage) - 1}.{block}.{conv if leaf == 'w' else bn}.{_C2_LEAF[leaf]}"


class Caffe2Adapter(Adapter):
    name = "caffe2"
    priority = 50
    description = "Detectron/MSRA caffe2 ResNet blobs (detectron2's ImageNetPretrained/MSRA/R-50.pkl, ...)"

    @staticmethod
    def _blobs(obj):
        return obj["blobs"] if isinstance(obj.get("blobs"), Mapping) else obj

    def detect(self, obj):
        b = self._blobs(obj)
        return "conv1_w" in b and any(str(k).startswith("res2_0_branch2a") for k in b)

    def convert(self, obj, select, where):
        blobs = self._blobs(obj)
        trunk: dict[str, torch.Tensor] = {}
        heads: dict[str, Head] = {}
        unplaced: list[str] = []
        ignored: dict[str, Any] = {}
        for k, v in blobs.items():
            if not _is_array(v):
                continue
            tv = caffe2_to_tv_key(k)
            if tv is not None:
                trunk[tv] = _t(v).float() if _t(v).dtype == torch.float64 else _t(v)
            elif k.endswith("_momentum"):
                ignored["momentum buffers"] = ignored.get("momentum buffers", 0) + 1
            elif k in ("pred_w", "pred_b", "fc1000_w", "fc1000_b"):
                pass
            elif k.startswith(("res", "conv1")):
                unplaced.append(k)
            else:
                ignored[k] = 1
        for w, b in (("pred_w", "pred_b"), ("fc1000_w", "fc1000_b")):
            if w in blobs:
                sd = {"weight": _t(blobs[w]).reshape(_t(blobs[w]).shape[0], -1)}
                if b in blobs:
                    sd["bias"] = _t(blobs[b])
                rows = int(sd["weight"].shape[0])
                heads["classifier"] = Head(kind="classifier", state_dict=sd, num_classes=rows,
                                           class_space="imagenet1k" if rows == 1000 else "custom",
                                           description=f"{w}: {rows}-way classifier (caffe synset order = sorted wnids)")
        # caffe2 ResNets use frozen BN (AffineChannel: y = s*x + b): running_mean 0 and running_var 1-eps reproduce it
        derived = []
        for k in [k for k in trunk if k.endswith(".weight") and (k.startswith("bn1.") or ".bn" in k or "downsample.1" in k)]:
            base = k[: -len("weight")]
            if base + "running_mean" not in trunk and base + "running_var" not in trunk:
                n = trunk[k].shape[0]
                trunk[base + "running_mean"] = torch.zeros(n)
                trunk[base + "running_var"] = torch.full((n,), 1.0 - BN_EPS)
                derived += [base + "running_mean", base + "running_var"]
        meta = {"source": "caffe2 (Detectron / MSRA)", "preprocess_source": "caffe2 MSRA convention (BGR, 0..255, "
                "caffe mean, stride in the 1x1 conv)", "stride_in_1x1": True}
        from mopro_bench.checkpoints.detectron2 import CAFFE_PREPROCESS

        return Mapped(trunk, heads, unplaced, ignored, meta, CAFFE_PREPROCESS, True, derived)


ADAPTER = Caffe2Adapter()
