"""Low-shot linear SVMs on frozen features: VOC07 (mAP) and Places205 (top-1).

Protocols (every constant is a field of the protocol dataclass and lands in the result record):

* ``voc_lowshot@mopro`` (default): pooled features, each divided by (L2 norm + 1e-5). For k in {1, 2, 4, 8, 16} and
  5 samples per k: for each of the 20 classes draw k trainval images positive for it; the training set is the
  concatenation (an image can appear twice; difficult = negative). One binary SVM per class (squared hinge, L2,
  C = 0.5, class weight {+1: 2, -1: 1}, regularised bias with intercept_scaling 1). AP on the whole VOC07 test set
  (difficult = negative), all-point interpolated; mean over classes, then mean +- std over the samples.
* ``voc_lowshot@goyal19`` (v2): Goyal et al. 2019 / VISSL settings -- res5 maps average-pooled as VISSL does
  (AvgPool2d(6, 1) -> 2x2x2048 = 8192-d; ``--set feature_layer=res4``: AvgPool2d(8, 3) -> 3x3x1024 = 9216-d),
  Resize(224) + CenterCrop(224), per class k positives and 19k negatives (difficult ignored at train and test),
  class weight {+1: 2, -1: 1}, k in {1, 2, 4, 8, 16, 32, 64, 96}; the cost from {0.01, ..., 1000} chosen by
  stratified cross-validation inside each training sample (honest default). A dataset with too few images for a k
  (the generated tiny VOC for k >= 8) is refused up front (exit 2, naming k and the largest k it supports).
* ``voc_lowshot@goyal19-published`` (v2): the same, but the cost with the best mean *test* mAP per k, as the
  original benchmark reported it -- labelled ``test-set (as published)`` in the result. One known deviation: VISSL
  squashes images with Resize([224, 224]); the shared extractor crops instead.
* ``places_lowshot@mopro`` (default): k images per class of the 205, one-vs-rest SVMs (C = 0.5, no class weights),
  top-1 accuracy on the whole val set.

All classes x samples x costs of one k are solved as one batched problem (:mod:`mopro_bench.tasks.lowshot.svm`, exact liblinear
primal, CPU or GPU); ``--solver sklearn`` runs sklearn's LinearSVC as the reference. Solver constants are checked
(``torch_max_iter``/``max_iter`` >= 1, tolerances > 0, costs > 0, ...: exit 2). Convergence is counted per problem
(``details.solver.by_k[k].converged / not_converged``): if none converged the run stops (exit 2); if some did not,
their last iterate is used, a warning is printed and a note lands in ``details.selection_notes``. Features come from the on-disk
cache (:mod:`mopro_bench.features`), so a second evaluation of the same checkpoint extracts nothing.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mopro_bench.errors import BenchError
from mopro_bench.features import CACHE_STATS, extract_features
from mopro_bench.io import atomic_save_with, sha256_lines
from mopro_bench.metrics.ap import ap_per_class, mean_ap
from mopro_bench.registry import Protocol, RunContext, Task, TaskOutput
from mopro_bench.tasks.lowshot import svm
from mopro_bench.tasks.lowshot.splits import (
    StableRNG,
    check_known,
    draw_splits,
    load_splits,
    per_class_sample,
    save_splits,
    splits_sha256,
    voc_pos_neg_sample,
    voc_union_sample,
)

SAMPLINGS = ("union-of-positives", "positives-and-negatives-per-class")
SELECTIONS = ("fixed", "cv", "test")
# memory budget for one batched solve (stacked design matrices); larger batches are cut into chunks
SOLVE_BUDGET_BYTES = 768 << 20


# ------------------------------------------------------------------------------------------------------------ protocols
@dataclass(frozen=True)
class LowShotSVMProtocol(Protocol):
    """Constants shared by the low-shot SVM protocols (defaults: MoPro's VOC07 protocol)."""

    ks: tuple[int, ...] = (1, 2, 4, 8, 16)  # shots per class (a --splits file decides instead)
    num_samples: int = 5  # independent samples per k (a --splits file decides instead)
    # features
    feature: str = "pooled backbone output (global average pool after res5), BN in eval mode"
    feature_layer: str = "pool5"  # pool5 (GAP, 2048-d) | res4 | res5 (VISSL's pooled conv maps, see STAGE_POOLS)
    resize: int = 256  # Resize (shorter side) ...
    image_size: int = 224  # ... then CenterCrop, ImageNet normalisation (or the checkpoint's own)
    feature_norm: str = "l2"  # x / (||x||_2 + feature_norm_eps)
    feature_norm_eps: float = 1e-5
    # the SVM (liblinear's primal; sklearn LinearSVC is the reference)
    loss: str = "squared_hinge"
    penalty: str = "l2"
    costs: tuple[float, ...] = (0.5,)  # C; several -> cost_selection picks one
    cost_selection: str = "fixed"  # fixed (one cost) | cv (cross-validation in the training sample) | test (as published)
    cv_folds: int = 5  # cv: stratified folds (at most the number of positives of a class)
    cv_fallback_cost: float = 1.0  # cv: the cost used when a sample has < 2 positives for some class (k = 1)
    class_weight_pos: float = 1.0  # C_+ = C * class_weight_pos
    class_weight_neg: float = 1.0  # C_- = C * class_weight_neg
    fit_intercept: bool = True
    intercept_scaling: float = 1.0  # the bias is a constant feature of this value and IS regularised (liblinear)
    multi_class: str = "one-vs-rest"
    tol: float = 1e-4  # LinearSVC (reference solver) stopping tolerance
    max_iter: int = 2000  # LinearSVC (reference solver) iteration cap
    dual: bool = True  # LinearSVC (reference solver) solves the dual by coordinate descent
    torch_gtol: float = 1e-9  # batched solver: stop at ||grad|| <= gtol * ||grad(0)|| per problem (exact up to this)
    torch_max_iter: int = 100  # batched solver: Newton iterations cap
    # aggregation
    std_ddof: int = 1  # std over samples with this ddof (0 when there is a single sample)


@dataclass(frozen=True)
class VOCLowShotProtocol(LowShotSVMProtocol):
    sampling: str = "union-of-positives"  # or positives-and-negatives-per-class (goyal19)
    negatives_per_positive: int = 19  # positives-and-negatives-per-class: negatives drawn per positive
    train_split: str = "trainval"
    test_split: str = "test"
    difficult_train: str = "negative"  # negative | ignore (label 0 of VOC)
    difficult_test: str = "negative"  # negative | ignore
    class_weight_pos: float = 2.0
    class_weight_neg: float = 1.0
    metric: str = "AP: all-point interpolated (precision monotone from the right, summed over recall steps); tied " \
                  "scores form one threshold; classes without a positive test image are left out of the mean"
    aggregate: str = "mAP over the 20 classes per sample, then mean and std over the samples of each k (percent)"


@dataclass(frozen=True)
class PlacesLowShotProtocol(LowShotSVMProtocol):
    num_classes: int = 205
    train_split: str = "train"
    test_split: str = "val"
    class_weight_pos: float = 1.0
    class_weight_neg: float = 1.0
    metric: str = "top-1 accuracy: argmax of the 205 one-vs-rest decision values (first index on ties)"
    aggregate: str = "top-1 over the whole val set per sample, then mean and std over the samples of each k (percent)"


GOYAL19_COSTS = (0.01, 0.1, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 50.0, 100.0, 1000.0)
GOYAL19_SETTINGS: dict[str, Any] = dict(
    ks=(1, 2, 4, 8, 16, 32, 64, 96),  # VISSL k_values / FSSB create_voc_low_shot_samples default; 96 = VOC07 sheep
    sampling="positives-and-negatives-per-class", difficult_train="ignore", difficult_test="ignore",
    costs=GOYAL19_COSTS, class_weight_pos=2.0, class_weight_neg=1.0,
    feature_layer="res5", resize=224, image_size=224,
    feature="res5 (layer4) output average-pooled with AvgPool2d(6, stride 1) -> 2x2x2048 = 8192-d (VISSL), BN in eval mode",
)
# VISSL's LINEAR_EVAL_FEAT_POOL_OPS_MAP for ResNet-50 low-shot VOC07: (kernel, stride), padding 0, on 224x224 inputs:
# res4 14x14 -> 3x3 (x1024 = 9216-d), res5 7x7 -> 2x2 (x2048 = 8192-d)
STAGE_POOLS = {"res4": (8, 3), "res5": (6, 1)}

VOC_PROTOCOLS: dict[str, VOCLowShotProtocol] = {
    "mopro": VOCLowShotProtocol(
        name="mopro", version="1",
        description="MoPro (ICLR'21) / PCL low-shot VOC07: k positives per class pooled into one training set, one SVM "
                    "per class (C=0.5, class weight +1:2), mAP on VOC07 test, 5 samples per k"),
    # Goyal et al. 2019 (FSSB tools/svm/train_svm_low_shot.py) and VISSL (configs/config/benchmark/low_shot_transfer/
    # voc07/eval_resnet_8gpu_transfer_voc07_low_shot_svm.yaml @ 434d7311: costs, k_values, sample_inds 1..5, res4/res5
    # AvgPool2d; vissl/utils/svm_utils/svm_low_shot_trainer.py: LinearSVC(class_weight={1: 2, -1: 1},
    # intercept_scaling=1.0, tol=1e-4, dual, max_iter 2000)); /work/shared/notes/protocols.md sections 1.3-1.4.
    "goyal19": VOCLowShotProtocol(
        name="goyal19", version="2",
        description="Goyal et al. 2019 / VISSL low-shot VOC07 settings (res5 maps average-pooled to 2x2x2048, class "
                    "weight +1:2, k up to 96, per class k positives + 19k negatives, difficult ignored) with the cost "
                    "chosen by cross-validation inside each training sample (honest; not the published selection)",
        **GOYAL19_SETTINGS, cost_selection="cv"),
    "goyal19-published": VOCLowShotProtocol(
        name="goyal19-published", version="2",
        description="Goyal et al. 2019 / VISSL low-shot VOC07 as published: res5 maps average-pooled to 2x2x2048, class "
                    "weight +1:2, 11 costs, k 1..96, 5 samples, and the cost with the best mean TEST mAP per k "
                    "(optimistic; selection 'test-set (as published)'). One deviation: images are Resize(224) + "
                    "CenterCrop(224), not VISSL's Resize([224, 224]) squash (the shared extractor has no squash); "
                    "Goyal report the better of res4/res5 per model: run --set feature_layer=res4 for the other",
        **GOYAL19_SETTINGS, cost_selection="test"),
}
PLACES_PROTOCOLS: dict[str, PlacesLowShotProtocol] = {
    "mopro": PlacesLowShotProtocol(
        name="mopro", version="1",
        description="MoPro (ICLR'21) / PCL low-shot Places205: k images per class, one-vs-rest SVMs (C=0.5), top-1 on "
                    "the val set, 5 samples per k"),
}


def check_protocol(p: LowShotSVMProtocol) -> None:
    """Values a ``--set`` can get wrong -> one BenchError."""
    def bad(field: str, why: str) -> BenchError:
        return BenchError(f"protocol {p.name}: {field}={getattr(p, field)!r} {why}", f"--set {field}=... with a valid value")

    if not p.ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in p.ks):
        raise bad("ks", "must be positive integers")
    if isinstance(p.num_samples, bool) or not isinstance(p.num_samples, int) or p.num_samples < 1:
        raise bad("num_samples", "must be an integer >= 1")
    if not p.costs or any(not (c > 0 and math.isfinite(c)) for c in p.costs):
        raise bad("costs", "must be positive numbers")
    if p.cost_selection not in SELECTIONS:
        raise bad("cost_selection", f"must be one of {', '.join(SELECTIONS)}")
    if p.cost_selection == "fixed" and len(p.costs) != 1:
        raise bad("costs", "must hold exactly one cost with cost_selection=fixed")
    if p.cost_selection == "cv" and p.cv_folds < 2:
        raise bad("cv_folds", "must be >= 2")
    if p.cost_selection == "cv" and p.cv_fallback_cost not in p.costs:
        raise bad("cv_fallback_cost", f"must be one of the costs {list(p.costs)}")
    if p.loss != "squared_hinge" or p.penalty != "l2" or not p.fit_intercept or p.multi_class != "one-vs-rest":
        raise BenchError(f"protocol {p.name}: only loss=squared_hinge, penalty=l2, fit_intercept=true, one-vs-rest "
                         "are implemented", "keep those fields at their defaults")
    if p.feature_layer not in ("pool5", *STAGE_POOLS):
        raise bad("feature_layer", f"must be one of pool5, {', '.join(STAGE_POOLS)}")
    if p.feature_norm not in ("l2", "none"):
        raise bad("feature_norm", "must be l2 or none")
    if p.image_size < 16 or p.resize < p.image_size:
        raise bad("image_size", "must be >= 16 and <= resize")
    for f in ("intercept_scaling", "class_weight_pos", "class_weight_neg", "tol"):
        v = getattr(p, f)
        if not (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0):
            raise bad(f, "must be a positive number")
    if not (0 < p.torch_gtol < 1):  # nan fails too
        raise bad("torch_gtol", "must be in (0, 1): the solver stops at ||grad|| <= torch_gtol * ||grad(0)||")
    for f in ("torch_max_iter", "max_iter"):  # 0 iterations would return the zero solution, which is no result
        if isinstance(getattr(p, f), bool) or not isinstance(getattr(p, f), int) or getattr(p, f) < 1:
            raise bad(f, "must be an integer >= 1")
    if isinstance(p.std_ddof, bool) or not isinstance(p.std_ddof, int) or p.std_ddof < 0:
        raise bad("std_ddof", "must be an integer >= 0")
    if not (p.feature_norm_eps >= 0 and math.isfinite(p.feature_norm_eps)):
        raise bad("feature_norm_eps", "must be a number >= 0")
    if isinstance(p, VOCLowShotProtocol):
        if p.sampling not in SAMPLINGS:
            raise bad("sampling", f"must be one of {', '.join(SAMPLINGS)}")
        for f in ("difficult_train", "difficult_test"):
            if getattr(p, f) not in ("negative", "ignore"):
                raise bad(f, "must be negative or ignore")
        if p.negatives_per_positive < 1:
            raise bad("negatives_per_positive", "must be >= 1")


