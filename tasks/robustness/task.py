"""Robustness and calibration of a 1000-way ImageNet classifier: ImageNet-R, ImageNet-A and ImageNet val.

Tasks (protocol ``hendrycks``, the default of each)::

    imagenet_r                 ImageNet-Rendition (30,000 images, 200 classes)    data kind imagenet-r
    imagenet_a                 ImageNet-A natural adversarial (7,500 images, 200)  data kind imagenet-a
    imagenet_val_calibration   ImageNet val                                         data kind imagenet
        @hendrycks (default): "ImageNet-200", the 10,000 val images of the 200 ImageNet-R classes, softmax over those
                   200 logits -- the in-distribution reference Hendrycks et al.'s imagenet-r eval.py prints next to
                   ImageNet-R (symlinked val folders of `imagenet_r_wnids`, logits masked with `imagenet_r_mask`;
                   hendrycks/imagenet-r eval.py @44d3a1d)
        @in1k:     all 50,000 val images and all 1000 logits (the project's own in-distribution reference)

Each needs a classifier in the ImageNet-1k class space: the checkpoint's own (supervised torchvision, MoPro's
WebVision-1k classifier) or a head file trained by ``imagenet_linear --save-head`` and passed with ``--head``.
Images go through Resize(256) -> CenterCrop(224) -> the normalisation; pooled features are cached; logits are
``classifier(features)``. For ImageNet-R/-A only the 200 logits of the set's classes are kept -- their positions in
the sorted ImageNet-1k wnid list, built from the wnid lists (as the original evaluation's boolean class mask) --
and the softmax runs over those 200. Metrics: ``top1``, ``calib_rms`` (Hendrycks et al.'s RMS calibration error,
reproduced with its dropped last bin), ``ece15``, ``nll``, ``brier``; see :mod:`mopro_bench.metrics.calibration`.
A reliability diagram is written next to each result (``<result>.reliability.png``).

Every backbone family (ResNet, ViT, ConvNeXt) is accepted: ``features`` is the backbone's pooled feature (ViT: the
CLS token after the final LayerNorm; ConvNeXt: the average-pooled last stage through the head LayerNorm), which is
what a timm-layout classifier (ViT ``head``, ConvNeXt ``head.fc``) reads, so ``classifier(features)`` are the
network's own logits. The protocol's input pipeline is the same for every family (bilinear Resize 256, as the
ResNet numbers it was defined with); the checkpoint's own interpolation (bicubic for DINO, MAE, DINOv2, ConvNeXt) is
recorded with the checkpoint but not applied, so a ViT's numbers here are under this protocol, not its authors'.

``details.per_image`` holds each image's top-1 hit (0/1) in the dataset's sample order with ``ids_sha256`` (the
ordered relative image paths), the format ``mopro-bench compare`` reads for a paired bootstrap over test images.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mopro_bench.backbones import FAMILIES, Preprocess
from mopro_bench.checkpoints import IMAGENET_COMPATIBLE, LoadedCheckpoint
from mopro_bench.data.common import IMAGENET_MEAN, IMAGENET_STD
from mopro_bench.data.imagenet import OFFICIAL_SIZES as IMAGENET_SIZES
from mopro_bench.data.imagenet_ra import OFFICIAL_SIZES as RA_SIZES
from mopro_bench.errors import BenchError
from mopro_bench.io import sha256_lines
from mopro_bench.metrics import calibration as cal
from mopro_bench.registry import Option, Protocol, RunContext, Task, TaskOutput
from mopro_bench.resources import imagenet1k_wnids, imagenet_a_wnids, imagenet_r_wnids

METRICS = ("top1", "calib_rms", "ece15", "nll", "brier")
HIGHER_IS_BETTER = {"top1": True, "calib_rms": False, "ece15": False, "nll": False, "brier": False}
IMAGENET200_VAL_SIZE = 200 * 50  # ImageNet val has 50 images per class
HEAD_FIX = ("train one with `mopro-bench eval --ckpt {ckpt} --task imagenet_linear@fast --data IMAGENET --save-head head.pt`, "
            "then pass `--head head.pt`")
SUBSET_RULES = ("dataset-wnids", "all-1000", "imagenet-r-200")


@dataclass(frozen=True)
class CalibrationProtocol(Protocol):
    """Every constant of the robustness/calibration evaluation (defaults = Hendrycks et al.'s evaluation code)."""

    resize: int = 256  # shorter side, bilinear
    crop: int = 224  # center crop
    # input normalisation (torchvision convention: RGB in [0, 1], then (x - mean) / std). A checkpoint that declares
    # another input convention (caffe-style BGR, 0-255) keeps its own; the record says which was used.
    normalization: str = "imagenet-mean-std"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # which logits are kept before the softmax: "dataset-wnids" = the positions of the dataset's official wnid list
    # (200 for ImageNet-R/-A) in the sorted ImageNet-1k list; "all-1000" = every class (ImageNet val);
    # "imagenet-r-200" = the 200 ImageNet-R classes, and only the images of those classes are scored (ImageNet-200)
    class_subset: str = "dataset-wnids"
    calib_bin_size: int = 100  # RMS calibration error: samples per confidence-sorted bin (calib_err's beta)
    calib_drop_last_bin: bool = True  # True reproduces the original: the most confident bin is not summed
    ece_bins: int = 15  # equal-width bins of ece15 and of the reliability diagram
    percent: bool = True  # top1, calib_rms, ece15 in percent (nll in nats, brier a plain number either way)


def _hendrycks(dataset: str, n_classes: int, subset: str) -> CalibrationProtocol:
    return CalibrationProtocol(
        name="hendrycks",
        version="1",
        # every family: the protocol scores the checkpoint's own classifier on its pooled feature (ResNet: pooled res5;
        # ViT: final-norm CLS token, the feature timm's / DeiT's / MoCo v3's classifier head reads; ConvNeXt: pooled
        # last stage through the head LayerNorm, timm's pre-logits), so nothing in it is ResNet-specific
        families=FAMILIES,
        description=(f"{dataset}: Resize 256, CenterCrop 224, ImageNet normalisation; softmax over {n_classes} logits "
                     f"of a 1000-way ImageNet classifier; top-1, RMS calibration error as in Hendrycks et al.'s "
                     f"calib_err (bins of 100 sorted by confidence, last bin dropped), ECE (15 bins), NLL, Brier"),
        class_subset=subset,
    )


# ---------------------------------------------------------------------------------------------------------------------
# class mask


def imagenet_class_mask(wnids: Sequence[str]) -> np.ndarray:
    """ImageNet-1k indices of ``wnids``, ascending: the kept logit columns (the original's boolean mask, as indices).

    Column ``j`` of the kept logits is ImageNet class ``mask[j]``; since the ImageNet list is sorted, the kept
    classes are in sorted-wnid order.
    """
    index = {w: i for i, w in enumerate(imagenet1k_wnids())}
    unknown = [w for w in wnids if w not in index]
    if unknown:
        raise BenchError(f"{len(unknown)} wnid(s) are not ImageNet-1k classes (first: {unknown[0]})",
                         "use the ImageNet-R/-A class lists shipped in mopro_bench/resources")
    if len(set(wnids)) != len(wnids):
        raise ValueError("duplicate wnids in the class list")
    return np.array(sorted(index[w] for w in wnids), dtype=np.int64)


def labels_in_subset(labels1000: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Map ImageNet-1k labels to positions in ``mask`` (a label outside the subset is a bug in the data layer)."""
    pos = np.full(1000, -1, dtype=np.int64)
    pos[mask] = np.arange(len(mask))
    out = pos[np.asarray(labels1000, dtype=np.int64)]
    if (out < 0).any():
        bad = int(np.asarray(labels1000)[out < 0][0])
        raise BenchError(f"a sample has ImageNet class {bad} ({imagenet1k_wnids()[bad]}), outside the evaluated classes",
                         "pass the dataset root that matches --task")
    return out


# ---------------------------------------------------------------------------------------------------------------------
# classifier and features


def imagenet_classifier(ck: LoadedCheckpoint, head: str | Path | None) -> tuple[torch.nn.Linear, dict[str, Any]]:
    """The checkpoint's 1000-way ImageNet-space classifier (or the ``--head`` file's), else a BenchError."""
    fix = HEAD_FIX.format(ckpt=ck.path)
    if head:
        from mopro_bench.checkpoints.heads import attach_head

        attach_head(ck, head)
    lin = ck.classifier(IMAGENET_COMPATIBLE)
    h = ck.heads.get("classifier")
    if lin is None:
        if h is None:
            raise BenchError(f"checkpoint {ck.name} has no classifier; this task needs a 1000-way ImageNet classifier",
                             fix)
        raise BenchError(f"checkpoint {ck.name}'s classifier is in class space {h.class_space!r}, not ImageNet-1k",
                         fix)
    if lin.out_features != 1000:
        raise BenchError(f"checkpoint {ck.name}'s classifier has {lin.out_features} outputs, not 1000", fix)
    if lin.in_features != ck.backbone.feature_dim:
        raise BenchError(f"classifier expects {lin.in_features}-d features but {ck.name} gives {ck.backbone.feature_dim}-d",
                         fix)
    info = {"source": f"head file {head}" if head else "checkpoint", "class_space": h.class_space,
            "description": h.description}
    return lin, info


def input_preprocess(ck: LoadedCheckpoint, p: CalibrationProtocol) -> tuple[LoadedCheckpoint, dict[str, Any]]:
    """The checkpoint to extract with: torchvision-convention checkpoints get the protocol's mean/std."""
    pre = ck.preprocess
    if pre.channel_order.upper() == "RGB" and float(pre.scale) == 1.0:
        used = Preprocess(mean=tuple(p.mean), std=tuple(p.std), channel_order="RGB", scale=1.0)
        note = "protocol normalisation"
        if used != pre:
            ck = dataclasses.replace(ck, preprocess=used)
    else:
        used, note = pre, "the checkpoint's own input convention (not torchvision RGB [0,1])"
    return ck, {"mean": list(used.mean), "std": list(used.std), "channel_order": used.channel_order,
                "scale": used.scale, "source": note}


@torch.no_grad()
def compute_logits(lin: torch.nn.Linear, feats: np.ndarray, columns: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """``classifier(features)[:, columns]`` as float32 [N, len(columns)]."""
    w = lin.weight.detach().float()[torch.as_tensor(columns)]
    b = lin.bias.detach().float()[torch.as_tensor(columns)] if lin.bias is not None else None
    out = np.empty((feats.shape[0], len(columns)), np.float32)
    for s in range(0, feats.shape[0], chunk):
        x = torch.from_numpy(np.ascontiguousarray(feats[s:s + chunk])).float()
        y = x @ w.T
        if b is not None:
            y += b
        out[s:s + chunk] = y.numpy()
    return out


# ---------------------------------------------------------------------------------------------------------------------
# metrics of logits


def check_sample_count(n: int, p: CalibrationProtocol, where: str) -> None:
    need = p.calib_bin_size * (2 if p.calib_drop_last_bin else 1)
    if n < need:
        raise BenchError(
            f"{where} has {n} images; calib_rms with bins of {p.calib_bin_size}"
            f"{' (last bin dropped)' if p.calib_drop_last_bin else ''} needs at least {need}",
            "pass the full dataset, or for a quick check lower the bin size with --set calib_bin_size=K "
            "(the protocol id then gets a +hash suffix)",
        )


def _round(xs: list, nd: int = 6) -> list:
    return [None if x is None else round(float(x), nd) for x in xs]


def per_image_top1(ids: list[str], correct: np.ndarray, percent: bool) -> dict[str, Any]:
    """``details.per_image`` for ``top1`` (``compare``'s format): the 0/1 hits in the order of ``ids``; ``top1`` in percent
    is ``100 * mean`` (``correct``), as a fraction ``mean`` (``values`` with scale 1)."""
    hits = np.asarray(correct, dtype=np.uint8)
    if hits.shape != (len(ids),):
        raise ValueError(f"{hits.shape[0]} hits for {len(ids)} ids")
    spec = {"correct": hits.tolist()} if percent else {"values": hits.tolist(), "scale": 1.0}
    return {"ids_sha256": sha256_lines(list(ids)), "n": len(ids), "top1": spec}


def score_logits_checked(logits: np.ndarray, labels: np.ndarray) -> cal.SampleScores:
    """Per-sample scores of kept logits [N, C] (labels in [0, C)); non-finite logits are refused."""
    if not np.isfinite(logits).all():
        raise BenchError("the classifier produced non-finite logits (NaN/inf)",
                         "check the checkpoint / head file; a diverged linear head gives this")
    return cal.score_logits(logits, labels)


def evaluate_logits(logits: np.ndarray, labels: np.ndarray, p: CalibrationProtocol) -> tuple[dict[str, float], dict[str, Any]]:
    """Metrics and details of kept logits [N, C] with labels in [0, C) under protocol ``p``."""
    return evaluate_scores(score_logits_checked(logits, labels), int(logits.shape[1]), p)


def evaluate_scores(scores: cal.SampleScores, n_classes: int, p: CalibrationProtocol) -> tuple[dict[str, float], dict[str, Any]]:
    """Metrics and details of per-sample scores over ``n_classes`` kept logits under protocol ``p``."""
    metrics = cal.summarize(scores, p.calib_bin_size, p.calib_drop_last_bin, p.ece_bins, p.percent)
    bins = cal.adaptive_bins(len(scores), p.calib_bin_size, p.calib_drop_last_bin)
    adaptive = cal.adaptive_bin_stats(scores.confidence, scores.correct, p.calib_bin_size, p.calib_drop_last_bin)
    conf_sorted = np.sort(scores.confidence)
    dropped: dict[str, Any] | None = None
    if bins.dropped:
        s, e = bins.dropped
        dropped = {"samples": bins.n_dropped, "sorted_range": [s, e],
                   "confidence_min": round(float(conf_sorted[s]), 6), "confidence_max": round(float(conf_sorted[e - 1]), 6),
                   "accuracy": round(adaptive["accuracy"][-1], 6)}
    rel = cal.reliability_bins(scores.confidence, scores.correct, p.ece_bins)
    details = {
        "n_images": int(len(scores)),
        "n_classes_kept": int(n_classes),
        "mean_confidence": float(scores.confidence.mean()),
        "calib_rms_bins": {"bin_size": p.calib_bin_size, "bins_summed": len(bins.kept), "dropped": dropped},
        "reliability": {**rel, "confidence": _round(rel["confidence"]), "accuracy": _round(rel["accuracy"])},
        "adaptive_bins": {**adaptive, "confidence": _round(adaptive["confidence"]), "accuracy": _round(adaptive["accuracy"])},
    }
    return metrics, details


# ---------------------------------------------------------------------------------------------------------------------
# tasks


class _CalibrationTask(Task):
    metrics = METRICS
    higher_is_better = HIGHER_IS_BETTER
    needs_classifier = True
    options = (
        Option("head", "robustness/ImageNet: a 1000-way head file written by imagenet_linear", one_task=True,
               one_checkpoint=True),
    )
    default_protocol = "hendrycks"
    official_size: int = 0  # images in the complete dataset (a smaller one is flagged as partial)

    def dataset(self, data_root: Path) -> tuple[list[tuple[Path, int]], Path, tuple[str, ...], dict[str, Any]]:
        """``(samples, root for relative names, the class list, data info)``."""
        raise NotImplementedError

    def run(self, model: LoadedCheckpoint, data_root: Path, protocol: Protocol, ctx: RunContext) -> TaskOutput:
        p = protocol
        assert isinstance(p, CalibrationProtocol)
        if p.class_subset not in SUBSET_RULES:
            raise BenchError(f"class_subset={p.class_subset!r} is not a class subset rule", f"use one of {SUBSET_RULES}")
        if p.ece_bins < 1 or p.calib_bin_size < 1:
            raise BenchError("ece_bins and calib_bin_size must be >= 1", "fix the --set value")
        lin, clf_info = imagenet_classifier(model, ctx.option("head"))
        samples, rel_root, wnids, data_info = self.dataset(Path(data_root))
        official = self.official_size
        if p.class_subset == "imagenet-r-200":  # ImageNet-200: the images of the 200 ImageNet-R classes only
            mask = imagenet_class_mask(imagenet_r_wnids())
            keep = set(mask.tolist())
            n_all = len(samples)
            samples = [(q, y) for q, y in samples if int(y) in keep]
            data_info = {**data_info, "class_list": "imagenet_r_wnids", "images_outside_classes": n_all - len(samples)}
            official = IMAGENET200_VAL_SIZE if self.data_kind == "imagenet" else official
            if not samples:
                raise BenchError(f"no images of the 200 ImageNet-R classes under {data_root}",
                                 "pass the ImageNet root (val/<wnid>/ of the 200 classes), or use the @in1k protocol")
        elif p.class_subset == "dataset-wnids":
            mask = imagenet_class_mask(wnids)
        else:
            mask = np.arange(1000, dtype=np.int64)
        check_sample_count(len(samples), p, f"{self.data_kind} at {data_root}")
        labels = labels_in_subset(np.array([y for _, y in samples]), mask)
        paths = [s for s, _ in samples]
        rel = [str(Path(s).relative_to(rel_root)) for s in paths]
        ck, pre_info = input_preprocess(model, p)
        feats = cal_features(ck, paths, rel, ctx, f"{self.data_kind}/{data_info.get('split', 'all')}", p)
        logits = compute_logits(lin, feats, mask)
        scores = score_logits_checked(logits, labels)
        metrics, details = evaluate_scores(scores, int(logits.shape[1]), p)
        details["per_image"] = per_image_top1(rel, scores.correct, p.percent)
        details.update({"classifier": clf_info, "input_preprocess": pre_info,
                        "kept_imagenet_indices_sha256": sha256_lines([str(i) for i in mask.tolist()])})
        if official and len(samples) != official:
            details["partial_dataset"] = f"{len(samples)} of the official {official} images"
            print(f"warning: {self.name}: {details['partial_dataset']}; numbers are not comparable to published ones",
                  file=sys.stderr)
        artifacts = []
        png = ctx.artifact("reliability.png")
        if png is not None:
            from mopro_bench.tasks.robustness.plots import reliability_diagram

            units = cal.units(p.percent)
            reliability_diagram(details["reliability"], png, adaptive=details["adaptive_bins"], metrics=metrics,
                                units=units, title=f"{model.name} on {self.name}@{p.name} ({len(samples)} images)")
            artifacts.append(str(png))
        data = {**data_info, "n_images": len(samples), "list_sha256": sha256_lines(rel),
                "n_classes_present": len({int(y) for y in labels}), "n_classes_kept": int(len(mask))}
        return TaskOutput(
            metrics=metrics, details=details, data=data, artifacts=artifacts,
            selection="single pass over the whole evaluation set; no selection",
            metric_units=cal.units(p.percent),
            metric_definitions=cal.definitions(p.calib_bin_size, p.calib_drop_last_bin, p.ece_bins, p.percent,
                                               num_classes=int(len(mask))),
        )


def cal_features(ck: LoadedCheckpoint, paths: list[Path], rel: list[str], ctx: RunContext, dataset_id: str,
                 p: CalibrationProtocol) -> np.ndarray:
    from mopro_bench.features import extract_features

    return extract_features(ck, paths, ctx, dataset_id=dataset_id, rel_paths=rel, image_size=p.crop, resize=p.resize,
                            desc=dataset_id)


class _RATask(_CalibrationTask):
    splits = ("all",)
    def dataset(self, data_root: Path):
        from mopro_bench.data.imagenet_ra import ImageNetRA

        ds = ImageNetRA(data_root, self.data_kind)
        samples = ds.samples()
        if not samples:
            raise BenchError(f"no images under {data_root}/<wnid>/", f"pass the extracted {self.data_kind} folder with --data")
        return samples, ds.root, tuple(ds.wnids), {"split": "all"}


class ImageNetR(_RATask):
    name = "imagenet_r"
    description = "ImageNet-R (renditions, 200 classes): top-1 and calibration of a 1000-way ImageNet classifier"
    data_kind = "imagenet-r"
    official_size = RA_SIZES["imagenet-r"]
    protocols = {"hendrycks": _hendrycks("ImageNet-R", 200, "dataset-wnids")}


class ImageNetA(_RATask):
    name = "imagenet_a"
    description = "ImageNet-A (natural adversarial, 200 classes): top-1 and calibration of a 1000-way ImageNet classifier"
    data_kind = "imagenet-a"
    official_size = RA_SIZES["imagenet-a"]
    protocols = {"hendrycks": _hendrycks("ImageNet-A", 200, "dataset-wnids")}


class ImageNetValCalibration(_CalibrationTask):
    name = "imagenet_val_calibration"
    splits = ("val",)
    description = ("ImageNet val: top-1 and calibration, the in-distribution reference for imagenet_r/a (@hendrycks: "
                   "ImageNet-200, the 200 ImageNet-R classes; @in1k: all 1000)")
    data_kind = "imagenet"
    official_size = IMAGENET_SIZES["val"]
    protocols = {
        "hendrycks": dataclasses.replace(
            _hendrycks("ImageNet-200 (ImageNet val images of the 200 ImageNet-R classes)", 200, "imagenet-r-200"),
            version="2"),
        "in1k": dataclasses.replace(_hendrycks("ImageNet val, all 1000 classes", 1000, "all-1000"), name="in1k"),
    }

    def dataset(self, data_root: Path):
        from mopro_bench.data.imagenet import ImageNetFolder

        ds = ImageNetFolder(data_root)
        samples = ds.samples("val")
        if not samples:
            raise BenchError(f"no images under {ds.root / 'val'}/<wnid>/", "put the 50,000 val images in val/<wnid>/")
        return samples, ds.root, imagenet1k_wnids(), {"split": "val"}


IMAGENET_R = ImageNetR()
IMAGENET_A = ImageNetA()
IMAGENET_VAL_CALIBRATION = ImageNetValCalibration()

# the class lists each task masks with (for tests and docs)
TASK_WNIDS = {"imagenet_r": imagenet_r_wnids, "imagenet_a": imagenet_a_wnids,
              "imagenet_val_calibration": imagenet_r_wnids}  # @hendrycks; @in1k keeps all of imagenet1k_wnids
