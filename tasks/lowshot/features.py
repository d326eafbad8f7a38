"""Frozen features for the low-shot SVMs: the shared (cached) extractor on the pooled backbone output, or on a ResNet
stage average-pooled as VISSL's low-shot configs do (:class:`PooledStage`); non-finite features are refused and the
protocol's L2 normalisation is applied."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mopro_bench.errors import BenchError
from mopro_bench.features import extract_features
from mopro_bench.registry import RunContext
from mopro_bench.tasks.lowshot.protocols import STAGE_POOLS, LowShotSVMProtocol


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
    if proto.feature_layer != "pool5":
        # the shared extractor runs `ck.backbone`: hand it a copy whose backbone returns the pooled stage, under a
        # dataset id that names the layer and pooling, so its cache entries never mix with the 2048-d features
        pooled = PooledStage(ck.backbone, proto.feature_layer, proto.image_size)
        ck = copy.copy(ck)
        ck.backbone = pooled
        dataset_id = f"{dataset_id}#{proto.feature_layer}-avgpool{pooled.kernel}s{pooled.stride}"
    f = extract_features(ck, paths, ctx, dataset_id=dataset_id, rel_paths=rel, image_size=proto.image_size,
                         resize=proto.resize, square=proto.resize_mode == "square", desc=desc).astype(np.float64)
    bad = ~np.isfinite(f).all(axis=1)
    if bad.any():  # an SVM on NaN features gives chance-level numbers that look like a result
        raise BenchError(f"{desc}: the backbone produced non-finite features (NaN/inf) for {int(bad.sum())} of {len(f)} "
                         f"images (first: {rel[int(np.flatnonzero(bad)[0])]})",
                         "check the checkpoint with `mopro-bench inspect` (non-finite weights, negative BN running_var)")
    if proto.feature_norm == "l2":
        f = f / (np.linalg.norm(f, axis=1, keepdims=True) + proto.feature_norm_eps)
    return f