# ------------------------------------------------------------------------------------------------ training groups
@dataclass
class Group:
    """One training set shared by ``q`` binary problems: rows index the training feature matrix."""

    sample: int
    rows: np.ndarray  # [n] int
    Y: np.ndarray  # [n, q] +1 / -1
    mask: np.ndarray  # [n, q] bool: row belongs to that problem
    classes: list[int]  # class of each column


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


def _features(ck, paths, rel, ctx: RunContext, proto: LowShotSVMProtocol, dataset_id: str, desc: str) -> np.ndarray:
    if proto.feature_layer != "pool5":
        # the shared extractor runs `ck.backbone`: hand it a copy whose backbone returns the pooled stage, under a
        # dataset id that names the layer and pooling, so its cache entries never mix with the 2048-d features
        pooled = PooledStage(ck.backbone, proto.feature_layer, proto.image_size)
        ck = copy.copy(ck)
        ck.backbone = pooled
        dataset_id = f"{dataset_id}#{proto.feature_layer}-avgpool{pooled.kernel}s{pooled.stride}"
    f = extract_features(ck, paths, ctx, dataset_id=dataset_id, rel_paths=rel, image_size=proto.image_size,
                         resize=proto.resize, desc=desc).astype(np.float64)
    bad = ~np.isfinite(f).all(axis=1)
    if bad.any():  # an SVM on NaN features gives chance-level numbers that look like a result
        raise BenchError(f"{desc}: the backbone produced non-finite features (NaN/inf) for {int(bad.sum())} of {len(f)} "
                         f"images (first: {rel[int(np.flatnonzero(bad)[0])]})",
                         "check the checkpoint with `mopro-bench inspect` (non-finite weights, negative BN running_var)")
    if proto.feature_norm == "l2":
        f = f / (np.linalg.norm(f, axis=1, keepdims=True) + proto.feature_norm_eps)
    return f


