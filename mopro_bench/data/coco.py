"""COCO 2017 in detectron2's ``datasets/coco`` layout.

    <root>/annotations/instances_{train,val}2017.json
    <root>/{train,val}2017/<file_name>

The dataset plug-in of kind coco (``LAYOUT``, registered in ``mopro_bench.data.BUILTIN_DATASETS``): the loader
(:func:`coco_files`, :func:`load_instances`), ``OFFICIAL_SIZES``, the ``data check`` rules, the ``data synth``
generator and its sizes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from mopro_bench.data import render
from mopro_bench.data.check import CheckReport, check_files, read_text
from mopro_bench.data.common import outside_root, read_text_file
from mopro_bench.data.layout import DatasetLayout, SplitListing
from mopro_bench.data.synth import kind_code, write_file
from mopro_bench.errors import BenchError

SPLITS = ("train", "val")
OFFICIAL_SIZES = {"train": 118287, "val": 5000}


def coco_files(root: str | Path, check: bool = True) -> dict[str, Path]:
    """``{train_json, train_images, val_json, val_images}`` under ``root`` (checked to exist unless ``check=False``)."""
    root = Path(root).expanduser()
    files = {}
    for s in SPLITS:
        files[f"{s}_json"] = root / "annotations" / f"instances_{s}2017.json"
        files[f"{s}_images"] = root / f"{s}2017"
    if check:
        if not root.is_dir():
            raise BenchError(f"COCO root {root} does not exist",
                             "pass the folder that holds annotations/, train2017/, val2017/ with --data")
        for key, p in files.items():
            if key.endswith("_json") and not p.is_file():
                raise BenchError(f"COCO annotation file {p} is missing", f"extract annotations_trainval2017.zip into {root}")
            if key.endswith("_images") and not p.is_dir():
                raise BenchError(f"COCO image folder {p} is missing", f"extract {p.name}.zip into {root}")
    return files


def image_problems(images: list) -> list[str]:
    """Image entries that cannot be used: no ``file_name``, one outside the image folder (absolute or ``..``), an
    ``id`` or ``file_name`` listed twice."""
    bad, ids, names = [], set(), set()
    for im in images:
        if not isinstance(im, dict):
            bad.append(f"image entry {im!r} is not an object")
            continue
        name = im.get("file_name")
        if not isinstance(name, str) or not name:
            bad.append(f"image {im.get('id')} has no file_name")
        elif outside_root(name):
            bad.append(f"image {im.get('id')}: file_name {name!r} {outside_root(name)}")
        elif name in names:
            bad.append(f"image {im.get('id')}: file_name {name} is listed twice")
        elif im.get("id") in ids:
            bad.append(f"image id {im.get('id')} is listed twice")
        names.add(name)
        ids.add(im.get("id"))
    return bad


def load_instances(path: str | Path) -> dict:
    """Read an ``instances_*.json`` and check the keys everything downstream needs (and :func:`image_problems`)."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"COCO annotation file {path} is missing",
                         "extract annotations_trainval2017.zip into the COCO root")
    try:
        obj = json.loads(read_text_file(path, "COCO annotation file"))
    except json.JSONDecodeError as e:
        raise BenchError(f"COCO annotation file {path} is not valid JSON ({e})",
                         "re-extract annotations_trainval2017.zip") from None
    if not isinstance(obj, dict):
        raise BenchError(f"COCO annotation file {path} is not a JSON object", "re-extract annotations_trainval2017.zip")
    for key in ("images", "annotations", "categories"):
        if not isinstance(obj.get(key), list):
            raise BenchError(f"COCO annotation file {path} has no '{key}' list", "re-extract annotations_trainval2017.zip")
    if not obj["images"]:
        raise BenchError(f"COCO annotation file {path} lists no images", "re-extract annotations_trainval2017.zip")
    bad = image_problems(obj["images"])
    if bad:
        raise BenchError(f"COCO annotation file {path}: {len(bad)} bad image entr{'y' if len(bad) == 1 else 'ies'} "
                         f"(first: {bad[0]})", "re-extract annotations_trainval2017.zip")
    return obj


