"""WebVision 1.0 / 2.0 layout.

    <root>/info/train_filelist_google.txt   "<relpath> <label>", images at <root>/<relpath> (e.g. google/q0001/000001.jpg)
    <root>/info/train_filelist_flickr.txt
    <root>/info/val_filelist.txt            "<name> <label>", images at <root>/val_images_256/<name>
    <root>/info/synsets.txt                 optional, one "<wnid> <words>" line per class

``num_class`` keeps labels < N (1000 = WebVision 1.0 / the ImageNet classes, 5000 = WebVision 2.0). A pseudo-label
annotation JSON ``{"images": [relpath, ...], "labels": [int, ...]}`` (written by noise cleaning) replaces the train list.

Training data from the web has broken files: :class:`WebVisionTrain` replaces an unreadable image by another sample
(deterministically) and counts it; it never crashes. Validation goes through :class:`~mopro_bench.data.common.ImageList`,
which fails loudly naming the file.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from mopro_bench.data.common import load_rgb, outside_root, read_text_file
from mopro_bench.data.places import read_list_file
from mopro_bench.errors import BenchError
from mopro_bench.io import atomic_write_json

log = logging.getLogger(__name__)

TRAIN_LISTS = ("info/train_filelist_google.txt", "info/train_filelist_flickr.txt")
VAL_LIST = "info/val_filelist.txt"
VAL_DIR = "val_images_256"
SYNSETS = "info/synsets.txt"
MAX_CLASSES = 5000
OFFICIAL_SIZES = {1000: {"train": 2439574, "val": 50000}, 5000: {"train": 16000000, "val": 250000}}


def read_annotation(path: str | Path) -> list[tuple[str, int]]:
    """A pseudo-label file ``{"images": [...], "labels": [...]}`` -> ``[(relpath, label)]``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BenchError(f"annotation file {path} does not exist", "pass the JSON written by `mopro-bench noise-clean`")
    try:
        obj = json.loads(read_text_file(path, "annotation file"))
    except json.JSONDecodeError as e:
        raise BenchError(f"annotation file {path} is not valid JSON ({e})",
                         "pass the JSON written by `mopro-bench noise-clean`") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("images"), list) or not isinstance(obj.get("labels"), list):
        raise BenchError(f"annotation file {path} has no 'images' and 'labels' lists",
                         'write {"images": [relpath, ...], "labels": [int, ...]}')
    if len(obj["images"]) != len(obj["labels"]):
        raise BenchError(f"annotation file {path}: {len(obj['images'])} images but {len(obj['labels'])} labels",
                         "write one label per image")
    out = []
    for i, (rel, lab) in enumerate(zip(obj["images"], obj["labels"])):
        if not isinstance(lab, int) or isinstance(lab, bool) or lab < 0:
            raise BenchError(f"annotation file {path}: label {lab!r} of entry {i} ({rel}) is not a class index",
                             "labels must be integers >= 0")
        if not isinstance(rel, str) or not rel or outside_root(rel):
            why = outside_root(rel) if isinstance(rel, str) and rel else "is not a relative path"
            raise BenchError(f"annotation file {path}: image {rel!r} of entry {i} {why}",
                             "list images by their path relative to the WebVision root, as noise-clean writes them")
        out.append((str(rel), int(lab)))
    return out


def write_annotation(path: str | Path, images: list[str], labels: list[int]) -> Path:
    """Write a pseudo-label file (atomically) that ``WebVision(root, annotation=path)`` reads back."""
    if len(images) != len(labels):
        raise ValueError("images and labels differ in length")
    return atomic_write_json(path, {"images": [str(r) for r in images], "labels": [int(y) for y in labels]})


