"""Generated datasets in exactly the real on-disk layouts (``mopro-bench data synth KIND OUT``).

Every image is drawn from a class *look* (see :mod:`mopro_bench.data.render`): learnable, class-dependent content at
a random pose on a random scene. Deterministic by seed: each image has its own generator seeded from
``(seed, kind, split, index)``. The tree is written into a temporary sibling folder and renamed onto ``out`` at the
end, so an interrupted run never leaves a half-written dataset behind.

The ImageNet family (``webvision``, ``imagenet``, ``imagenet-r``, ``imagenet-a``) draws its classes from the wnids in
both the ImageNet-R and ImageNet-A lists (sorted); a class looks the same in all four. Labels are ImageNet-1k indices.
Sizes per scale are in :data:`SIZES`; any of them can be overridden by keyword (``classes=``, ``train_per_class=``...).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from mopro_bench.data import KINDS, SYNTH_GENERATOR, render, synth_marker_path
from mopro_bench.data.imagenet import imagenet_index
from mopro_bench.data.voc import VOC_CLASSES
from mopro_bench.errors import BenchError
from mopro_bench.io import atomic_write_json, atomic_write_text, check_writable_dir
from mopro_bench.resources import imagenet1k_wnids, imagenet_a_wnids, imagenet_r_wnids

SCALES = ("tiny", "small")

SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "webvision": {
        "tiny": {"classes": 8, "train_per_class": 16, "val_per_class": 4, "image_size": 64,
                 "noise": 0.3, "ood": 0.1, "corrupt": 0},
        "small": {"classes": 16, "train_per_class": 60, "val_per_class": 10, "image_size": 96,
                  "noise": 0.3, "ood": 0.1, "corrupt": 0},
    },
    "imagenet": {
        "tiny": {"classes": 8, "train_per_class": 16, "val_per_class": 4, "image_size": 64},
        "small": {"classes": 16, "train_per_class": 50, "val_per_class": 10, "image_size": 96},
    },
    "imagenet-r": {
        "tiny": {"classes": 8, "per_class": 4, "image_size": 64},
        "small": {"classes": 16, "per_class": 10, "image_size": 96},
    },
    "imagenet-a": {
        "tiny": {"classes": 8, "per_class": 4, "image_size": 64},
        "small": {"classes": 16, "per_class": 10, "image_size": 96},
    },
    "voc07": {
        "tiny": {"trainval": 120, "test": 120, "width": 96, "height": 72},
        "small": {"trainval": 500, "test": 500, "width": 128, "height": 96},
    },
    "places205": {
        "tiny": {"train_per_class": 2, "val_per_class": 1, "image_size": 40},
        "small": {"train_per_class": 17, "val_per_class": 4, "image_size": 64},
    },
    "coco": {
        "tiny": {"train": 16, "val": 8, "width": 128, "height": 96},
        "small": {"train": 160, "val": 40, "width": 160, "height": 120},
    },
}

# Real COCO category ids and names (non-contiguous on purpose: 17, 18 exercise id -> contiguous-index mapping).
COCO_CATEGORIES = (
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 2, "name": "bicycle", "supercategory": "vehicle"},
    {"id": 3, "name": "car", "supercategory": "vehicle"},
    {"id": 17, "name": "cat", "supercategory": "animal"},
    {"id": 18, "name": "dog", "supercategory": "animal"},
)

_KIND_CODE = {k: i + 1 for i, k in enumerate(KINDS)}


@cache
def family_wnids() -> tuple[str, ...]:
    """The wnids generated ImageNet-family datasets draw from: in both the ImageNet-R and ImageNet-A lists, sorted."""
    return tuple(sorted(set(imagenet_r_wnids()) & set(imagenet_a_wnids())))


def family_classes(n: int) -> list[str]:
    pool = family_wnids()
    if not 1 <= n <= len(pool):
        raise BenchError(f"classes={n} is out of range", f"generated ImageNet-family sets have 1..{len(pool)} classes")
    return list(pool[:n])


def truth_path(out: str | Path) -> Path:
    """Where ``synth('webvision', out)`` keeps the noise truth: next to the layout, never inside it."""
    out = Path(out)
    return out.parent / f"{out.name}.truth.json"


def _params(kind: str, scale: str, kw: dict) -> dict:
    if kind not in KINDS:
        raise BenchError(f"unknown dataset kind {kind!r}", f"use one of {', '.join(KINDS)}")
    if scale not in SCALES:
        raise BenchError(f"unknown scale {scale!r}", f"use one of {', '.join(SCALES)}")
    p = dict(SIZES[kind][scale])
    bad = sorted(set(kw) - set(p))
    if bad:
        flags = ", ".join("--" + k.replace("_", "-") for k in sorted(p))
        raise BenchError(f"synth {kind} does not take {', '.join(bad)}", f"options for {kind}: {flags}")
    for k, v in kw.items():
        if v is not None:
            p[k] = type(p[k])(v)
    for k, v in p.items():
        if k in ("noise", "ood"):
            if not 0.0 <= v < 1.0:
                raise BenchError(f"{k}={v} is out of range", f"{k} is a fraction of the training images in [0, 1)")
        elif v < 0 or (v == 0 and k != "corrupt"):
            raise BenchError(f"{k}={v} is out of range", f"{k} must be a positive number")
    if kind == "webvision" and p["noise"] + p["ood"] >= 1.0:
        raise BenchError(f"noise={p['noise']} + ood={p['ood']} leaves no clean images", "keep noise + ood below 1")
    return p


def synth(kind: str, out: str | Path, seed: int = 0, scale: str = "tiny", **kw) -> dict:
    """Write a generated ``kind`` dataset at ``out`` (must be new or empty); returns a summary dict."""
    p = _params(kind, scale, kw)
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BenchError(f"{out} already exists and is not empty", "pass a new or empty folder to write the dataset into")
    # the tree is built next to OUT and renamed into place; the marker file also goes there (one line, exit 2 if not
    # writable, before anything is generated)
    check_writable_dir(out.parent, "output folder")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        gen = {"webvision": _webvision, "imagenet": _imagenet, "imagenet-r": _imagenet_ra, "imagenet-a": _imagenet_ra,
               "voc07": _voc07, "places205": _places205, "coco": _coco}[kind]
        summary = gen(tmp, int(seed), p, kind=kind, out=out)
        probe = _probe(tmp)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # the marker `mopro_bench.data.is_synthetic` reads (results on this tree then say "synthetic": true); deterministic
    # and free of absolute paths, like the tree
    marker = atomic_write_json(synth_marker_path(out), {
        "generator": SYNTH_GENERATOR, "kind": kind, "layout": out.name, "seed": int(seed), "scale": scale, "params": p,
        "probe": probe,
    })
    summary = {"kind": kind, "root": str(out), "seed": int(seed), "scale": scale, "params": p, **summary,
               "marker": str(marker)}
    return summary


def _probe(root: Path) -> dict[str, int]:
    """Sizes of three generated files (first, middle, last by path): ties the marker to this very tree."""
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    picked = sorted({files[0], files[len(files) // 2], files[-1]}) if files else []
    return {rel: (root / rel).stat().st_size for rel in picked}


# ---------------------------------------------------------------------------------------------------------------- utils
def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _family_image(wnid: str, size: int, seed: int, kind: str, split: str, i: int, style: str = "photo") -> bytes:
    pos = family_wnids().index(wnid)
    rng = render.image_rng(seed, _KIND_CODE[kind], split, i)
    return render.jpeg_bytes(render.object_image(render.family_look(pos), size, rng, style=style))


def _lines(rows: list[str]) -> str:
    return "".join(r + "\n" for r in rows)


# ------------------------------------------------------------------------------------------------------------ webvision
def _webvision(root: Path, seed: int, p: dict, kind: str, out: Path) -> dict:
    wnids = family_classes(p["classes"])
    index = imagenet_index()
    labels = [index[w] for w in wnids]
    n_cls, size = len(wnids), p["image_size"]
    n_train = n_cls * p["train_per_class"]
    rng = np.random.default_rng(np.random.SeedSequence([seed, _KIND_CODE[kind], 1]))
    # each image has a true class (balanced); a fixed fraction becomes OOD, another fraction gets a flipped label
    true_pos = np.repeat(np.arange(n_cls), p["train_per_class"])
    order = rng.permutation(n_train)
    n_ood, n_flip = int(round(n_train * p["ood"])), int(round(n_train * p["noise"]))
    kinds = np.array(["clean"] * n_train, dtype=object)
    kinds[order[:n_ood]] = "ood"
    kinds[order[n_ood:n_ood + n_flip]] = "flip"
    if n_cls < 2:
        kinds[kinds == "flip"] = "clean"
    given_pos = true_pos.copy()
    for i in range(n_train):
        if kinds[i] == "flip":
            given_pos[i] = (true_pos[i] + rng.integers(1, n_cls)) % n_cls
        elif kinds[i] == "ood":
            given_pos[i] = rng.integers(0, n_cls)
    source = np.where(rng.random(n_train) < 0.55, "google", "flickr")
    rows: dict[str, list[str]] = {"google": [], "flickr": []}
    truth: dict[str, dict] = {}
    counters: dict[tuple[str, int], int] = {}
    for i in range(n_train):
        g = int(given_pos[i])
        key = (str(source[i]), g)
        counters[key] = counters.get(key, 0) + 1
        rel = f"{source[i]}/q{labels[g] + 1:04d}/{counters[key]:06d}.jpg"
        irng = render.image_rng(seed, _KIND_CODE[kind], "train", i)
        if kinds[i] == "ood":
            img = render.ood_image(size, irng)
        else:
            img = render.object_image(render.family_look(family_wnids().index(wnids[true_pos[i]])), size, irng)
        _write(root / rel, render.jpeg_bytes(img))
        rows[str(source[i])].append(f"{rel} {labels[g]}")
        truth[rel] = {"given": labels[g], "true": -1 if kinds[i] == "ood" else labels[true_pos[i]], "kind": str(kinds[i])}
    # a few deliberately truncated files (real web data has them); the loader must skip and count them
    corrupt = sorted(truth)[:: max(1, len(truth) // max(1, p["corrupt"]))][: p["corrupt"]] if p["corrupt"] else []
    for rel in corrupt:
        data = (root / rel).read_bytes()
        (root / rel).write_bytes(data[: len(data) // 3])
    val_rows = []
    k = 0
    for c, w in enumerate(wnids):
        for j in range(p["val_per_class"]):
            k += 1
            name = f"val{k:06d}.jpg"
            _write(root / "val_images_256" / name, _family_image(w, size, seed, kind, "val", c * 100000 + j))
            val_rows.append(f"{name} {labels[c]}")
    info = root / "info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "train_filelist_google.txt").write_text(_lines(rows["google"]))
    (info / "train_filelist_flickr.txt").write_text(_lines(rows["flickr"]))
    (info / "val_filelist.txt").write_text(_lines(val_rows))
    (info / "synsets.txt").write_text(_lines([f"{w} synthetic class {i}" for i, w in enumerate(imagenet1k_wnids())]))
    tp = truth_path(out)
    atomic_write_json(tp, {
        "kind": "webvision", "seed": seed, "noise": p["noise"], "ood": p["ood"], "classes": wnids, "labels": labels,
        "counts": {k: int((kinds == k).sum()) for k in ("clean", "flip", "ood")},
        "corrupt": corrupt, "train": truth,
    })
    return {"classes": wnids, "labels": labels, "truth": str(tp),
            "counts": {"train": n_train, "val": len(val_rows), "flip": int((kinds == "flip").sum()),
                       "ood": int((kinds == "ood").sum()), "corrupt": len(corrupt)}}


# ------------------------------------------------------------------------------------------------------------- imagenet
def _imagenet(root: Path, seed: int, p: dict, kind: str, out: Path) -> dict:
    wnids = family_classes(p["classes"])
    counts = {"train": 0, "val": 0}
    train_names: dict[str, list[str]] = {}
    vid = 0
    for c, w in enumerate(wnids):
        names = []
        for j in range(p["train_per_class"]):
            name = f"{w}_{10000 + 37 * j + c}.JPEG"
            _write(root / "train" / w / name, _family_image(w, p["image_size"], seed, kind, "train", c * 100000 + j))
            names.append(name)
        train_names[w] = names
        counts["train"] += len(names)
        for j in range(p["val_per_class"]):
            vid += 1
            name = f"ILSVRC2012_val_{vid:08d}.JPEG"
            _write(root / "val" / w / name, _family_image(w, p["image_size"], seed, kind, "val", c * 100000 + j))
            counts["val"] += 1
    # SimCLR-format subset lists (1% / 10% of each class, at least one image), outside the layout
    rng = np.random.default_rng(np.random.SeedSequence([seed, _KIND_CODE[kind], 2]))
    subsets = {}
    sub_dir = out.parent / f"{out.name}.subsets"
    for pct in (1, 10):
        picked = []
        for w in wnids:
            names = train_names[w]
            k = max(1, int(round(len(names) * pct / 100)))
            picked.extend(names[i] for i in sorted(rng.choice(len(names), size=k, replace=False)))
        subsets[f"{pct}percent"] = str(atomic_write_text(sub_dir / f"{pct}percent.txt", _lines(picked)))
    index = imagenet_index()
    return {"classes": wnids, "labels": [index[w] for w in wnids], "counts": counts, "subsets": subsets}


def _imagenet_ra(root: Path, seed: int, p: dict, kind: str, out: Path) -> dict:
    wnids = family_classes(p["classes"])
    style = "rendition" if kind == "imagenet-r" else "adversarial"
    n = 0
    for c, w in enumerate(wnids):
        for j in range(p["per_class"]):
            name = f"{style[:3]}_{j:04d}.jpg" if kind == "imagenet-r" else f"{j:07d}.jpg"
            _write(root / w / name, _family_image(w, p["image_size"], seed, kind, "test", c * 100000 + j, style=style))
            n += 1
    index = imagenet_index()
    return {"classes": wnids, "labels": [index[w] for w in wnids], "counts": {"test": n}}


# ---------------------------------------------------------------------------------------------------------------- voc07
def _voc07(root: Path, seed: int, p: dict, kind: str, out: Path) -> dict:
    n_tv, n_te = p["trainval"], p["test"]
    w, h = p["width"], p["height"]
    rng = np.random.default_rng(np.random.SeedSequence([seed, _KIND_CODE[kind], 1]))
    ids = [f"{i:06d}" for i in range(1, n_tv + n_te + 1)]
    is_test = np.zeros(n_tv + n_te, bool)
    is_test[rng.permutation(n_tv + n_te)[:n_te]] = True
    splits = {"trainval": [i for i, t in zip(ids, is_test) if not t], "test": [i for i, t in zip(ids, is_test) if t]}
    voc = root / "VOCdevkit" / "VOC2007"
    labels: dict[str, np.ndarray] = {}
    for split, split_ids in splits.items():
        lab = np.full((len(split_ids), 20), -1, np.int8)
        primaries = np.arange(len(split_ids)) % 20
        rng.shuffle(primaries)
        for n, image_id in enumerate(split_ids):
            irng = render.image_rng(seed, _KIND_CODE[kind], split, int(image_id))
            img = render.background((w, h), irng, clutter=int(irng.integers(1, 4)))
            extra = [int(c) for c in irng.choice(20, size=int(irng.choice([0, 1, 1, 2])), replace=False) if c != primaries[n]]
            objects = [(int(primaries[n]), False)] + [(c, bool(irng.random() < 0.25)) for c in extra]
            for c, difficult in objects:
                side = min(w, h)
                r = side * (irng.uniform(0.07, 0.09) if difficult else irng.uniform(0.18, 0.30))
                cx, cy = irng.uniform(r, w - r), irng.uniform(r, h - r)
                render.draw_object(img, render.voc_look(c), cx, cy, r, irng.uniform(0, 2 * math.pi), irng,
                                   val=irng.uniform(0.35, 0.5) if difficult else None)
                lab[n, c] = max(lab[n, c], 0 if difficult else 1)
            _write(voc / "JPEGImages" / f"{image_id}.jpg", render.jpeg_bytes(render.add_noise(img, irng, 6.0)))
        labels[split] = lab
        main = voc / "ImageSets" / "Main"
        main.mkdir(parents=True, exist_ok=True)
        (main / f"{split}.txt").write_text(_lines(split_ids))
        for c, cls in enumerate(VOC_CLASSES):
            (main / f"{cls}_{split}.txt").write_text(_lines([f"{i} {int(v):2d}" for i, v in zip(split_ids, lab[:, c])]))
    pos = {s: (labels[s] == 1).sum(0).tolist() for s in labels}
    return {"counts": {s: len(v) for s, v in splits.items()}, "positives": pos,
            "difficult": {s: int((labels[s] == 0).sum()) for s in labels}}


# ------------------------------------------------------------------------------------------------------------ places205
def places_category(c: int) -> str:
    """Relative folder of generated Places class ``c`` (same shape as the real ``a/abbey``)."""
    return f"s/scene_{c:03d}"


def _places205(root: Path, seed: int, p: dict, kind: str, out: Path) -> dict:
    from mopro_bench.data.places import IMAGE_DIR, NUM_CLASSES, SPLIT_DIR

    images = root / IMAGE_DIR
    rows: dict[str, list[str]] = {"train": [], "val": []}
    for c in range(NUM_CLASSES):
        look = render.places_look(c)
        k = 0
        for split in ("train", "val"):
            for j in range(p[f"{split}_per_class"]):
                k += 1
                rel = f"{places_category(c)}/{k:08d}.jpg"
                irng = render.image_rng(seed, _KIND_CODE[kind], split, c * 100000 + j)
                _write(images / rel, render.jpeg_bytes(render.scene_image(look, p["image_size"], irng)))
                rows[split].append(f"{rel} {c}")
    for split, r in rows.items():
        (root / SPLIT_DIR).mkdir(parents=True, exist_ok=True)
        (root / SPLIT_DIR / f"{split}_places205.csv").write_text(_lines(r))
    return {"counts": {s: len(r) for s, r in rows.items()}, "classes": NUM_CLASSES}


# ----------------------------------------------------------------------------------------------------------------- coco
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


def _coco(root: Path, seed: int, p: dict, kind: str, out: Path) -> dict:
    w, h = p["width"], p["height"]
    cats = list(COCO_CATEGORIES)
    image_id, ann_id = 0, 0
    counts = {}
    for split in ("train", "val"):
        images, anns = [], []
        for n in range(p[split]):
            image_id += 1
            irng = render.image_rng(seed, _KIND_CODE[kind], split, n)
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
            _write(root / f"{split}2017" / name, render.jpeg_bytes(render.add_noise(img, irng, 5.0)))
            images.append({"id": image_id, "file_name": name, "width": w, "height": h, "license": 1})
        obj = {"info": {"description": "mopro-bench generated COCO-format dataset", "version": "1.0", "year": 2017},
               "licenses": [{"id": 1, "name": "generated", "url": ""}],
               "images": images, "annotations": anns, "categories": cats}
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(obj))
        counts[split] = len(images)
        counts[f"{split}_instances"] = len(anns)
    return {"counts": counts, "categories": [c["name"] for c in cats]}