# --------------------------------------------------------------------------------------------------------------- check

def check_coco(report: CheckReport, root: Path, deep: bool) -> None:
    files = coco_files(root, check=False)
    for split in ("train", "val"):
        jf, imd = files[f"{split}_json"], files[f"{split}_images"]
        if not jf.is_file():
            report.error(f"COCO annotation file {jf} is missing", f"extract annotations_trainval2017.zip into {root}")
            continue
        text = read_text(report, jf, "COCO annotation file")
        if text is None:
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            report.error(f"COCO annotation file {jf} is not valid JSON ({e})", "re-extract annotations_trainval2017.zip")
            continue
        if not isinstance(obj, dict):
            report.error(f"COCO annotation file {jf} is not a JSON object", "re-extract annotations_trainval2017.zip")
            continue
        miss = [k for k in ("images", "annotations", "categories") if not isinstance(obj.get(k), list)]
        if miss:
            report.error(f"COCO annotation file {jf} has no '{miss[0]}' list", "re-extract annotations_trainval2017.zip")
            continue
        images, anns, cats = obj["images"], obj["annotations"], obj["categories"]
        report.size(split, len(images), OFFICIAL_SIZES[split])
        report.notes.append(f"{split}: {len(anns)} instances, {len(cats)} categories")
        if not images:
            report.error(f"COCO annotation file {jf} lists no images", "re-extract annotations_trainval2017.zip")
        bad_images = image_problems(images)
        if bad_images:
            report.error(f"{jf}: {len(bad_images)} bad image entr{'y' if len(bad_images) == 1 else 'ies'} "
                         f"(first: {bad_images[0]})", "re-extract annotations_trainval2017.zip")
        images = [im for im in images if isinstance(im, dict)]
        image_ids = {im.get("id") for im in images}
        cat_ids = {c.get("id") for c in cats}
        bad = []
        for a in anns:
            b = a.get("bbox")
            if a.get("image_id") not in image_ids:
                bad.append(f"annotation {a.get('id')}: unknown image_id {a.get('image_id')}")
            elif a.get("category_id") not in cat_ids:
                bad.append(f"annotation {a.get('id')}: unknown category_id {a.get('category_id')}")
            elif not (isinstance(b, list) and len(b) == 4 and b[2] >= 0 and b[3] >= 0):
                bad.append(f"annotation {a.get('id')}: bbox {b} is not [x, y, w, h]")
            elif not a.get("iscrowd", 0) and isinstance(a.get("segmentation"), list) and any(
                    len(poly) < 6 or len(poly) % 2 for poly in a["segmentation"]):
                bad.append(f"annotation {a.get('id')}: a segmentation polygon has fewer than 3 points")
        if bad:
            report.error(f"{jf}: {len(bad)} bad annotation(s) (first: {bad[0]})", "re-extract annotations_trainval2017.zip")
        no_size = [im.get("id") for im in images if not im.get("width") or not im.get("height") or not im.get("file_name")]
        if no_size:
            report.error(f"{jf}: {len(no_size)} image entries lack file_name/width/height (first id: {no_size[0]})",
                         "re-extract annotations_trainval2017.zip")
        if not imd.is_dir():
            report.error(f"COCO image folder {imd} is missing", f"extract {imd.name}.zip into {root}")
            continue
        check_files(report, f"COCO {split}2017", [imd / im["file_name"] for im in images
                                                         if isinstance(im.get("file_name"), str) and im["file_name"]
                                                         and not outside_root(im["file_name"])], deep,
                    f"extract {imd.name}.zip into {root}")


# --------------------------------------------------------------------------------------------------------------- synth
SYNTH_SIZES = {
    "tiny": {"train": 16, "val": 8, "width": 128, "height": 96},
    "small": {"train": 160, "val": 40, "width": 160, "height": 120},
}

