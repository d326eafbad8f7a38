"""Named checkpoint adapters: detect a file's layout, map its trunk to torchvision names, keep its heads aside.

Detection tries the adapters in :data:`ADAPTERS` order; the first whose ``detect`` accepts the unpickled object maps
it. Every adapter yields one :class:`Mapped` network (the trunk with canonical torchvision keys, no ``fc``) which
:func:`~mopro_bench.checkpoints.verify.build_verified` checks for 100% coverage before anything is loaded.

==============  ===========================================================================================
adapter         layout
==============  ===========================================================================================
``mopro``       MoPro reference ``{epoch, arch, state_dict, optimizer}`` with ``module.encoder_q.`` (and
                ``encoder_k``), ``classifier`` [C, D], ``fc1``/``fc2``, ``queue``, ``queue_ptr``,
                ``prototypes``; and our pretrainer's files (top-level ``mopro_bench`` dict, no ``module.``)
``moco``        MoCo v1/v2 and PCL ``state_dict`` with ``module.encoder_q.``/``encoder_k.`` and ``fc`` or
                ``fc.0``/``fc.2``; MoCo v3 ResNets (``module.base_encoder.``/``momentum_encoder.``)
``dino``        DINO training checkpoint: ``teacher``/``student`` with ``module.backbone.``/``module.head.``
                and a pickled ``argparse.Namespace`` ``args``
``detectron2``  ``{model: {stem.conv1.*, res2.0.conv1.*, res2.0.shortcut.* ...}}`` (numpy), also whole detectors
                (``backbone.bottom_up.``)
``caffe2``      Detectron/MSRA caffe2 blobs (``conv1_w``, ``res2_0_branch2a_w``, ``..._bn_s``/``_bn_b``, ``pred_w``),
                bare or under ``blobs``
``swav``        bare dict with ``module.`` plus ``projection_head.*`` and ``prototypes.*`` (also
                DeepCluster-v2, SeLa-v2)
``timm``        timm training checkpoint ``{state_dict, state_dict_ema, arch, args, version ...}``
``torchvision`` bare torchvision ResNet dict (supervised with ``fc``; DINO backbone-only, BYOL/SimCLR
                converted, timm ResNets), optionally wrapped (``{state_dict: ...}``, ``{model: ...}``) and/or
                prefixed (``module.``, ``backbone.``, ...)
==============  ===========================================================================================
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mopro_bench.backbones import ARCHS, Preprocess, parse_arch
from mopro_bench.checkpoints import Head, LoadedCheckpoint
from mopro_bench.checkpoints.detectron2 import from_detectron2, preprocess_from_pkl
from mopro_bench.checkpoints.safeload import read_checkpoint
from mopro_bench.checkpoints.verify import VIT_MARKERS, bad_values, build_verified, describe_bad_values, first, is_trunk_key
from mopro_bench.errors import BenchError

WEBVISION_SPACES = {1000: "webvision1k", 5000: "webvision5k"}


@dataclass
class Mapped:
    """One network of a file, mapped: trunk in torchvision names, heads, what was left out and why."""

    trunk: dict[str, torch.Tensor]
    heads: dict[str, Head] = field(default_factory=dict)
    unplaced: list[str] = field(default_factory=list)  # keys inside the network that are neither trunk nor a head
    ignored: dict[str, Any] = field(default_factory=dict)  # group -> number of tensors (or a note) not used
    meta: dict[str, Any] = field(default_factory=dict)
    preprocess: Preprocess = field(default_factory=Preprocess)
    stride_in_1x1: bool = False
    derived: list[str] = field(default_factory=list)  # trunk tensors computed exactly from others (caffe2 frozen BN)


# ---------------------------------------------------------------------------------------------------------- helpers

def _is_array(v: Any) -> bool:
    return isinstance(v, torch.Tensor | np.ndarray)


def is_tensor_dict(d: Any) -> bool:
    return isinstance(d, Mapping) and len(d) > 0 and all(isinstance(k, str) and _is_array(v) for k, v in d.items())


def strip_module(sd: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """Remove a DataParallel/DDP ``module.`` prefix carried by every key."""
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}, True
    return dict(sd), False


def sub(sd: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _t(v: Any) -> torch.Tensor:
    return v if isinstance(v, torch.Tensor) else torch.from_numpy(v if v.flags.c_contiguous else v.copy())


def partition(sd: Mapping[str, Any], groups: Mapping[str, str]) -> tuple[dict[str, torch.Tensor], dict[str, dict], list[str]]:
    """Split a network's keys into trunk, named head groups (by key prefix) and the rest (unplaced)."""
    trunk: dict[str, torch.Tensor] = {}
    found: dict[str, dict] = {}
    rest: list[str] = []
    for k, v in sd.items():
        if is_trunk_key(k):
            trunk[k] = _t(v)
            continue
        for prefix, group in groups.items():
            if k == prefix.rstrip(".") or k.startswith(prefix):
                found.setdefault(group, {})[k] = _t(v)
                break
        else:
            rest.append(k)
    return trunk, found, rest