class WebVision:
    """Train/val file lists of a WebVision root. Relative paths are relative to ``root`` (val: ``val_images_256/<name>``)."""

    def __init__(self, root: str | Path, num_class: int = 1000, annotation: str | Path | None = None):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise BenchError(f"WebVision root {self.root} does not exist",
                             "pass the folder that contains info/, google/, flickr/ and val_images_256/ with --data")
        if not 1 <= int(num_class) <= MAX_CLASSES:
            raise BenchError(f"num_class {num_class} is out of range", "use 1000 (WebVision 1.0) or 5000 (WebVision 2.0)")
        self.num_class = int(num_class)
        self.annotation = Path(annotation).expanduser() if annotation else None
        self._train: list[tuple[str, int]] | None = None
        self._val: list[tuple[str, int]] | None = None

    def _read(self, rel: str) -> list[tuple[str, int]]:
        """One list file. The two training lists may each be empty (their union may not) and may repeat an entry
        (web data; a repeat only weighs an image double in training); the val list may do neither."""
        f = self.root / rel
        if not f.is_file():
            raise BenchError(f"WebVision list {f} is missing",
                             f"extract the WebVision info/ folder (with {Path(rel).name}) into {self.root}")
        train = rel in TRAIN_LISTS
        return read_list_file(f, f"WebVision {Path(rel).name}", MAX_CLASSES, allow_empty=train, duplicates_ok=train)

    def train_samples(self) -> list[tuple[str, int]]:
        """``[(relpath, label)]`` with label < num_class (from the annotation file when one is given)."""
        if self._train is None:
            if self.annotation is not None:
                items = read_annotation(self.annotation)
            else:
                items = [s for rel in TRAIN_LISTS for s in self._read(rel)]
            self._train = [(r, y) for r, y in items if y < self.num_class]
            if not self._train:
                raise BenchError(f"no WebVision training images with label < {self.num_class} under {self.root}",
                                 "check --num-class and the train lists")
        return list(self._train)

    def val_samples(self) -> list[tuple[str, int]]:
        """``[(relpath, label)]`` with relpath ``val_images_256/<name>`` and label < num_class."""
        if self._val is None:
            self._val = [(f"{VAL_DIR}/{n}", y) for n, y in self._read(VAL_LIST) if y < self.num_class]
            if not self._val:
                raise BenchError(f"no WebVision val images with label < {self.num_class} in {self.root / VAL_LIST}",
                                 "check --num-class and the val list")
        return list(self._val)

    def path(self, relpath: str) -> Path:
        return self.root / relpath

    def synsets(self) -> list[str] | None:
        f = self.root / SYNSETS
        if not f.is_file():
            return None
        return [line.split()[0] for line in read_text_file(f, "WebVision synsets file").splitlines() if line.strip()]


class _BadFlags:
    """One byte per sample in shared memory: which samples are unreadable, seen by every DataLoader worker."""

    def __init__(self, n: int):
        try:
            self._buf = multiprocessing.RawArray("b", max(1, n))
        except (OSError, ImportError):  # pragma: no cover - platforms without shared memory
            self._buf = bytearray(max(1, n))

    def array(self) -> np.ndarray:
        return np.frombuffer(self._buf, dtype=np.int8)

    def __contains__(self, i: int) -> bool:
        return bool(self._buf[i])

    def add(self, i: int) -> None:
        self._buf[i] = 1


class WebVisionTrain(Dataset):
    """``(transform(img), label, index)`` over WebVision training samples; ``transform`` may return a tuple of views.

    A missing, corrupt or truncated image is replaced by the next readable sample (``index + 1``, ``+ 2``, ...) and
    counted: ``.bad`` (the set of unreadable indices) and ``.skipped`` (their number) are kept in shared memory, so
    they include what DataLoader worker processes found; one warning per bad file goes to the log. The returned label
    and index are the replacement's, so per-sample state (memory banks, pseudo-labels) stays consistent.
    """

    MAX_TRIES = 50

    def __init__(self, ds: WebVision | list[tuple[str, int]], transform: Callable | None = None, root: str | Path | None = None):
        if isinstance(ds, WebVision):
            self.root = ds.root
            self.samples = ds.train_samples()
        else:
            if root is None:
                raise ValueError("root is needed with a plain sample list")
            self.root = Path(root)
            self.samples = list(ds)
        self.transform = transform
        self.targets = [y for _, y in self.samples]
        self._bad = _BadFlags(len(self.samples))

    @property
    def bad(self) -> set[int]:
        return {int(i) for i in np.flatnonzero(self._bad.array()[: len(self.samples)])}

    @property
    def skipped(self) -> int:
        return int(self._bad.array()[: len(self.samples)].sum())

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, i: int):
        rel = self.samples[i][0]
        try:
            return load_rgb(self.root / rel)
        except Exception as e:  # web data: any decode error means "skip this file"
            if i not in self._bad:
                self._bad.add(i)
                log.warning("skipping unreadable training image %s (%s: %s); %d skipped so far",
                            self.root / rel, type(e).__name__, e, self.skipped)
            return None

    def __getitem__(self, index: int):
        n = len(self.samples)
        for step in range(min(self.MAX_TRIES, n)):
            i = (index + step) % n
            if i in self._bad:
                continue
            img = self._load(i)
            if img is None:
                continue
            x = self.transform(img) if self.transform else img
            return x, self.samples[i][1], i
        raise BenchError(f"{self.MAX_TRIES} consecutive training images from {self.root / self.samples[index][0]} "
                         "on are unreadable",
                         "run `mopro-bench data check webvision ROOT --deep` and repair the dataset")
