"""PASCAL VOC 2007 classification layout.

    <root>/VOCdevkit/VOC2007/JPEGImages/<id>.jpg
    <root>/VOCdevkit/VOC2007/ImageSets/Main/{trainval,test}.txt            one id per line
    <root>/VOCdevkit/VOC2007/ImageSets/Main/<class>_{trainval,test}.txt    "<id> <label>", label 1 / -1 / 0 (difficult)

``root`` may also be the ``VOCdevkit`` folder or ``VOC2007`` itself.

The dataset plug-in of kind voc07 (``LAYOUT``, registered in ``mopro_bench.data.BUILTIN_DATASETS``): the loader
(:func:`find_voc2007`, :class:`VOC07`), ``OFFICIAL_SIZES``, the ``data check`` rules, the ``data synth`` generator and
its sizes.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from mopro_bench.data import render
from mopro_bench.data.check import CheckReport, check_files, examples, list_problems, read_text
from mopro_bench.data.common import read_text_file
from mopro_bench.data.layout import DatasetLayout, SplitListing
from mopro_bench.data.synth import kind_code, text_lines, write_file
from mopro_bench.errors import BenchError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
SPLITS = ("trainval", "test")
OFFICIAL_SIZES = {"trainval": 5011, "test": 4952}
TARS = {"trainval": "VOCtrainval_06-Nov-2007.tar", "test": "VOCtest_06-Nov-2007.tar"}


def parse_ids(text: str) -> tuple[list[str], list[tuple[int, str, str]]]:
    """``trainval.txt`` / ``test.txt``: one bare image id per line. Returns ``(ids, problems)``, problems being
    ``(line_number, line, reason)`` for an id that is not a bare name (``/``, ``..``) or is listed twice."""
    ids: list[str] = []
    bad: list[tuple[int, str, str]] = []
    first: dict[str, int] = {}
    for ln, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        i = parts[0]
        if "/" in i or "\\" in i or i in (".", ".."):
            bad.append((ln, line.strip(), "an image id is a bare name such as 000005 (no path)"))
        elif i in first:
            bad.append((ln, line.strip(), f"duplicated: id {i} is already listed on line {first[i]}"))
        else:
            first[i] = ln
            ids.append(i)
    return ids, bad


def parse_class_lines(text: str, ids: set[str], split_name: str) -> tuple[dict[str, int], list[tuple[int, str, str]]]:
    """``<class>_<split>.txt``: ``<id> <1|-1|0>`` lines. Returns ``({id: label}, problems)``; an id outside the split,
    or listed twice (with the same or a contradictory label) is a problem."""
    labels: dict[str, int] = {}
    where: dict[str, int] = {}
    bad: list[tuple[int, str, str]] = []
    for ln, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("1", "-1", "0"):
            bad.append((ln, line.strip(), "expected '<id> <1|-1|0>'"))
        elif parts[0] not in ids:
            bad.append((ln, line.strip(), f"id {parts[0]} is not in {split_name}"))
        elif parts[0] in labels:
            same = labels[parts[0]] == int(parts[1])
            bad.append((ln, line.strip(), f"{'duplicated' if same else 'contradictory labels'}: id {parts[0]} is already "
                                          f"labelled {labels[parts[0]]} on line {where[parts[0]]}"))
        else:
            labels[parts[0]] = int(parts[1])
            where[parts[0]] = ln
    return labels, bad


def find_voc2007(root: str | Path) -> Path:
    """The ``VOC2007`` folder for a root given as its parent's parent, ``VOCdevkit`` or ``VOC2007`` itself."""
    root = Path(root).expanduser()
    for cand in (root / "VOCdevkit" / "VOC2007", root / "VOC2007", root):
        if (cand / "ImageSets" / "Main").is_dir() or (cand / "JPEGImages").is_dir():
            return cand
    if not root.exists():
        raise BenchError(f"VOC07 root {root} does not exist", "pass the folder that contains VOCdevkit/ with --data")
    raise BenchError(f"no VOCdevkit/VOC2007/ImageSets/Main under {root}",
                     "pass the folder that contains VOCdevkit/ (from VOCtrainval_06-Nov-2007.tar and VOCtest_06-Nov-2007.tar)")


