"""PASCAL VOC 2007 classification layout.

    <root>/VOCdevkit/VOC2007/JPEGImages/<id>.jpg
    <root>/VOCdevkit/VOC2007/ImageSets/Main/{trainval,test}.txt            one id per line
    <root>/VOCdevkit/VOC2007/ImageSets/Main/<class>_{trainval,test}.txt    "<id> <label>", label 1 / -1 / 0 (difficult)

``root`` may also be the ``VOCdevkit`` folder or ``VOC2007`` itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mopro_bench.data.common import read_text_file
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