def classifier_head(d: dict[str, torch.Tensor], prefix: str, space: str | None, desc: str) -> Head:
    sd = {k[len(prefix):]: v for k, v in d.items()}
    w = sd["weight"]
    return Head(kind="classifier", state_dict=sd, num_classes=int(w.shape[0]), class_space=space, description=desc)


def projection_head(d: dict[str, torch.Tensor], desc: str, kind: str = "projection") -> Head:
    return Head(kind=kind, state_dict=dict(d), description=desc)


def _fc_head(d: dict[str, torch.Tensor], prefix: str = "fc.") -> tuple[str, Head]:
    """A torchvision ``fc``: a single Linear is a classifier (ImageNet-1k when it has 1000 rows), an MLP a projection."""
    names = {k[len(prefix):] for k in d}
    if names <= {"weight", "bias"} and "weight" in names and d[prefix + "weight"].ndim == 2:
        rows = int(d[prefix + "weight"].shape[0])
        space = "imagenet1k" if rows == 1000 else "custom"
        return "classifier", classifier_head(d, prefix, space, f"fc: {rows}-way linear classifier"
                                             + (" (ImageNet-1k, torchvision class order)" if rows == 1000 else ""))
    return "projection", projection_head(d, "fc: MLP head")


def jsonable(v: Any) -> Any:
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return v.item()
    return str(v)


def _count(sd: Mapping[str, Any]) -> int:
    return sum(1 for v in sd.values() if _is_array(v))


def _pick(select: str | None, available: list[str], adapter: str, where: str) -> str:
    if not available:
        raise BenchError(f"{where} (adapter {adapter}) holds no network to select", "pass a complete checkpoint")
    if select is None:
        return available[0]
    if select not in available:
        raise BenchError(f"--select {select} does not apply to {where} (adapter {adapter})",
                         "choose one of: " + ", ".join(available))
    return select


# --------------------------------------------------------------------------------------------------------- adapters

class Adapter:
    name = ""
    description = ""

    def detect(self, obj: Mapping[str, Any]) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def selects(self, obj: Mapping[str, Any]) -> list[str]:
        """Networks the file holds (first = default); empty when there is one."""
        return []

    def convert(self, obj: Mapping[str, Any], select: str | None, where: str) -> Mapped:  # pragma: no cover
        raise NotImplementedError