class VOC07:
    """Ids, 20-class labels (int8 in {1, -1, 0}) and image paths of VOC2007 trainval/test."""

    def __init__(self, root: str | Path):
        self.voc = find_voc2007(root)
        self.root = Path(root)
        self.main = self.voc / "ImageSets" / "Main"
        self.images = self.voc / "JPEGImages"
        self._memo: dict = {}

    def _split(self, split: str) -> str:
        if split not in SPLITS:
            raise BenchError(f"unknown VOC07 split {split!r}", f"use one of {', '.join(SPLITS)}")
        return split

    def split_file(self, split: str) -> Path:
        return self.main / f"{self._split(split)}.txt"

    def class_file(self, cls: str, split: str) -> Path:
        return self.main / f"{cls}_{self._split(split)}.txt"

    def ids(self, split: str) -> list[str]:
        return list(self._ids(split))

    def _ids(self, split: str) -> tuple[str, ...]:
        if ("ids", split) not in self._memo:
            self._memo[("ids", split)] = self._read_ids(split)
        return self._memo[("ids", split)]

    def _read_ids(self, split: str) -> tuple[str, ...]:
        f = self.split_file(split)
        if not f.is_file():
            raise BenchError(f"VOC07 split file {f} is missing",
                             f"extract {TARS[split]} into {self.root}")
        ids, bad = parse_ids(read_text_file(f, "VOC07 split file"))
        if bad:
            ln, line, reason = bad[0]
            more = f" ({len(bad)} bad lines)" if len(bad) > 1 else ""
            raise BenchError(f"{f}:{ln}: {reason}: {line!r}{more}", "restore ImageSets/Main from the VOC2007 tar")
        if not ids:
            raise BenchError(f"VOC07 split file {f} lists no images", f"extract {TARS[split]} into {self.root}")
        other = self.split_file("test" if split == "trainval" else "trainval")
        if other.is_file():  # an image in both splits would be trained on and scored
            both = set(ids) & set(parse_ids(read_text_file(other, "VOC07 split file"))[0])
            if both:
                raise BenchError(f"VOC07: {len(both)} image id(s) are in both trainval.txt and test.txt "
                                 f"(first: {min(both)})", "restore ImageSets/Main from the VOC2007 tars")
        return tuple(ids)

    def labels(self, split: str) -> np.ndarray:
        return self._labels(split).copy()

    def _labels(self, split: str) -> np.ndarray:
        if ("labels", split) not in self._memo:
            self._memo[("labels", split)] = self._read_labels(split)
        return self._memo[("labels", split)]

    def _read_labels(self, split: str) -> np.ndarray:
        ids = self._ids(split)
        index = {i: n for n, i in enumerate(ids)}
        out = np.full((len(ids), len(VOC_CLASSES)), -2, dtype=np.int8)
        for c, cls in enumerate(VOC_CLASSES):
            f = self.class_file(cls, split)
            if not f.is_file():
                raise BenchError(f"VOC07 class file {f} is missing",
                                 f"extract {TARS[split]} into {self.root} (ImageSets/Main needs all 20 classes)")
            labels, bad = parse_class_lines(read_text_file(f, "VOC07 class file"), set(index), self.split_file(split).name)
            if bad:
                ln, line, reason = bad[0]
                more = f" ({len(bad)} bad lines)" if len(bad) > 1 else ""
                raise BenchError(f"{f}:{ln}: {reason}: {line!r}{more}", "restore ImageSets/Main from the VOC2007 tar")
            for i, y in labels.items():
                out[index[i], c] = y
        missing = np.argwhere(out == -2)
        if len(missing):
            n, c = missing[0]
            raise BenchError(f"VOC07 {split}: image {ids[n]} has no label in {self.class_file(VOC_CLASSES[c], split).name} "
                             f"({len(missing)} labels missing)", "restore ImageSets/Main from the VOC2007 tar")
        return out

    def image_path(self, image_id: str) -> Path:
        return self.images / f"{image_id}.jpg"

    def paths(self, split: str) -> list[Path]:
        return [self.image_path(i) for i in self._ids(split)]


# --------------------------------------------------------------------------------------------------------------- check

