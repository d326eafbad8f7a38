"""Named task lists for ``mopro-bench eval --suite NAME`` and the one-number-per-result summary of a suite run.

A suite is only a list of ``task@protocol`` ids: running it is the same as passing them to ``--task``. The lists
follow the experiments of the MoPro paper (Li, Xiong, Hoi, ICLR 2021, arXiv 2009.07995): its transfer experiments
are low-shot linear SVMs on VOC07 and Places205, 1% / 10% semi-supervised ImageNet finetuning, COCO Mask R-CNN, and
ImageNet-R / ImageNet-A robustness and calibration (abstract and experiments sections; each protocol's constants
cite their own sources in its task module and in the README's "Tasks and protocols" table).
"""

from __future__ import annotations

import re
from typing import Any

from mopro_bench.errors import BenchError

SUITES: dict[str, tuple[str, ...]] = {
    # the MoPro paper's transfer experiments, each under the protocol of the paper's published numbers (the ids that
    # mopro_bench/resources/published.csv holds them under: 1% / 10% finetuning as the released finetune_imagenet.py ran)
    "mopro-transfer": ("voc_lowshot@mopro", "places_lowshot@mopro", "imagenet_1pct@mopro-as-released",
                       "imagenet_10pct@mopro-as-released", "coco_maskrcnn@mopro", "imagenet_r@hendrycks",
                       "imagenet_a@hendrycks"),
    # the two low-shot SVM tasks: frozen features, no training of the backbone (minutes on one GPU)
    "lowshot": ("voc_lowshot@mopro", "places_lowshot@mopro"),
    # semi-supervised ImageNet finetuning under the default (one subset) protocol (hours per checkpoint on 8 GPUs)
    "semisup": ("imagenet_1pct@mopro", "imagenet_10pct@mopro"),
    # accuracy + calibration of a 1000-way classifier (the checkpoint's own, or --head with one checkpoint)
    "robustness": ("imagenet_r@hendrycks", "imagenet_a@hendrycks", "imagenet_val_calibration@hendrycks"),
    # the same experiments for Vision Transformers, under the ViT protocols (each protocol names the families it
    # accepts; a ResNet protocol refuses a ViT): low-shot SVMs on the CLS token, DINO's linear probe, iBOT's 1% / 10%
    "lowshot-vit": ("voc_lowshot@mopro-vit", "places_lowshot@mopro-vit"),
    "vit-transfer": ("voc_lowshot@mopro-vit", "places_lowshot@mopro-vit", "imagenet_linear@dino", "imagenet_1pct@ibot",
                     "imagenet_10pct@ibot", "imagenet_r@hendrycks", "imagenet_a@hendrycks"),
}

SUITE_HELP = {
    "mopro-transfer": "the MoPro paper's transfer experiments (low-shot, semi-supervised, COCO, robustness)",
    "lowshot": "VOC07 and Places205 low-shot linear SVMs",
    "semisup": "ImageNet 1% / 10% semi-supervised finetuning",
    "robustness": "ImageNet-R / ImageNet-A / ImageNet val accuracy and calibration",
    "lowshot-vit": "VOC07 and Places205 low-shot linear SVMs on a ViT's CLS token",
    "vit-transfer": "ViT: low-shot SVMs, DINO linear probe, iBOT 1% / 10% fine-tuning, ImageNet-R / -A",
}


def suite_tasks(name: str) -> tuple[str, ...]:
    if name not in SUITES:
        raise BenchError(f"unknown suite {name!r}", f"use one of: {', '.join(SUITES)} (`mopro-bench eval --list-suites`)")
    return SUITES[name]


def expand_tasks(task_args: list[str] | None, suite_args: list[str] | None) -> list[str]:
    """``--task a,b --task c --suite lowshot`` -> the task specs in order, duplicates dropped."""
    specs: list[str] = []
    for arg in task_args or []:
        parts = [p.strip() for p in arg.split(",")]
        if not all(parts):
            raise BenchError(f"--task {arg!r} has an empty entry", "write --task voc_lowshot,places_lowshot")
        specs.extend(parts)
    for name in suite_args or []:
        specs.extend(suite_tasks(name))
    out: list[str] = []
    for s in specs:
        if s not in out:
            out.append(s)
    return out


_FAMILY = re.compile(r"^(?P<base>.+)_k(?P<k>\d+)$")


def headline(record: dict[str, Any], order: tuple[str, ...] = ()) -> tuple[str, float] | None:
    """The one number a summary shows for a result: for a low-shot family (``mAP_k1 .. mAP_k16``) the largest k
    measured, else the first of the task's leaderboard metrics (``order``) that the record has, else its first metric;
    spreads (``*_std``) never."""
    metrics = {k: v for k, v in record.get("metrics", {}).items() if not k.endswith("_std")}
    if not metrics:
        return None
    for name in (*order, *metrics):
        hit = _FAMILY.match(name)
        if hit and name in metrics:
            fam = [(int(m["k"]), k) for k in metrics if (m := _FAMILY.match(k)) and m["base"] == hit["base"]]
            best = max(fam)[1]
            return best, float(metrics[best])
        if name in metrics:
            return name, float(metrics[name])
    return None  # pragma: no cover - unreachable: metrics is non-empty
