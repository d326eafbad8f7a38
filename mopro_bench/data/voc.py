"""PASCAL VOC 2007 classification layout.

    <root>/VOCdevkit/VOC2007/JPEGImages/<id>.jpg
    <root>/VOCdevkit/VOC2007/ImageSets/Main/{trainval,test}.txt            one id per line
    <root>/VOCdevkit/VOC2007/ImageSets/Main/<class>_{trainval,test}.txt    "<id> <label>", label 1 / -1 / 0 (difficult)

``root`` may also be the ``VOCdevkit`` folder or ``VOC2007`` itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mopro_bench.errors import BenchError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
SPLITS = ("trainval", "test")
OFFICIAL_SIZES = {"trainval": 5011, "test": 4952}
TARS = {"trainval": "VOCtrainval_06-Nov-2007.tar", "test": "VOCtest_06-Nov-2007.tar"}


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
        if f.is_file():
            return tuple(line.split()[0] for line in f.read_text().splitlines() if line.strip())
        raise BenchError(f"VOC07 split file {f} is missing",
                         f"extract {TARS[split]} into {self.root}")

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
            for ln, line in enumerate(f.read_text().splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2 or parts[1] not in ("1", "-1", "0"):
                    raise BenchError(f"{f}:{ln}: expected '<id> <1|-1|0>', got {line.strip()!r}",
                                     "restore the file from the VOC2007 tar")
                if parts[0] not in index:
                    raise BenchError(f"{f}:{ln}: id {parts[0]} is not in {self.split_file(split).name}",
                                     "restore ImageSets/Main from the VOC2007 tar")
                out[index[parts[0]], c] = int(parts[1])
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
