"""COCO box and mask AP with the official COCO API (pycocotools), and detectron2's evaluator output in our names.

Metric names: ``{bbox,segm}_{AP,AP50,AP75,APs,APm,APl}`` in percent -- ``COCOeval.stats[0:6] * 100``: AP averaged over
IoU 0.50:0.05:0.95, AP at IoU 0.50 and 0.75, and AP over small (< 32^2 px), medium and large (> 96^2 px) objects,
all with at most 100 detections per image.

Conventions (the same as detectron2's ``COCOEvaluator``, so both give identical numbers):

- mask AP is computed with the ``bbox`` field removed from each detection, so pycocotools takes a detection's area
  from its mask (with a box present it would use the box area for the small/medium/large split);
- a metric pycocotools reports as -1 (no ground-truth object in that area range) is *undefined*: it is left out of
  ``metrics`` and listed in ``undefined`` instead of being written as a number;
- no detections at all is scored as it is: 0 AP wherever ground truth exists (pycocotools' ``loadRes`` cannot read
  an empty list, so an empty result set is built directly; detectron2 reports NaN there).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mopro_bench.errors import BenchError

AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
IOU_TYPES = ("bbox", "segm")
METRICS = tuple(f"{t}_{k}" for t in IOU_TYPES for k in AP_KEYS)
_AREA = {"APs": "small (area < 32^2 px)", "APm": "medium (32^2 .. 96^2 px)", "APl": "large (area > 96^2 px)"}
DEFINITIONS = {
    f"{t}_{k}": (f"COCO {'box' if t == 'bbox' else 'mask'} AP"
                 + {"AP": " averaged over IoU 0.50:0.05:0.95", "AP50": " at IoU 0.50", "AP75": " at IoU 0.75"}.get(
                     k, f" over IoU 0.50:0.95, {_AREA.get(k, '')} objects")
                 + ", all categories, 100 detections per image (pycocotools COCOeval)")
    for t in IOU_TYPES for k in AP_KEYS
}


@dataclass
class CocoScores:
    metrics: dict[str, float]  # defined metrics, percent
    undefined: dict[str, str] = field(default_factory=dict)  # metric -> why it has no value
    per_category: dict[str, dict[str, float | None]] = field(default_factory=dict)  # iou type -> {name: AP}
    num_detections: int = 0


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


def load_gt(gt: str | Path | Mapping[str, Any] | Any):
    """A pycocotools ``COCO`` from a path, a loaded annotation dict or an existing ``COCO`` object."""
    from pycocotools.coco import COCO

    if isinstance(gt, COCO):
        return gt
    coco = COCO()
    if isinstance(gt, (str, Path)):
        try:
            coco.dataset = json.loads(Path(gt).read_text())
        except FileNotFoundError:
            raise BenchError(f"COCO annotation file {gt} is missing",
                             "pass the instances_val2017.json of the set you scored") from None
    else:
        coco.dataset = copy.deepcopy(dict(gt))
    with _quiet():
        coco.createIndex()
    return coco


def load_detections(dets: str | Path | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(dets, (str, Path)):
        try:
            obj = json.loads(Path(dets).read_text())
        except FileNotFoundError:
            raise BenchError(f"detections file {dets} is missing", "pass a COCO results JSON (a list of detections)") from None
        except json.JSONDecodeError as e:
            raise BenchError(f"detections file {dets} is not valid JSON ({e})", "pass a COCO results JSON") from None
    else:
        obj = dets
    if not isinstance(obj, list):
        raise BenchError("detections must be a JSON list of {image_id, category_id, score, bbox and/or segmentation}",
                         "write them in the COCO results format")
    return [dict(d) for d in obj]


def _results_coco(coco_gt, dets: list[dict[str, Any]], iou_type: str):
    """``coco_gt.loadRes`` with detectron2's conventions (no bbox for segm; empty results allowed)."""
    from pycocotools.coco import COCO

    # fresh dicts: loadRes writes area/id/iscrowd (and a box polygon as 'segmentation') into the ones it is given
    dets = [{k: v for k, v in d.items() if not (iou_type == "segm" and k == "bbox")} for d in dets]
    if dets:
        with _quiet():
            return coco_gt.loadRes(dets)
    empty = COCO()
    empty.dataset = {"images": list(coco_gt.dataset["images"]), "categories": copy.deepcopy(coco_gt.dataset["categories"]),
                     "annotations": []}
    with _quiet():
        empty.createIndex()
    return empty


def score_detections(gt, detections, iou_types: Sequence[str] = IOU_TYPES) -> CocoScores:
    """Score COCO-format ``detections`` (path or list) against ground truth ``gt`` (path, dict or ``COCO``)."""
    from pycocotools.cocoeval import COCOeval

    coco_gt = load_gt(gt)
    dets = load_detections(detections)
    missing = {k for d in dets for k in ("image_id", "category_id", "score") if k not in d}
    if missing:
        raise BenchError(f"detections lack {sorted(missing)}", "each needs image_id, category_id, score and bbox/segmentation")
    if dets and "segm" in iou_types and any("segmentation" not in d for d in dets):
        raise BenchError("some detections have no 'segmentation': mask AP cannot be computed", "score iou_types=('bbox',)")
    out = CocoScores(metrics={}, num_detections=len(dets))
    cat_names = {c["id"]: c["name"] for c in coco_gt.dataset["categories"]}
    for iou_type in iou_types:
        if iou_type not in IOU_TYPES:
            raise BenchError(f"unknown IoU type {iou_type!r}", f"use {' or '.join(IOU_TYPES)}")
        coco_dt = _results_coco(coco_gt, dets, iou_type)
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        with _quiet():
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        for i, k in enumerate(AP_KEYS):
            v = float(ev.stats[i])
            name = f"{iou_type}_{k}"
            if v < 0:
                out.undefined[name] = "no ground-truth object in this area range" if k in _AREA else "no ground truth"
            else:
                out.metrics[name] = v * 100.0
        precision = ev.eval["precision"]  # [T, R, K, A, M]
        per = {}
        for ki, cat_id in enumerate(ev.params.catIds):
            p = precision[:, :, ki, 0, -1]
            p = p[p > -1]
            per[cat_names.get(cat_id, str(cat_id))] = float(np.mean(p) * 100) if p.size else None
        out.per_category[iou_type] = per
    return out


def metrics_from_evaluator(results: Mapping[str, Mapping[str, float]]) -> tuple[dict[str, float], dict[str, str],
                                                                              dict[str, dict[str, float | None]]]:
    """detectron2 ``COCOEvaluator.evaluate()`` output -> (metrics, undefined, per-category AP).

    ``results`` is ``{"bbox": {"AP": .., "AP50": .., ..., "AP-person": ..}, "segm": {...}}`` in percent, with NaN
    where pycocotools had no value."""
    metrics: dict[str, float] = {}
    undefined: dict[str, str] = {}
    per_category: dict[str, dict[str, float | None]] = {}
    for iou_type in IOU_TYPES:
        res = results.get(iou_type)
        if res is None:
            raise RuntimeError(f"COCOEvaluator returned no {iou_type!r} results (got {sorted(results)})")
        for k in AP_KEYS:
            v = float(res[k])
            name = f"{iou_type}_{k}"
            if math.isnan(v):
                undefined[name] = "no ground-truth object in this area range" if k in _AREA else "no value"
            else:
                metrics[name] = v
        per_category[iou_type] = {k[3:]: (None if math.isnan(float(v)) else float(v))
                                  for k, v in res.items() if k.startswith("AP-")}
    return metrics, undefined, per_category
