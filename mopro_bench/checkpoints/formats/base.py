"""The shared part of every checkpoint format: :class:`Adapter` (the interface a format implements), :class:`Mapped`
(what ``convert`` returns) and the key/head helpers the formats share.

An adapter has a ``name`` (its format name, shown in records and `inspect --formats`), a ``description``, a detection
``priority`` (lower is tried first; the first whose ``detect`` accepts the unpickled object maps it), ``detect(obj)``,
``selects(obj)`` (the networks a file holds, first = default) and ``convert(obj, select, where) -> Mapped``."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mopro_bench.backbones import Preprocess, is_trunk_key, trunk_family
from mopro_bench.checkpoints import Head
from mopro_bench.errors import BenchError

WEBVISION_SPACES = {1000: "webvision1k", 5000: "webvision5k"}
# non-trunk groups of a ViT / ConvNeXt network in timm names (see family_parts)
FAMILY_GROUPS = {"head.": "head", "fc_norm.": "fc_norm", "register_tokens": "registers", "mask_token": "mask_token",
                 "masked_embed": "masked_embed", "decoder_": "decoder", "dist_token": "distill", "head_dist.": "distill"}


@dataclass
class Mapped:
    """One network of a file, mapped: trunk in torchvision (ResNet) or timm (ViT, ConvNeXt) names, heads, what was left
    out and why."""

    trunk: dict[str, torch.Tensor]
    heads: dict[str, Head] = field(default_factory=dict)
    unplaced: list[str] = field(default_factory=list)  # keys inside the network that are neither trunk nor a head
    ignored: dict[str, Any] = field(default_factory=dict)  # group -> number of tensors (or a note) not used
    meta: dict[str, Any] = field(default_factory=dict)
    preprocess: Preprocess = field(default_factory=Preprocess)
    stride_in_1x1: bool = False
    derived: list[str] = field(default_factory=list)  # trunk tensors computed exactly from others (caffe2 frozen BN)
    hints: dict[str, Any] = field(default_factory=dict)  # what no shape shows, e.g. a ViT's {"num_heads": 12}

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


def linear_classifier(d: dict[str, torch.Tensor], prefix: str, what: str, in1k_order: str,
                      notes: dict[int, str] | None = None) -> Head:
    """The Linear ``prefix{weight,bias}`` as a classifier head: ``imagenet1k`` when it has 1000 rows (in
    ``in1k_order``), else ``custom``; ``notes`` name other row counts in the description (21841: ImageNet-22k)."""
    rows = int(d[prefix + "weight"].shape[0])
    note = f"ImageNet-1k, {in1k_order}" if rows == 1000 else (notes or {}).get(rows)
    return classifier_head(d, prefix, "imagenet1k" if rows == 1000 else "custom",
                           f"{what}: {rows}-way linear classifier" + (f" ({note})" if note else ""))


def vit_hints(arch: Any, embed_dim: int, table: dict[str, tuple[int, int, int]], source: str) -> dict[str, Any]:
    """``num_heads``/``depth`` of a ViT from the file's architecture name, by its authors' size ``table`` (arch ->
    (embed_dim, depth, heads)), when that size's width agrees with the tensors'; else ``{}``."""
    if isinstance(arch, str) and arch in table and table[arch][0] == embed_dim:
        _, depth, heads = table[arch]
        return {"num_heads": heads, "depth": depth, "source": f"arch {arch!r} in the file",
                "num_heads_source": f"{source}: {arch} has {heads} heads"}
    return {}


def namespace_args(args: Any) -> dict[str, Any] | None:
    """A pickled ``argparse.Namespace`` of training arguments as a JSON-able dict (None for anything else)."""
    return {k: jsonable(v) for k, v in vars(args).items()} if isinstance(args, argparse.Namespace) else None


def _fc_head(d: dict[str, torch.Tensor], prefix: str = "fc.") -> tuple[str, Head]:
    """A torchvision ``fc``: a single Linear is a classifier (ImageNet-1k when it has 1000 rows), an MLP a projection."""
    names = {k[len(prefix):] for k in d}
    if names <= {"weight", "bias"} and "weight" in names and d[prefix + "weight"].ndim == 2:
        return "classifier", linear_classifier(d, prefix, "fc", "torchvision class order")
    return "projection", projection_head(d, "fc: MLP head")


def family_parts(sd: Mapping[str, Any], where: str, adapter: str, head_desc: str = "head"
                 ) -> tuple[dict[str, torch.Tensor], dict[str, Head], dict[str, Any], list[str]]:
    """One ViT / ConvNeXt network in timm names -> (trunk, heads, ignored groups, unplaced keys).

    ``head.weight``/``head.bias`` (ViT) and ``head.fc.*`` (ConvNeXt) make a linear classifier (1000 rows: ImageNet-1k,
    timm's and torchvision's sorted-wnid order); any other ``head.*`` is a projection head (MoCo v3's MLP).
    ``mask_token`` (DINOv2, MAE), iBOT's ``masked_embed`` and MAE's ``decoder_*`` are training-only and counted as
    ignored. ``fc_norm``
    (global-pool classifiers, MAE fine-tuned) and ``register_tokens`` (DINOv2 with registers) are passed on with the
    trunk, where :func:`mopro_bench.backbones.vit.describe_vit` refuses them by name; a DeiT distillation token is
    refused here."""
    from mopro_bench.checkpoints.verify import first

    trunk, groups, rest = partition(sd, FAMILY_GROUPS)
    if "distill" in groups:
        raise BenchError(f"{where} (adapter {adapter}) is a distilled DeiT ({first(groups['distill'])}): its distillation "
                         "token is not part of the ViT this suite builds", "use a ViT without a distillation token")
    for g in ("fc_norm", "registers"):
        trunk.update(groups.pop(g, {}))
    ignored: dict[str, Any] = {}
    for g in ("mask_token", "masked_embed"):
        if g in groups:
            ignored[g] = len(groups[g])
    if "decoder" in groups:
        ignored["decoder"] = len(groups["decoder"])
    heads: dict[str, Head] = {}
    head = groups.get("head") or {}
    prefix = "head.fc." if trunk_family(trunk) == "convnext" else "head."
    linear = {k for k in head if k in (prefix + "weight", prefix + "bias")}
    if head and linear == set(head) and prefix + "weight" in head and head[prefix + "weight"].ndim == 2:
        heads["classifier"] = linear_classifier(head, prefix, head_desc, "sorted-wnid order")
    elif head:
        if prefix == "head.fc.":  # a ConvNeXt head other than norm + fc (timm's head_hidden_size pre-logits MLP)
            rest += sorted(head)
        else:
            heads["projection"] = projection_head(head, f"{head_desc}: MLP")
    return trunk, heads, ignored, rest


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

class Adapter:
    name = ""
    description = ""
    priority = 100  # detection order: lower is tried first (specific layouts before the generic torchvision one)

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
