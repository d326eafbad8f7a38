"""COCO 2017 in detectron2's ``datasets/coco`` layout.

    <root>/annotations/instances_{train,val}2017.json
    <root>/{train,val}2017/<file_name>
"""

from __future__ import annotations

import json
from pathlib import Path

from mopro_bench.data.common import outside_root, read_text_file
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
