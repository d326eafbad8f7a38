"""COCO scoring: our pycocotools wrapper against pycocotools run directly, and against hand-computed values."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mopro_bench.errors import BenchError
from mopro_bench.tasks.detection.scoring import AP_KEYS, METRICS, metrics_from_evaluator, score_detections

H, W = 240, 320
CATS = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"}]


def _square(x, y, s):
    return [float(x), float(y), float(x + s), float(y), float(x + s), float(y + s), float(x), float(y + s)]


def _gt() -> dict:
    """Six images with small (< 32^2), medium and large (> 96^2) objects of three categories, one crowd region."""
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(1, 7):
        images.append({"id": i, "file_name": f"{i:012d}.jpg", "height": H, "width": W})
        for j, size in enumerate((20, 60, 120)[: 1 + i % 3]):
            x, y = float(rng.integers(0, W - size)), float(rng.integers(0, H - size))
            poly = _square(x, y, size)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": CATS[(i + j) % 3]["id"],
                         "segmentation": [poly], "area": float(size * size), "bbox": [x, y, float(size), float(size)],
                         "iscrowd": 0})
    anns.append({"id": len(anns) + 1, "image_id": 1, "category_id": 1, "iscrowd": 1, "area": 400.0,
                 "segmentation": [_square(290, 200, 20)], "bbox": [290.0, 200.0, 20.0, 20.0]})
    return {"images": images, "annotations": anns, "categories": CATS}


def _detections(gt: dict) -> list[dict]:
    """Jittered copies of most objects (some with the wrong class), misses, and false positives; box + RLE mask."""
    rng = np.random.default_rng(1)
    dets = []
    for a in gt["annotations"]:
        if a["iscrowd"] or rng.random() < 0.15:
            continue
        x, y, w, h = a["bbox"]
        jx, jy, js = rng.normal(0, 0.08 * w, size=3)
        box = [x + jx, y + jy, max(2.0, w + js), max(2.0, h + js)]
        cat = a["category_id"] if rng.random() > 0.2 else CATS[int(rng.integers(0, 3))]["id"]
        rle = mask_utils.frPyObjects([_square(box[0], box[1], box[2])], H, W)[0]
        rle["counts"] = rle["counts"].decode("ascii")
        dets.append({"image_id": a["image_id"], "category_id": cat, "bbox": [round(v, 2) for v in box],
                     "score": round(float(rng.uniform(0.3, 1.0)), 4), "segmentation": rle})
    for i in range(1, 7):  # false positives
        x, y = float(rng.integers(0, W - 40)), float(rng.integers(0, H - 40))
        rle = mask_utils.frPyObjects([_square(x, y, 30)], H, W)[0]
        rle["counts"] = rle["counts"].decode("ascii")
        dets.append({"image_id": i, "category_id": CATS[i % 3]["id"], "bbox": [x, y, 30.0, 30.0],
                     "score": round(float(rng.uniform(0.0, 0.6)), 4), "segmentation": rle})
    return dets


def _pycocotools_direct(gt_path, dets_path, iou_type):
    """The COCO API used the documented way (mask AP from the mask area: detections without 'bbox')."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_path))
        dets = json.loads(dets_path.read_text())
        if iou_type == "segm":
            dets = [{k: v for k, v in d.items() if k != "bbox"} for d in dets]
        ev = COCOeval(coco, coco.loadRes(dets), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_scoring_a_fixed_detections_file_equals_pycocotools(tmp_path):
    gt = _gt()
    gt_path, dets_path = tmp_path / "instances_val2017.json", tmp_path / "dets.json"
    gt_path.write_text(json.dumps(gt))
    dets_path.write_text(json.dumps(_detections(gt)))
    ours = score_detections(gt_path, dets_path)
    assert ours.num_detections == len(json.loads(dets_path.read_text()))
    for iou_type in ("bbox", "segm"):
        stats = _pycocotools_direct(gt_path, dets_path, iou_type)
        for i, k in enumerate(AP_KEYS):
            assert stats[i] >= 0, "the fixture covers every area range"
            assert ours.metrics[f"{iou_type}_{k}"] == pytest.approx(stats[i] * 100, abs=1e-9)
    assert set(ours.metrics) == set(METRICS) and not ours.undefined
    # imperfect detections: strictly between 0 and 100, and the box/mask numbers differ
    assert 0 < ours.metrics["bbox_AP"] < 100 and 0 < ours.metrics["segm_AP"] < 100
    assert set(ours.per_category["bbox"]) == {"person", "car", "dog"}


def test_scoring_reference_values(tmp_path):
    # one 10x10 object; a detection covering 62% of it: IoU 0.62 matches at thresholds 0.50, 0.55, 0.60 only
    gt = {"images": [{"id": 1, "file_name": "a.jpg", "height": 50, "width": 50}], "categories": [{"id": 5, "name": "x"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [0.0, 0.0, 10.0, 10.0], "area": 100.0,
                           "iscrowd": 0, "segmentation": [_square(0, 0, 10)]}]}
    det = [{"image_id": 1, "category_id": 5, "bbox": [0.0, 0.0, 10.0, 6.2], "score": 0.9}]
    s = score_detections(gt, det, iou_types=("bbox",))
    assert s.metrics == pytest.approx({"bbox_AP": 30.0, "bbox_AP50": 100.0, "bbox_AP75": 0.0, "bbox_APs": 30.0})
    assert set(s.undefined) == {"bbox_APm", "bbox_APl"}  # no medium or large ground truth: undefined, not 0
    # the exact object: 100 everywhere it is defined
    perfect = [{"image_id": 1, "category_id": 5, "bbox": [0.0, 0.0, 10.0, 10.0], "score": 1.0}]
    assert score_detections(gt, perfect, iou_types=("bbox",)).metrics["bbox_AP"] == pytest.approx(100.0)
    # no detections at all: 0 AP (pycocotools' loadRes cannot read an empty list; detectron2 would say NaN)
    empty = score_detections(gt, [])
    assert empty.metrics == {"bbox_AP": 0.0, "bbox_AP50": 0.0, "bbox_AP75": 0.0, "bbox_APs": 0.0,
                             "segm_AP": 0.0, "segm_AP50": 0.0, "segm_AP75": 0.0, "segm_APs": 0.0}
    assert empty.num_detections == 0


def test_scoring_refuses_bad_input(tmp_path):
    gt = _gt()
    with pytest.raises(BenchError, match="missing"):
        score_detections(gt, tmp_path / "nope.json")
    with pytest.raises(BenchError, match="lack"):
        score_detections(gt, [{"image_id": 1, "bbox": [0, 0, 1, 1]}])
    with pytest.raises(BenchError, match="no 'segmentation'"):
        score_detections(gt, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}])


def test_metrics_from_evaluator_output():
    nan = float("nan")
    res = {"bbox": {"AP": 40.1, "AP50": 60.2, "AP75": 43.3, "APs": 24.4, "APm": 43.5, "APl": nan, "AP-person": 50.0,
                    "AP-dog": nan},
           "segm": {"AP": 36.1, "AP50": 57.2, "AP75": 38.3, "APs": 17.4, "APm": 38.5, "APl": 52.6, "AP-person": 45.0,
                    "AP-dog": 30.0}}
    metrics, undefined, per_cat = metrics_from_evaluator(res)
    assert metrics["bbox_AP"] == 40.1 and metrics["segm_APl"] == 52.6 and metrics["bbox_APs"] == 24.4
    assert "bbox_APl" not in metrics and set(undefined) == {"bbox_APl"}
    assert per_cat["bbox"] == {"person": 50.0, "dog": None} and per_cat["segm"]["dog"] == 30.0
    assert len(metrics) == 11 and all(not math.isnan(v) for v in metrics.values())
    with pytest.raises(RuntimeError):
        metrics_from_evaluator({"bbox": res["bbox"]})