def check_voc07(report: CheckReport, root: Path, deep: bool) -> None:
    try:
        voc = find_voc2007(root)
    except BenchError as e:
        report.error_from(e)
        return
    main = voc / "ImageSets" / "Main"
    tar = TARS
    split_ids: dict[str, set[str]] = {}
    for split in ("trainval", "test"):
        f = main / f"{split}.txt"
        fix = f"extract {tar[split]} into {root}"
        if not f.is_file():
            report.error(f"VOC07 split file {f} is missing", fix)
            continue
        text = read_text(report, f, "VOC07 split file")
        if text is None:
            continue
        ids, bad_ids = parse_ids(text)
        list_problems(report, f, bad_ids, f"restore {f.name} from {tar[split]}")
        id_set = split_ids[split] = set(ids)
        both = id_set & split_ids.get("trainval", set()) if split == "test" else set()
        if both:
            report.error(f"VOC07: {len(both)} image id(s) are in both trainval.txt and test.txt (first: {min(both)})",
                         "restore ImageSets/Main from the VOC2007 tars")
        report.size(split, len(ids), OFFICIAL_SIZES[split])
        if not ids:
            report.error(f"VOC07 split file {f} lists no images", fix)
            continue
        missing_cls = [c for c in VOC_CLASSES if not (main / f"{c}_{split}.txt").is_file()]
        if missing_cls:
            report.error(f"{len(missing_cls)} of 20 VOC07 class files for {split} are missing "
                         f"(first: {examples([f'{c}_{split}.txt' for c in missing_cls])})", fix)
        no_pos = []
        for c in VOC_CLASSES:
            cf = main / f"{c}_{split}.txt"
            if not cf.is_file():
                continue
            text = read_text(report, cf, "VOC07 class file")
            if text is None:
                continue
            labels, bad = parse_class_lines(text, id_set, f.name)
            list_problems(report, cf, bad, f"restore {cf.name} from {tar[split]}")
            if not bad and len(labels) != len(id_set):
                report.error(f"{cf}: {len(id_set) - len(labels)} of the {len(id_set)} {split} ids have no label",
                             f"restore {cf.name} from {tar[split]}")
            if not any(y == 1 for y in labels.values()):
                no_pos.append(c)
        if no_pos:
            report.warn(f"VOC07 {split}: {len(no_pos)} class(es) have no positive image (first: {examples(no_pos)})")
        check_files(report, f"VOC07 {split}", [voc / "JPEGImages" / f"{i}.jpg" for i in ids], deep, fix)


# --------------------------------------------------------------------------------------------------------------- synth
SYNTH_SIZES = {
    "tiny": {"trainval": 120, "test": 120, "width": 96, "height": 72},
    "small": {"trainval": 500, "test": 500, "width": 128, "height": 96},
}


def synth_voc07(root: Path, seed: int, p: dict, kind: str, out: Path) -> dict:
    n_tv, n_te = p["trainval"], p["test"]
    w, h = p["width"], p["height"]
    rng = np.random.default_rng(np.random.SeedSequence([seed, kind_code(kind), 1]))
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
            irng = render.image_rng(seed, kind_code(kind), split, int(image_id))
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
            write_file(voc / "JPEGImages" / f"{image_id}.jpg", render.jpeg_bytes(render.add_noise(img, irng, 6.0)))
        labels[split] = lab
        main = voc / "ImageSets" / "Main"
        main.mkdir(parents=True, exist_ok=True)
        (main / f"{split}.txt").write_text(text_lines(split_ids))
        for c, cls in enumerate(VOC_CLASSES):
            (main / f"{cls}_{split}.txt").write_text(text_lines([f"{i} {int(v):2d}" for i, v in zip(split_ids, lab[:, c])]))
    pos = {s: (labels[s] == 1).sum(0).tolist() for s in labels}
    return {"counts": {s: len(v) for s, v in splits.items()}, "positives": pos,
            "difficult": {s: int((labels[s] == 0).sum()) for s in labels}}


def listing(root: Path, split: str, data: dict) -> SplitListing:
    """Ids of ``split`` in order, then the sha256 of its label matrix (a changed label changes the list hash)."""
    voc = VOC07(root)
    ids = voc.ids(split)
    labels = voc.labels(split)
    return SplitListing(len(ids), OFFICIAL_SIZES.get(split), [*ids, hashlib.sha256(labels.tobytes()).hexdigest()])


LAYOUT = DatasetLayout(
    kind="voc07", description="PASCAL VOC 2007 classification (VOCdevkit/VOC2007)", splits=SPLITS,
    official_sizes=OFFICIAL_SIZES, check=check_voc07, synth=synth_voc07, synth_sizes=SYNTH_SIZES, synth_code=3,
    listing=listing,
)