def _state_dict(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    sd = obj.get("state_dict")
    return strip_module(sd)[0] if is_tensor_dict(sd) else None


class MoProAdapter(Adapter):
    name = "mopro"
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


class MocoAdapter(Adapter):
    name = "moco"
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


class DinoAdapter(Adapter):
    name = "dino"
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


class Detectron2Adapter(Adapter):
    name = "detectron2"
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


class SwavAdapter(Adapter):
    name = "swav"
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


class TimmAdapter(TorchvisionAdapter):
    name = "timm"
    description = "timm training checkpoint (state_dict / state_dict_ema, arch, args)"

    def detect(self, obj):
        return (not is_tensor_dict(obj) and is_tensor_dict(obj.get("state_dict")) and "arch" in obj
                and ("version" in obj or "state_dict_ema" in obj) and bool(_networks(obj)))

    def convert(self, obj, select, where):
        m = super().convert(obj, select, where)
        args = obj.get("args")
        m.meta.update({"source": "timm train.py", "version": jsonable(obj.get("version")),
                       "metric": jsonable(obj.get("metric")),
                       "args": {k: jsonable(v) for k, v in vars(args).items()} if isinstance(args, argparse.Namespace)
                       else None})
        return m


ADAPTERS: tuple[Adapter, ...] = (MoProAdapter(), MocoAdapter(), DinoAdapter(), Detectron2Adapter(), Caffe2Adapter(),
                                 SwavAdapter(), TimmAdapter(), TorchvisionAdapter())
ADAPTER_NAMES = tuple(a.name for a in ADAPTERS)
SELECT_NAMES = ("encoder_q", "encoder_k", "base_encoder", "momentum_encoder", "teacher", "student", "state_dict",
                "state_dict_ema")


# ------------------------------------------------------------------------------------------------------------- load

def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = list(obj)
        inner = next((v for v in obj.values() if isinstance(v, Mapping) and v), None)
        s = f"top-level keys {first([str(k) for k in keys], 6)}"
        if inner is not None and not is_tensor_dict(obj):
            s += f"; first nested keys {first([str(k) for k in inner], 4)}"
        return s
    return f"a {type(obj).__name__}"


def detect_adapter(obj: Mapping[str, Any], where: str) -> Adapter:
    for a in ADAPTERS:
        if a.detect(obj):
            return a
    tensor_dicts = [obj] if is_tensor_dict(obj) else [v for v in obj.values() if is_tensor_dict(v)]
    for d in tensor_dicts:
        vit = [k for k in d if any(m in k for m in VIT_MARKERS)]
        if vit:
            raise BenchError(f"{where} is a Vision Transformer checkpoint ({first(vit)}); this suite evaluates ResNets",
                             "pass a ResNet checkpoint")
    if not tensor_dicts:
        raise BenchError(f"{where} holds no state dict of tensors ({_describe(obj)})",
                         "pass a checkpoint with model weights (e.g. {'state_dict': ...} or a bare state dict)")
    raise BenchError(f"{where} is no known ResNet checkpoint layout ({_describe(obj)})",
                     "supported: " + ", ".join(ADAPTER_NAMES) + " (`mopro-bench inspect --formats` describes them)")


def load_file(path: str | Path, arch: str | None = None, trust: bool = False, select: str | None = None,
              check_values: bool = True) -> LoadedCheckpoint:
    """Read, detect, map and verify the checkpoint at ``path``.

    ``sha256`` is the hash of the bytes the weights were deserialized from (the file is read once). With
    ``check_values`` a backbone tensor holding NaN/Inf or a negative BatchNorm running variance is a BenchError;
    without it (``inspect``) they are listed in ``coverage`` and ``meta["refused"]``."""
    path = Path(path)
    where = f"checkpoint {path}"
    raw = read_checkpoint(path, trust=trust)
    obj = raw.obj
    notes: list[str] = []
    if isinstance(obj, nn.Module):  # only reachable with trust=True
        obj = obj.state_dict()
        notes.append("the file pickles a whole nn.Module; its state_dict was used")
    if not isinstance(obj, Mapping):
        raise BenchError(f"{path} is not a checkpoint (it holds {_describe(obj)}, not a dict of weights)",
                         "pass a state dict or a training checkpoint")
    if not obj:
        raise BenchError(f"{path} is an empty dict (no weights)", "pass a checkpoint that holds model weights")
    adapter = detect_adapter(obj, where)
    available = adapter.selects(obj)
    if select is not None and not available:
        raise BenchError(f"--select {select} does not apply to {where} (adapter {adapter.name}): it holds one network",
                         "drop --select")
    m = adapter.convert(obj, select, where)
    chosen = m.meta.get("select") or (select if select is not None else (available[0] if available else None))
    bb, coverage = build_verified(m.trunk, arch=arch, adapter=adapter.name, where=where, stride_in_1x1=m.stride_in_1x1,
                                  unplaced=m.unplaced)
    warnings = list(notes) + list(m.meta.pop("warnings", []))
    refused = describe_bad_values(coverage["nonfinite"], coverage["negative_var"])
    if refused and check_values:
        raise BenchError(f"{where} (adapter {adapter.name}) was refused: {refused}",
                         "the training diverged or the file is corrupt: use an earlier checkpoint of the run "
                         "(`mopro-bench inspect --ckpt FILE` lists every bad tensor)")
    in_file = m.meta.get("arch_in_file")
    if isinstance(in_file, str) and parse_arch(in_file)[0] in ARCHS and parse_arch(in_file) != (bb.arch, bb.width):
        warnings.append(f"the file says arch {in_file!r} but its tensors are {bb.name}; {bb.name} was loaded")
    for hname in list(m.heads):
        h = m.heads[hname]
        h.state_dict = {k: v.detach().clone() for k, v in h.state_dict.items()}  # own memory, not the file's mapping
        h.nonfinite = bad_values(h.state_dict)[0]
        if h.nonfinite:
            warnings.append(f"head {hname} holds NaN/Inf values ({first(h.nonfinite)}): tasks that use it refuse it")
        if h.kind == "classifier" and h.state_dict["weight"].shape[-1] != bb.feature_dim:
            warnings.append(f"head {hname} takes {h.state_dict['weight'].shape[-1]}-d input, not the backbone's "
                            f"{bb.feature_dim}-d feature; kept aside as {hname}_unusable")
            h.kind = "other"
            m.heads[f"{hname}_unusable"] = m.heads.pop(hname)
    coverage.update({"select": chosen, "selectable": available, "heads": sorted(m.heads), "ignored": m.ignored,
                     "derived": m.derived})
    meta = {"adapter": adapter.name, "adapter_description": adapter.description, "container": raw.container,
            "trusted": raw.trusted, "select": chosen, "selectable": available, **m.meta, "warnings": warnings}
    if refused:
        meta["refused"] = refused
    if m.stride_in_1x1:
        meta["stride_in_1x1"] = True
    name = path.name if chosen is None or not available or chosen == available[0] else f"{path.name}#{chosen}"
    return LoadedCheckpoint(
        backbone=bb, format=adapter.name, arch=bb.arch, width=bb.width, sha256=raw.sha256, path=str(path),
        name=name, heads=m.heads, preprocess=m.preprocess, meta=meta, coverage=coverage,
    )
