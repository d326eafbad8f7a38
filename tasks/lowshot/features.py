"""Frozen features for the low-shot SVMs: the shared (cached) extractor on the pooled backbone output (ResNet / ConvNeXt
``pool5``), on a ViT's CLS token after the final LayerNorm (``cls``, the ViT protocols, bicubic resize), or on a ResNet
stage average-pooled as VISSL's low-shot configs do (:class:`PooledStage`); non-finite features are refused and the
protocol's L2 normalisation is applied. :func:`check_feature_layer` refuses a layer the checkpoint's family does not
have before anything runs; :func:`feature_record` says in the result which feature the SVMs saw."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mopro_bench.errors import BenchError
from mopro_bench.features import extract_features
from mopro_bench.registry import RunContext
from mopro_bench.tasks.lowshot.protocols import STAGE_POOLS, LowShotSVMProtocol, resize_interpolation, vit_protocol_id


def check_feature_layer(proto: LowShotSVMProtocol, ck) -> None:
    """Refuse (exit 2, one line) a ``feature_layer`` the checkpoint's backbone family has no such feature for:
    res4/res5 pool ResNet stages, ``cls`` is a ViT's class token, ``pool5`` a CNN's pooled output."""
    family, layer, name = ck.family, proto.feature_layer, ck.name
    if layer in STAGE_POOLS and family != "resnet":
        raise BenchError(f"feature_layer={layer} average-pools a ResNet stage (VISSL); {name} is a {family} backbone",
                         "use --set feature_layer=pool5 (the backbone's pooled feature) or a ResNet checkpoint")
    if layer == "cls" and family != "vit":
        raise BenchError(f"feature_layer=cls is a Vision Transformer's CLS token; {name} is a {family} backbone",
                         "use the task's pooled-feature protocol (@mopro) for ResNet/ConvNeXt checkpoints")
    if layer == "pool5" and family == "vit":
        raise BenchError(f"feature_layer=pool5 is a CNN's pooled output; {name} is a vit backbone",
                         f"use {vit_protocol_id(proto)} (its CLS token)")


def feature_record(ck, proto: LowShotSVMProtocol) -> dict:
    """``details.backbone``: the family, the backbone's own feature in words, and the feature the SVMs were trained on
    (the pooled output / CLS token, or the VISSL-pooled stage with its kernel and dimension) with its resize."""
    backbone = ck.backbone
    words = getattr(backbone, "feature", None)
    svm = words
    if proto.feature_layer in STAGE_POOLS:
        pooled = PooledStage(backbone, proto.feature_layer, proto.image_size)
        svm = (f"{proto.feature_layer} map average-pooled with AvgPool2d({pooled.kernel}, stride {pooled.stride}), "
               f"flattened: {pooled.feature_dim}-d")
    return {"family": ck.family, "arch": ck.arch, "feature": words,
            "feature_layer": proto.feature_layer, "svm_feature": svm,
            "interpolation": resize_interpolation(proto),
            "normalisation": f"x / (||x||_2 + {proto.feature_norm_eps:g})" if proto.feature_norm == "l2" else "none"}


class PooledStage(nn.Module):
    """A ResNet trunk up to ``res4`` (layer3) or ``res5`` (layer4) whose map is average-pooled as VISSL's low-shot
    configs do (:data:`STAGE_POOLS`) and flattened (channel-major, like ``torch.flatten``). At 224x224 the kernel and
    stride are VISSL's; a smaller map (tests on tiny images) scales both with the map size."""

    def __init__(self, trunk: nn.Module, layer: str, image_size: int):
        super().__init__()
        missing = [a for a in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
                   if not hasattr(trunk, a)]
        if missing:
            raise BenchError(f"feature_layer={layer} needs a ResNet trunk (conv1 .. layer4); this backbone has no "
                             f"{missing[0]}", "use --set feature_layer=pool5 for this checkpoint")
        self.trunk, self.layer = trunk, layer
        full = 14 if layer == "res4" else 7  # map size at 224x224
        size = -(-image_size // (16 if layer == "res4" else 32))
        k, s = STAGE_POOLS[layer]
        if size < full:
            k, s = max(1, round(k * size / full)), max(1, round(s * size / full))
        self.kernel, self.stride = min(k, size), s
        out = (size - self.kernel) // self.stride + 1
        chans = getattr(trunk, "stage_channels", {}).get(layer)
        if chans is None:
            blk = (trunk.layer3 if layer == "res4" else trunk.layer4)[-1]
            chans = getattr(blk, "conv3", getattr(blk, "conv2", None)).out_channels
        self.feature_dim = int(chans) * out * out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.trunk
        x = t.layer3(t.layer2(t.layer1(t.maxpool(t.relu(t.bn1(t.conv1(x)))))))
        if self.layer == "res5":
            x = t.layer4(x)
        return torch.flatten(F.avg_pool2d(x, self.kernel, self.stride), 1)


def svm_features(ck, paths, rel, ctx: RunContext, proto: LowShotSVMProtocol, dataset_id: str, desc: str) -> np.ndarray:
    """The protocol's features of ``paths`` (cached by :func:`~mopro_bench.features.extract_features` under
    ``dataset_id`` plus a suffix naming any feature but ``pool5``), checked finite and normalised."""
    interpolation = resize_interpolation(proto)
    if proto.feature_layer == "cls":
        # the backbone's forward is the CLS token after the final norm (VisionTransformerBackbone); its own id keeps
        # these entries apart from any other feature of the same checkpoint and images
        dataset_id = f"{dataset_id}#cls"
    elif proto.feature_layer != "pool5":
        # the shared extractor runs `ck.backbone`: hand it a copy whose backbone returns the pooled stage, under a
        # dataset id that names the layer and pooling, so its cache entries never mix with the 2048-d features
        pooled = PooledStage(ck.backbone, proto.feature_layer, proto.image_size)
        ck = copy.copy(ck)
        ck.backbone = pooled
        dataset_id = f"{dataset_id}#{proto.feature_layer}-avgpool{pooled.kernel}s{pooled.stride}"
    f = extract_features(ck, paths, ctx, dataset_id=dataset_id, rel_paths=rel, image_size=proto.image_size,
                         resize=proto.resize, square=proto.resize_mode == "square", interpolation=interpolation,
                         desc=desc).astype(np.float64)
    bad = ~np.isfinite(f).all(axis=1)
    if bad.any():  # an SVM on NaN features gives chance-level numbers that look like a result
        raise BenchError(f"{desc}: the backbone produced non-finite features (NaN/inf) for {int(bad.sum())} of {len(f)} "
                         f"images (first: {rel[int(np.flatnonzero(bad)[0])]})",
                         "check the checkpoint with `mopro-bench inspect` (non-finite weights, negative BN running_var)")
    if proto.feature_norm == "l2":
        f = f / (np.linalg.norm(f, axis=1, keepdims=True) + proto.feature_norm_eps)
    return f
