"""The low-shot SVM protocols: frozen dataclasses (every constant lands in the result record), the protocol tables of
``voc_lowshot`` and ``places_lowshot``, and :func:`check_protocol` (the values a ``--set`` can get wrong)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from mopro_bench.data.common import INTERPOLATIONS
from mopro_bench.errors import BenchError
from mopro_bench.registry import Protocol

SAMPLINGS = ("union-of-positives", "positives-and-negatives-per-class")
SELECTIONS = ("fixed", "cv", "test")


@dataclass(frozen=True)
class LowShotSVMProtocol(Protocol):
    """Constants shared by the low-shot SVM protocols (defaults: MoPro's VOC07 protocol)."""

    ks: tuple[int, ...] = (1, 2, 4, 8, 16)  # shots per class (a --splits file decides instead)
    num_samples: int = 5  # independent samples per k (a --splits file decides instead)
    # features
    feature: str = "pooled backbone output (global average pool after res5), BN in eval mode"
    feature_layer: str = "pool5"  # pool5 (GAP, 2048-d) | res4 | res5 (VISSL's pooled conv maps, see STAGE_POOLS)
    resize: int = 256  # Resize (shorter side; resize_mode "square": the whole image to resize x resize) ...
    resize_mode: str = "shorter"  # shorter | square (VISSL's Resize([224, 224]), aspect ratio not kept)
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


# ---------------------------------------------------------------------------------------------------------- ViTs
# MoPro's SVM constants (k, samples, C = 0.5, class weights, L2-normalised features, ...) on a Vision Transformer's
# CLS token after the final LayerNorm: the feature DINO's k-NN and linear evaluations take (facebookresearch/dino
# vision_transformer.py `forward`: `x = self.norm(x); return x[:, 0]`, used by eval_knn.py `model(samples)` and by
# eval_linear.py with n_last_blocks=1) and MoCo v3's linear probe reads (main_lincls.py: timm ViT, head on the token).
# Resize(256, bicubic) + CenterCrop(224) + ImageNet mean/std is DINO's evaluation transform (eval_knn.py and
# eval_linear.py: `pth_transforms.Resize(256, interpolation=3)`, `CenterCrop(224)`). MoCo v3's main_lincls.py
# validates with a bilinear Resize(256); `--set interpolation=bilinear` gives that (a modified protocol id).
VIT_FEATURE = ("CLS token after the final LayerNorm (DINO eval_knn.py / eval_linear.py n_last_blocks=1; MoCo v3 "
               "main_lincls.py), no pooling")


@dataclass(frozen=True)
class VOCLowShotViTProtocol(VOCLowShotProtocol):
    """``voc_lowshot@mopro``'s constants on a ViT's CLS token, DINO's bicubic evaluation resize."""

    feature: str = VIT_FEATURE
    feature_layer: str = "cls"  # the only layer of the ViT protocols
    interpolation: str = "bicubic"  # Resize(256, interpolation=3) in DINO's eval_knn.py / eval_linear.py


@dataclass(frozen=True)
class PlacesLowShotViTProtocol(PlacesLowShotProtocol):
    """``places_lowshot@mopro``'s constants on a ViT's CLS token, DINO's bicubic evaluation resize."""

    feature: str = VIT_FEATURE
    feature_layer: str = "cls"
    interpolation: str = "bicubic"


VIT_PROTOCOL_TYPES = (VOCLowShotViTProtocol, PlacesLowShotViTProtocol)


def is_vit_protocol(p: LowShotSVMProtocol) -> bool:
    """A protocol on a ViT's CLS token (``feature_layer=cls``, an ``interpolation`` field)."""
    return isinstance(p, VIT_PROTOCOL_TYPES)


def resize_interpolation(p: LowShotSVMProtocol) -> str:
    """The protocol's resize: its ``interpolation`` field (the ViT protocols), else bilinear (every other protocol)."""
    return p.interpolation if is_vit_protocol(p) else "bilinear"


def vit_protocol_id(p: LowShotSVMProtocol) -> str:
    """The ViT protocol of ``p``'s task (what an error about a ViT or a CLS token names)."""
    return "voc_lowshot@mopro-vit" if isinstance(p, VOCLowShotProtocol) else "places_lowshot@mopro-vit"


GOYAL19_COSTS = (0.01, 0.1, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 50.0, 100.0, 1000.0)
GOYAL19_SETTINGS: dict[str, Any] = dict(
    ks=(1, 2, 4, 8, 16, 32, 64, 96),  # VISSL k_values / FSSB create_voc_low_shot_samples default; 96 = VOC07 sheep
    sampling="positives-and-negatives-per-class", difficult_train="ignore", difficult_test="ignore",
    costs=GOYAL19_COSTS, class_weight_pos=2.0, class_weight_neg=1.0,
    feature_layer="res5", resize=224, resize_mode="square", image_size=224,  # VISSL: Resize([224, 224]), CenterCrop 224
    feature="res5 (layer4) output average-pooled with AvgPool2d(6, stride 1) -> 2x2x2048 = 8192-d (VISSL), BN in eval mode",
)
# VISSL's LINEAR_EVAL_FEAT_POOL_OPS_MAP for ResNet-50 low-shot VOC07: (kernel, stride), padding 0, on 224x224 inputs:
# res4 14x14 -> 3x3 (x1024 = 9216-d), res5 7x7 -> 2x2 (x2048 = 8192-d)
STAGE_POOLS = {"res4": (8, 3), "res5": (6, 1)}

VOC_PROTOCOLS: dict[str, VOCLowShotProtocol] = {
    # pool5 = the backbone's pooled feature: ResNet GAP of res5, ConvNeXt GAP through the head LayerNorm (timm
    # pre-logits); the protocol's transform (bilinear Resize(256)) applies to both
    "mopro": VOCLowShotProtocol(
        name="mopro", version="1",
        description="MoPro (ICLR'21) / PCL low-shot VOC07: k positives per class pooled into one training set, one SVM "
                    "per class (C=0.5, class weight +1:2), mAP on VOC07 test, 5 samples per k",
        families=("resnet", "convnext")),
    "mopro-vit": VOCLowShotViTProtocol(
        name="mopro-vit", version="1",
        description="voc_lowshot@mopro's SVM constants (k positives per class pooled, C=0.5, class weight +1:2, 5 "
                    "samples per k, L2-normalised features) on a ViT's CLS token after the final LayerNorm (DINO / "
                    "MoCo v3 evaluation feature), Resize(256, bicubic) + CenterCrop(224) as DINO's eval transform",
        families=("vit",)),
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
                    "(optimistic; selection 'test-set (as published)'), images squashed to 224x224 as VISSL's "
                    "Resize([224, 224]); Goyal report the better of res4/res5 per model: run --set feature_layer=res4 "
                    "for the other",
        **GOYAL19_SETTINGS, cost_selection="test"),
}
PLACES_PROTOCOLS: dict[str, PlacesLowShotProtocol] = {
    "mopro": PlacesLowShotProtocol(
        name="mopro", version="1",
        description="MoPro (ICLR'21) / PCL low-shot Places205: k images per class, one-vs-rest SVMs (C=0.5), top-1 on "
                    "the val set, 5 samples per k",
        families=("resnet", "convnext")),
    "mopro-vit": PlacesLowShotViTProtocol(
        name="mopro-vit", version="1",
        description="places_lowshot@mopro's SVM constants (k images per class, one-vs-rest, C=0.5, 5 samples per k, "
                    "L2-normalised features) on a ViT's CLS token after the final LayerNorm (DINO / MoCo v3 "
                    "evaluation feature), Resize(256, bicubic) + CenterCrop(224) as DINO's eval transform",
        families=("vit",)),
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
    if is_vit_protocol(p):
        if p.feature_layer != "cls":
            raise BenchError(f"protocol {p.name}: feature_layer={p.feature_layer!r} is not a ViT protocol's feature "
                             "(they take the CLS token, feature_layer=cls)",
                             "leave feature_layer at cls; pooled and res4/res5 features are the ResNet/ConvNeXt protocols'")
        if p.interpolation not in INTERPOLATIONS:  # the resizes eval_transform knows
            raise bad("interpolation", f"must be one of {', '.join(INTERPOLATIONS)}")
    elif p.feature_layer == "cls":
        raise BenchError(f"protocol {p.name}: feature_layer='cls' (a ViT's CLS token) belongs to the ViT protocols",
                         f"use {vit_protocol_id(p)} for ViT checkpoints (keep feature_layer at pool5 here)")
    elif p.feature_layer not in ("pool5", *STAGE_POOLS):
        raise bad("feature_layer", f"must be one of pool5, {', '.join(STAGE_POOLS)}")
    if p.feature_norm not in ("l2", "none"):
        raise bad("feature_norm", "must be l2 or none")
    if p.image_size < 16 or p.resize < p.image_size:
        raise bad("image_size", "must be >= 16 and <= resize")
    if p.resize_mode not in ("shorter", "square"):
        raise bad("resize_mode", "must be shorter (resize the shorter side) or square (the whole image)")
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