# Real COCO category ids and names (non-contiguous on purpose: 17, 18 exercise id -> contiguous-index mapping).
COCO_CATEGORIES = (
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 2, "name": "bicycle", "supercategory": "vehicle"},
    {"id": 3, "name": "car", "supercategory": "vehicle"},
    {"id": 17, "name": "cat", "supercategory": "animal"},
    {"id": 18, "name": "dog", "supercategory": "animal"},
)


def _polygon_area(poly: list[tuple[float, float]]) -> float:
    xs, ys = np.array([q[0] for q in poly]), np.array([q[1] for q in poly])
    return float(0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))


def _mask_area(flat: list[float], h: int, w: int) -> float:
    try:
        from pycocotools import mask as mask_utils
    except ImportError:  # pragma: no cover - pycocotools is a dependency; shoelace is the fallback
        return _polygon_area(list(zip(flat[0::2], flat[1::2])))
    rles = mask_utils.frPyObjects([flat], h, w)
    return float(mask_utils.area(mask_utils.merge(rles)))


def synth_coco(root: Path, seed: int, p: dict, kind: str, out: Path) -> dict:
    w, h = p["width"], p["height"]
    cats = list(COCO_CATEGORIES)
    image_id, ann_id = 0, 0
    counts = {}
    for split in ("train", "val"):
        images, anns = [], []
        for n in range(p[split]):
            image_id += 1
            irng = render.image_rng(seed, kind_code(kind), split, n)
            img = render.background((w, h), irng, clutter=int(irng.integers(0, 3)))
            placed: list[tuple[float, float, float, float]] = []
            for _ in range(int(irng.integers(1, 5))):
                c = int(irng.integers(0, len(cats)))
                for _try in range(30):
                    r = min(w, h) * irng.uniform(0.10, 0.24)
                    cx, cy = irng.uniform(r + 1, w - r - 1), irng.uniform(r + 1, h - r - 1)
                    box = (cx - r, cy - r, cx + r, cy + r)
                    if all(box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or box[1] > b[3] for b in placed):
                        break
                else:
                    continue
                placed.append(box)
                poly = render.draw_object(img, render.coco_look(c), cx, cy, r, irng.uniform(0, 2 * math.pi), irng)
                flat = [round(float(v), 2) for q in poly for v in q]
                xs, ys = flat[0::2], flat[1::2]
                x0, y0 = min(xs), min(ys)
                ann_id += 1
                anns.append({"id": ann_id, "image_id": image_id, "category_id": cats[c]["id"], "segmentation": [flat],
                             "area": _mask_area(flat, h, w), "bbox": [x0, y0, round(max(xs) - x0, 2), round(max(ys) - y0, 2)],
                             "iscrowd": 0})
            name = f"{image_id:012d}.jpg"
            write_file(root / f"{split}2017" / name, render.jpeg_bytes(render.add_noise(img, irng, 5.0)))
            images.append({"id": image_id, "file_name": name, "width": w, "height": h, "license": 1})
        obj = {"info": {"description": "mopro-bench generated COCO-format dataset", "version": "1.0", "year": 2017},
               "licenses": [{"id": 1, "name": "generated", "url": ""}],
               "images": images, "annotations": anns, "categories": cats}
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(obj))
        counts[split] = len(images)
        counts[f"{split}_instances"] = len(anns)
    return {"counts": counts, "categories": [c["name"] for c in cats]}


def listing(root: Path, split: str, data: dict) -> SplitListing:
    """The image file names of ``split``'s annotation file, sorted."""
    ann = load_instances(coco_files(root)[f"{split}_json"])
    names = sorted(str(im.get("file_name")) for im in ann.get("images", []))
    return SplitListing(len(names), OFFICIAL_SIZES.get(split), names)


LAYOUT = DatasetLayout(
    kind="coco", description="COCO 2017 in detectron2's datasets/coco layout", splits=SPLITS,
    official_sizes=OFFICIAL_SIZES, check=check_coco, synth=synth_coco, synth_sizes=SYNTH_SIZES, synth_code=5,
    listing=listing,
)