def solve_groups(groups: list[Group], X: np.ndarray, proto: LowShotSVMProtocol, ctx: RunContext, solver: str
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Fit every (group, column, cost) problem; returns ``coef [G, q, ncost, d]``, ``intercept [G, q, ncost]``."""
    q, nc, d = len(groups[0].classes), len(proto.costs), X.shape[1]
    n_max = max(len(g.rows) for g in groups)
    per_group = n_max * (d + 1) * 8 * 3 + n_max * n_max * 8
    chunk = max(1, SOLVE_BUDGET_BYTES // per_group)
    coef = np.zeros((len(groups), q, nc, d))
    intercept = np.zeros((len(groups), q, nc))
    costs = np.tile(np.asarray(proto.costs, np.float64), q)  # column j * nc + c
    summaries = []
    for s in range(0, len(groups), chunk):
        part = groups[s:s + chunk]
        Xb = np.zeros((len(part), n_max, d))
        Yb = -np.ones((len(part), n_max, q * nc))
        Mb = np.zeros((len(part), n_max, q * nc), bool)
        for i, g in enumerate(part):
            n = len(g.rows)
            Xb[i, :n] = X[g.rows]
            Yb[i, :n] = np.repeat(g.Y, nc, axis=1)
            Mb[i, :n] = np.repeat(g.mask, nc, axis=1)
        kw = {"class_weight": (proto.class_weight_pos, proto.class_weight_neg), "intercept_scaling": proto.intercept_scaling}
        if solver == "sklearn":
            fit = svm.sklearn_fit(Xb, Yb, Mb, costs, tol=proto.tol, max_iter=proto.max_iter, dual=proto.dual,
                                  random_state=ctx.seed, **kw)
        else:
            fit = svm.fit(Xb, Yb, Mb, costs, gtol=proto.torch_gtol, max_iter=proto.torch_max_iter, device=ctx.device, **kw)
        coef[s:s + len(part)] = fit.coef.reshape(len(part), q, nc, d)
        intercept[s:s + len(part)] = fit.intercept.reshape(len(part), q, nc)
        summaries.append(fit.summary())
    problems = sum(x["problems"] for x in summaries)
    converged = sum(x["converged"] for x in summaries)
    info = {
        "solver": summaries[0]["method"],
        "problems": problems,
        "batches": len(summaries),
        "seconds": round(sum(x["seconds"] for x in summaries), 4),
        "converged": converged,
        "not_converged": problems - converged,
        "all_converged": converged == problems,
    }
    grads = [x["max_rel_grad"] for x in summaries if x.get("max_rel_grad") is not None]
    if grads:
        info["max_rel_grad"] = max(grads)
        info["max_iterations"] = max(x["iterations"] for x in summaries)
    if solver == "sklearn":
        info["convergence_warnings"] = sum(x.get("convergence_warnings", 0) for x in summaries)
    # a solver that did not get anywhere must not produce something that looks like a result
    how = (f"gtol {proto.torch_gtol} within torch_max_iter={proto.torch_max_iter} Newton steps" if solver != "sklearn"
           else f"tol {proto.tol} within max_iter={proto.max_iter} (ConvergenceWarning)")
    if problems and converged == 0:
        raise BenchError(f"the {solver} SVM solver converged on none of its {problems} problems ({how}; max rel grad "
                         f"{info.get('max_rel_grad')})", "raise --set torch_max_iter=... / --set max_iter=... (or loosen "
                         "the tolerance); the protocol defaults converge")
    if converged < problems:
        warnings.warn(f"{solver} SVM solver: {problems - converged} of {problems} problems did not converge ({how}); "
                      "their last iterate is used and the count is recorded", RuntimeWarning, stacklevel=2)
    return coef, intercept, info


def cv_select(groups: list[Group], X: np.ndarray, proto: LowShotSVMProtocol, ctx: RunContext, solver: str, k: int,
              num_samples: int) -> tuple[list[int], dict[str, Any]]:
    """Cost index per sample by stratified k-fold CV inside the training sample (mean held-out AP over classes and
    folds). Folds are over distinct images (a duplicate never sits on both sides). A sample in which some class has
    fewer than 2 distinct positives (or negatives) cannot be cross-validated: it gets ``cv_fallback_cost``."""
    cv_groups: list[Group] = []
    held: list[tuple[int, np.ndarray, np.ndarray]] = []  # (sample, held-out feature rows, labels)
    impossible: set[int] = set()
    for g in groups:
        for j, cls in enumerate(g.classes):
            rows = g.rows[g.mask[:, j]]
            y = g.Y[g.mask[:, j], j]
            uniq, first = np.unique(rows, return_index=True)
            uy = y[first]
            label_of = {int(r): int(v) for r, v in zip(uniq, uy)}
            pos, neg = uniq[uy > 0], uniq[uy < 0]
            F = min(proto.cv_folds, len(pos), len(neg))
            if F < 2:
                impossible.add(g.sample)
                continue
            rng = StableRNG(ctx.seed, k, g.sample, 104729, cls)  # the CV stream, independent of the split draw
            fold_of: dict[int, int] = {}
            for part in (pos, neg):
                for rank, idx in enumerate(rng.sample(list(part), len(part))):
                    fold_of[int(idx)] = rank % F
            folds = np.array([fold_of[int(r)] for r in rows])
            for f in range(F):
                tr = folds != f
                cv_groups.append(Group(g.sample, rows[tr], y[tr, None], np.ones((int(tr.sum()), 1), bool), [cls]))
                hu = np.array(sorted({int(r) for r in rows[~tr]}))
                held.append((g.sample, hu, np.array([label_of[int(r)] for r in hu])))
    nc = len(proto.costs)
    scores = np.zeros((num_samples, nc))
    counts = np.zeros(num_samples)
    info: dict[str, Any] = {"folds": proto.cv_folds, "fallback_samples": sorted(impossible)}
    if cv_groups:
        todo = [i for i, g in enumerate(cv_groups) if g.sample not in impossible]
        sub = [cv_groups[i] for i in todo]
        if sub:
            coef, icpt, sinfo = solve_groups(sub, X, proto, ctx, solver)
            info["solver"] = sinfo
            for t, i in enumerate(todo):
                s, hu, hy = held[i]
                sc = X[hu] @ coef[t, 0].T + icpt[t, 0]  # [n_held, ncost]
                aps = ap_per_class(sc, np.repeat(hy[:, None], nc, axis=1))
                scores[s] += aps
                counts[s] += 1
    chosen = []
    fallback = list(proto.costs).index(proto.cv_fallback_cost)
    for s in range(num_samples):
        if s in impossible or counts[s] == 0:
            chosen.append(-1)
        else:
            chosen.append(int(np.argmax(scores[s] / counts[s])))
    info["cv_mean_ap"] = [[round(float(v), 6) for v in (scores[s] / max(counts[s], 1))] for s in range(num_samples)]
    info["fallback_cost_index"] = fallback
    return chosen, info


# ------------------------------------------------------------------------------------------------------ result pieces
def _std(values: list[float], ddof: int) -> float:
    v = np.asarray(values, dtype=np.float64)
    return float(v.std(ddof=ddof)) if len(v) > ddof else 0.0


def plot_curve(path: Path, ks: list[int], means: list[float], stds: list[float], *, ylabel: str, title: str) -> Path:
    """Metric vs k with +-std error bars (log2 x axis), matplotlib Agg, written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 3.6), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.errorbar(ks, means, yerr=stds, marker="o", capsize=4, linewidth=1.5)
    for k, m in zip(ks, means):
        ax.annotate(f"{m:.1f}", (k, m), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])
    ax.set_xlabel("k (training images per class)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    return atomic_save_with(path, lambda fh: fig.savefig(fh, format="png"))


def _splits_for(task: Task, proto, ctx: RunContext, draw, known, what: str, check_sample) -> tuple[dict, dict[str, Any]]:
    """Load ``--splits`` (checked) or draw from the seed; ``--save-splits`` writes what is used."""
    proto_id = f"{task.name}@{proto.name}"
    data: dict[str, Any] = {}
    given = ctx.option("splits")
    if given:
        splits, file_sha = load_splits(given, task.name)
        other = splits["protocol"].partition("@")[2].partition("+")[0]
        if isinstance(proto, VOCLowShotProtocol) and other in task.protocols:
            theirs = task.protocols[other].sampling
            if theirs != proto.sampling:
                raise BenchError(f"splits file {given} was drawn for {splits['protocol']} ({theirs}), but {proto_id} "
                                 f"samples {proto.sampling}", f"use a splits file written for {proto_id}")
        check_known(splits, known, what, str(given))
        for k, runs in splits["k"].items():
            for s, ids in enumerate(runs):
                check_sample(int(k), s, ids, str(given))
        data.update(splits_file=str(Path(given).resolve()), splits_file_sha256=file_sha, splits_source="file")
    else:
        splits = draw_splits(task.name, proto_id, ctx.seed, proto.ks, proto.num_samples, draw)
        data.update(splits_source=f"drawn from seed {ctx.seed}")
    data["splits_sha256"] = splits_sha256(splits)
    if ctx.option("save_splits"):
        out = save_splits(ctx.option("save_splits"), splits)
        data["splits_saved_to"] = str(Path(out).resolve())
    return splits, data


def _cache_delta(before: dict[str, int]) -> dict[str, int]:
    return {k: CACHE_STATS[k] - before[k] for k in before}


# ------------------------------------------------------------------------------------------------------------- VOC07
class VOCLowShot(Task):
    name = "voc_lowshot"
    description = "low-shot linear SVMs on frozen features, PASCAL VOC07 classification (mAP vs k)"
    data_kind = "voc07"
    protocols = VOC_PROTOCOLS
    default_protocol = "mopro"
    metrics = ("mAP_k1", "mAP_k2", "mAP_k4", "mAP_k8", "mAP_k16", "mAP_k32", "mAP_k64", "mAP_k96")  # k > 16: goyal19
    higher_is_better = {}
    options = ("splits", "save_splits", "solver")

    def run(self, model, data_root: Path, protocol: Protocol, ctx: RunContext) -> TaskOutput:
        from mopro_bench.data.voc import VOC07, VOC_CLASSES

        proto: VOCLowShotProtocol = protocol  # type: ignore[assignment]
        check_protocol(proto)
        solver = ctx.option("solver", "torch")
        cache_before = dict(CACHE_STATS)
        voc = VOC07(data_root)
        tv_ids, tv_lab = voc.ids(proto.train_split), voc.labels(proto.train_split)
        te_ids, te_lab = voc.ids(proto.test_split), voc.labels(proto.test_split)
        index = {i: n for n, i in enumerate(tv_ids)}
        C = len(VOC_CLASSES)
        per_class = proto.sampling == "positives-and-negatives-per-class"

        def draw(k: int, rng: StableRNG) -> list[str]:
            if per_class:
                return voc_pos_neg_sample(tv_ids, tv_lab, VOC_CLASSES, k, rng, proto.negatives_per_positive)
            return voc_union_sample(tv_ids, tv_lab, VOC_CLASSES, k, rng)

        def check_sample(k: int, s: int, ids: list[str], src: str) -> None:
            rows = np.array([index[i] for i in ids])
            if per_class:
                if len(ids) % C:
                    raise BenchError(f"splits file {src}: k={k} sample {s} has {len(ids)} ids, not a multiple of {C} "
                                     "class blocks", "use a splits file written for this protocol (--save-splits)")
                blocks = rows.reshape(C, -1)
                for c in range(C):
                    lab = tv_lab[blocks[c], c]
                    if not (lab == 1).any() or not (lab == -1).any():
                        raise BenchError(f"splits file {src}: k={k} sample {s}: the block of class {VOC_CLASSES[c]!r} "
                                         "needs a positive and a negative image", "fix or regenerate the splits file")
            else:
                missing = [VOC_CLASSES[c] for c in range(C) if not (tv_lab[rows, c] == 1).any()]
                if missing:
                    raise BenchError(f"splits file {src}: k={k} sample {s} has no positive image of {missing[0]!r}",
                                     "every class needs at least one positive in every sample")

        splits, data = _splits_for(self, proto, ctx, draw, index, f"VOC07 {proto.train_split}", check_sample)
        # features: the whole training split once (every k, sample and seed reuses it) and the whole test split
        t0 = time.time()
        Xtr = _features(model, voc.paths(proto.train_split), tv_ids, ctx, proto, f"voc07/{proto.train_split}", "VOC07 trainval")
        Xte = _features(model, voc.paths(proto.test_split), te_ids, ctx, proto, f"voc07/{proto.test_split}", "VOC07 test")
        t_feat = [time.time() - t0]
        test_labels = te_lab
        difficult_test = proto.difficult_test

        def groups_for(k: int, s: int, ids: list[str]) -> list[Group]:
            rows = np.array([index[i] for i in ids], dtype=np.int64)
            lab = tv_lab[rows]
            if per_class:
                out = []
                for c, blk in enumerate(np.array_split(np.arange(len(rows)), C)):
                    lc = lab[blk, c:c + 1]
                    mask = (lc != 0) if proto.difficult_train == "ignore" else np.ones_like(lc, bool)
                    out.append(Group(s, rows[blk], np.where(lc == 1, 1, -1), mask, [c]))
                return out
            mask = (lab != 0) if proto.difficult_train == "ignore" else np.ones_like(lab, bool)
            return [Group(s, rows, np.where(lab == 1, 1, -1), mask, list(range(C)))]

        return _run_lowshot(self, model, proto, ctx, solver, splits, data, lambda k: Xtr, Xte, groups_for, C, list(VOC_CLASSES),
                            metric="mAP", score_fn=lambda S: _voc_scores(S, test_labels, difficult_test, VOC_CLASSES),
                            extra={"train_images": len(tv_ids), "test_images": len(te_ids),
                                   "test_ids_sha256": sha256_lines(list(te_ids)),
                                   "train_ids_sha256": sha256_lines(list(tv_ids))},
                            t_feat=t_feat, cache_before=cache_before)


def _voc_scores(S: np.ndarray, labels: np.ndarray, difficult: str, names) -> tuple[float, dict[str, float | None], list[str]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        aps = ap_per_class(S, labels, difficult=difficult)
        m, left_out = mean_ap(aps, list(names))
    return 100.0 * m, {n: (None if np.isnan(a) else round(100.0 * float(a), 4)) for n, a in zip(names, aps)}, left_out


# ------------------------------------------------------------------------------------------------------------ Places
class PlacesLowShot(Task):
    name = "places_lowshot"
    description = "low-shot linear SVMs (one-vs-rest) on frozen features, Places205 (top-1 vs k)"
    data_kind = "places205"
    protocols = PLACES_PROTOCOLS
    default_protocol = "mopro"
    metrics = ("top1_k1", "top1_k2", "top1_k4", "top1_k8", "top1_k16")
    higher_is_better = {}
    options = ("splits", "save_splits", "solver")

    def run(self, model, data_root: Path, protocol: Protocol, ctx: RunContext) -> TaskOutput:
        from mopro_bench.data.places import Places205

        proto: PlacesLowShotProtocol = protocol  # type: ignore[assignment]
        check_protocol(proto)
        solver = ctx.option("solver", "torch")
        cache_before = dict(CACHE_STATS)
        ds = Places205(data_root)
        train = ds.samples(proto.train_split)
        val = ds.samples(proto.test_split)
        C = proto.num_classes
        label_of = dict(train)
        names = [""] * C
        for rel, lab in sorted(train):
            if lab < C and not names[lab]:
                names[lab] = str(Path(rel).parent)
        names = [n or f"class_{c}" for c, n in enumerate(names)]

        def draw(k: int, rng: StableRNG) -> list[str]:
            return per_class_sample(train, C, k, rng, names)

        def check_sample(k: int, s: int, ids: list[str], src: str) -> None:
            present = {label_of[i] for i in ids}
            missing = [names[c] for c in range(C) if c not in present]
            if missing:
                raise BenchError(f"splits file {src}: k={k} sample {s} has no image of class {missing[0]!r}",
                                 "every class needs at least one image in every sample")

        splits, data = _splits_for(self, proto, ctx, draw, label_of, f"Places205 {proto.train_split}", check_sample)
        # features: the whole val set, and per k only the images its samples use (the train split has 2.4M images);
        # cached per k, so a rerun with the same seed -- or with fewer k -- extracts nothing
        t0 = time.time()
        val_rel = [r for r, _ in val]
        Xte = _features(model, [ds.image_path(r) for r in val_rel], val_rel, ctx, proto, f"places205/{proto.test_split}",
                        "Places205 val")
        t_feat = [time.time() - t0]
        yv = np.array([lab for _, lab in val])
        row_of: dict[str, int] = {}

        def train_for(k: int) -> np.ndarray:
            t1 = time.time()
            used = sorted({i for ids in splits["k"][str(k)] for i in ids})
            row_of.clear()
            row_of.update({r: n for n, r in enumerate(used)})
            X = _features(model, [ds.image_path(r) for r in used], used, ctx, proto,
                          f"places205/{proto.train_split}-lowshot", f"Places205 train k={k}")
            t_feat[0] += time.time() - t1
            return X

        def groups_for(k: int, s: int, ids: list[str]) -> list[Group]:
            rows = np.array([row_of[i] for i in ids], dtype=np.int64)
            lab = np.array([label_of[i] for i in ids])
            Y = np.where(lab[:, None] == np.arange(C)[None, :], 1, -1)
            return [Group(s, rows, Y, np.ones_like(Y, bool), list(range(C)))]

        def score(S: np.ndarray):
            pred = S.argmax(1)
            correct = pred == yv
            per = {}
            for c in range(C):
                sel = yv == c
                per[names[c]] = round(100.0 * float(correct[sel].mean()), 4) if sel.any() else None
            return 100.0 * float(correct.mean()), per, []

        n_used = len({i for runs in splits["k"].values() for ids in runs for i in ids})
        return _run_lowshot(self, model, proto, ctx, solver, splits, data, train_for, Xte, groups_for, C, names, metric="top1",
                            score_fn=score, extra={"train_images_used": n_used, "test_images": len(val_rel),
                                                   "test_list_sha256": sha256_lines(val_rel)},
                            t_feat=t_feat, cache_before=cache_before)


# ------------------------------------------------------------------------------------------------------------ engine
def _run_lowshot(task: Task, model, proto: LowShotSVMProtocol, ctx: RunContext, solver: str, splits: dict, data: dict,
                 train_for, Xte: np.ndarray, groups_for, C: int, names: list[str], *, metric: str, score_fn,
                 extra: dict, t_feat: list[float], cache_before: dict) -> TaskOutput:
    """The shared loop: per k, training features ``train_for(k)``, ``groups_for(k, sample, ids)``, one batched solve
    of every group x class x cost, test scores, cost selection, aggregation; then the plot and the record pieces."""
    if solver not in ("torch", "sklearn"):
        raise BenchError(f"unknown solver {solver!r}", "use --solver torch or --solver sklearn")
    costs = list(proto.costs)
    nc = len(costs)
    metrics: dict[str, float] = {}
    per_run: dict[str, list[float]] = {}
    lowshot: dict[str, Any] = {}
    solver_info: dict[str, Any] = {}
    selection_notes = []
    ks = [int(k) for k in splits["k"]]
    t_svm = 0.0
    train_shapes = {}
    left_out_any: set[str] = set()
    from tqdm.auto import tqdm

    for k in tqdm(ks, desc=f"{task.name} SVMs ({solver})", disable=not ctx.progress, leave=False):
        Xtr = train_for(k)
        train_shapes[str(k)] = list(Xtr.shape)
        t_k = time.time()
        runs = splits["k"][str(k)]
        S = len(runs)
        groups = [g for s, ids in enumerate(runs) for g in groups_for(k, s, ids)]
        coef, icpt, info = solve_groups(groups, Xtr, proto, ctx, solver)
        if info["not_converged"]:
            selection_notes.append(f"k={k}: {info['not_converged']} of {info['problems']} SVM problems did not converge "
                                   "(last iterate used; details.solver.by_k)")
        # test scores per (sample, cost): [N_test, C]
        scores = np.zeros((S, nc, Xte.shape[0], C))
        for gi, g in enumerate(groups):
            for j, cls in enumerate(g.classes):
                scores[g.sample, :, :, cls] = (Xte @ coef[gi, j].T + icpt[gi, j]).T
        table = [[score_fn(scores[s, c]) for c in range(nc)] for s in range(S)]  # (value, per_class, left_out)
        values = np.array([[table[s][c][0] for c in range(nc)] for s in range(S)])
        if np.isnan(values).any():
            raise BenchError(f"{task.name}: no class of the {getattr(proto, 'test_split', 'test')} set has a positive image",
                             "check the dataset's label files (`mopro-bench data check`)")
        left_out_any.update(c for s in range(S) for c in table[s][0][2])
        cv_info = None
        if proto.cost_selection == "fixed":
            chosen = [0] * S
        elif proto.cost_selection == "test":
            best = int(np.argmax(values.mean(0)))
            chosen = [best] * S
        else:
            chosen, cv_info = cv_select(groups, Xtr, proto, ctx, solver, k, S)
            chosen = [c if c >= 0 else cv_info["fallback_cost_index"] for c in chosen]
            if cv_info["fallback_samples"]:
                selection_notes.append(f"k={k}: {len(cv_info['fallback_samples'])} sample(s) could not be "
                                       f"cross-validated (< 2 positives per class): C={proto.cv_fallback_cost}")
        vals = [float(values[s, chosen[s]]) for s in range(S)]
        key = f"{metric}_k{k}"
        metrics[key] = round(float(np.mean(vals)), 4)
        metrics[f"{key}_std"] = round(_std(vals, proto.std_ddof), 4)
        per_run[key] = [round(v, 4) for v in vals]
        entry: dict[str, Any] = {
            "mean": metrics[key], "std": metrics[f"{key}_std"],
            "runs": [{"sample": s, "n_train": int(len(runs[s])), "cost": costs[chosen[s]], metric: round(vals[s], 4),
                      "per_class": table[s][chosen[s]][1],
                      **({"classes_left_out": table[s][chosen[s]][2]} if table[s][chosen[s]][2] else {})}
                     for s in range(S)],
        }
        if proto.cost_selection == "test":  # the table the published selection reads (never shown for cv)
            entry["test_by_cost"] = {str(c): round(float(values[:, i].mean()), 4) for i, c in enumerate(costs)}
        if cv_info is not None:
            entry["cv"] = {kk: v for kk, v in cv_info.items() if kk != "solver"}
        lowshot[str(k)] = entry
        solver_info[str(k)] = {**info, **({"cv_solver": cv_info["solver"]} if cv_info and "solver" in cv_info else {})}
        t_svm += time.time() - t_k
    unit = "%"
    label = "mAP (%)" if metric == "mAP" else "top-1 (%)"
    artifacts = []
    modified = "" if task.protocols.get(proto.name) == proto else " (modified)"
    png = ctx.artifact("lowshot.png")
    if png is not None:
        plot_curve(png, ks, [metrics[f"{metric}_k{k}"] for k in ks], [metrics[f"{metric}_k{k}_std"] for k in ks],
                   ylabel=label, title=f"{task.name}@{proto.name}{modified}  {model.name}")
        artifacts.append(str(png))
    if proto.cost_selection == "fixed":
        selection = f"fixed cost C={costs[0]} (no selection); mean ± std over the samples of each k"
    elif proto.cost_selection == "test":
        selection = "test-set (as published): per k, the cost with the best mean test metric over the samples"
    else:
        selection = (f"cost per (k, sample) by {proto.cv_folds}-fold stratified cross-validation inside the training sample "
                     f"(mean held-out AP over classes); C={proto.cv_fallback_cost} where a class has < 2 positives")
    if left_out_any:
        selection_notes.append(f"AP undefined (no positive test image), left out of the mean: {', '.join(sorted(left_out_any))}")
    if selection_notes:
        warnings.warn("; ".join(selection_notes), RuntimeWarning, stacklevel=2)
    defs = {f"{metric}_k{k}": f"{proto.aggregate}; k={k} images per class" for k in ks}
    defs.update({f"{metric}_k{k}_std": f"std (ddof={proto.std_ddof}, 0 for one sample) of {metric}_k{k} over the samples"
                 for k in ks})
    details = {
        "ks": ks,
        "samples_per_k": {str(k): len(splits["k"][str(k)]) for k in ks},
        "per_run": per_run,
        "lowshot": lowshot,
        "classes": names,
        "solver": {"name": solver, "by_k": solver_info},
        "selection_notes": selection_notes,
        "feature_cache": _cache_delta(cache_before),
        "features": {"train": train_shapes, "test": list(Xte.shape)},
        "timings": {"features_s": round(t_feat[0], 3), "svm_s": round(t_svm, 3)},
    }
    return TaskOutput(metrics=metrics, details=details, selection=selection, data={**data, **extra}, artifacts=artifacts,
                      metric_units={m: unit for m in metrics}, metric_definitions=defs)


VOC_LOWSHOT = VOCLowShot()
PLACES_LOWSHOT = PlacesLowShot()
