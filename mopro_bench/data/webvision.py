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

The dataset plug-in of kind webvision (``LAYOUT``, registered in ``mopro_bench.data.BUILTIN_DATASETS``): the loader
(:class:`WebVision`, :class:`WebVisionTrain`), ``OFFICIAL_SIZES``, the ``data check`` rules, the ``data synth``
generator and its sizes.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from mopro_bench.data import render
from mopro_bench.data.check import CheckReport, check_files, list_problems, read_text
from mopro_bench.data.common import load_rgb, outside_root, read_text_file
from mopro_bench.data.imagenet import imagenet_index
from mopro_bench.data.layout import DatasetLayout, SplitListing
from mopro_bench.data.places import parse_list_lines, read_list_file
from mopro_bench.data.synth import family_classes, family_image, family_wnids, kind_code, text_lines, truth_path, write_file
from mopro_bench.errors import BenchError
from mopro_bench.io import atomic_write_json
from mopro_bench.resources import imagenet1k_wnids

log = logging.getLogger(__name__)

TRAIN_LISTS = ("info/train_filelist_google.txt", "info/train_filelist_flickr.txt")
VAL_LIST = "info/val_filelist.txt"
VAL_DIR = "val_images_256"
SYNSETS = "info/synsets.txt"
MAX_CLASSES = 5000
WEB_MISSING_TOLERANCE = 0.01  # up to 1% missing/corrupt web training images: usable (skipped), with a warning
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


# --------------------------------------------------------------------------------------------------------------- check

def check_webvision(report: CheckReport, root: Path, deep: bool) -> None:
    fix = (f"extract the WebVision info/ folder (train_filelist_google.txt, train_filelist_flickr.txt, val_filelist.txt) "
           f"into {root}")
    n_classes = MAX_CLASSES
    syn = root / SYNSETS
    if syn.is_file():
        text = read_text(report, syn, "WebVision synsets file")
        if text is not None:
            n_classes = sum(1 for line in text.splitlines() if line.strip())
            report.notes.append(f"{SYNSETS}: {n_classes} classes")
    lists: dict[str, list[tuple[str, int]]] = {"train": [], "val": []}
    for split, rels in (("train", TRAIN_LISTS), ("val", (VAL_LIST,))):
        for rel in rels:
            f = root / rel
            if not f.is_file():
                report.error(f"WebVision list {f} is missing", fix)
                continue
            text = read_text(report, f, f"WebVision {f.name}")
            if text is None:
                continue
            # training lists of web data may repeat an entry (it only weighs double): a warning; val may not
            samples, bad = parse_list_lines(text, n_classes, duplicates_ok=split == "train")
            list_problems(report, f, bad, f"restore {f.name} from the WebVision info archive")
            if split == "train" and len(samples) != len(set(samples)):
                report.warn(f"{f}: {len(samples) - len(set(samples))} line(s) repeat an earlier entry; training uses "
                            "those images more often")
            lists[split] += samples
    labels = [y for s in lists.values() for _, y in s]
    version = 5000 if labels and max(labels) >= 1000 else 1000
    report.notes.append(f"label range {min(labels, default=0)}..{max(labels, default=0)}: "
                        f"WebVision {'2.0 (5000 classes)' if version == 5000 else '1.0 (1000 classes)'}")
    for split in ("train", "val"):
        report.size(split, len(lists[split]), OFFICIAL_SIZES[version][split])
        listed = [root / r for r in (TRAIN_LISTS if split == "train" else (VAL_LIST,))]
        if not lists[split] and all(p.is_file() for p in listed) and not report.errors:
            report.error(f"the WebVision {split} list(s) list no images", fix)
    check_files(report, "WebVision train", [root / r for r, _ in lists["train"]], deep,
                f"extract the WebVision training archives into {root} (paths in the lists are relative to it)",
                tolerate=WEB_MISSING_TOLERANCE)
    check_files(report, "WebVision val", [root / VAL_DIR / r for r, _ in lists["val"]], deep,
                f"extract val_images_256.tar into {root}")


# --------------------------------------------------------------------------------------------------------------- synth
SYNTH_SIZES = {
    "tiny": {"classes": 8, "train_per_class": 16, "val_per_class": 4, "image_size": 64,
             "noise": 0.3, "ood": 0.1, "corrupt": 0},
    "small": {"classes": 16, "train_per_class": 60, "val_per_class": 10, "image_size": 96,
              "noise": 0.3, "ood": 0.1, "corrupt": 0},
}


def _synth_validate(p: dict) -> None:
    if p["noise"] + p["ood"] >= 1.0:
        raise BenchError(f"noise={p['noise']} + ood={p['ood']} leaves no clean images", "keep noise + ood below 1")


def synth_webvision(root: Path, seed: int, p: dict, kind: str, out: Path) -> dict:
    wnids = family_classes(p["classes"])
    index = imagenet_index()
    labels = [index[w] for w in wnids]
    n_cls, size = len(wnids), p["image_size"]
    n_train = n_cls * p["train_per_class"]
    rng = np.random.default_rng(np.random.SeedSequence([seed, kind_code(kind), 1]))
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
        irng = render.image_rng(seed, kind_code(kind), "train", i)
        if kinds[i] == "ood":
            img = render.ood_image(size, irng)
        else:
            img = render.object_image(render.family_look(family_wnids().index(wnids[true_pos[i]])), size, irng)
        write_file(root / rel, render.jpeg_bytes(img))
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
            write_file(root / "val_images_256" / name, family_image(w, size, seed, kind, "val", c * 100000 + j))
            val_rows.append(f"{name} {labels[c]}")
    info = root / "info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "train_filelist_google.txt").write_text(text_lines(rows["google"]))
    (info / "train_filelist_flickr.txt").write_text(text_lines(rows["flickr"]))
    (info / "val_filelist.txt").write_text(text_lines(val_rows))
    (info / "synsets.txt").write_text(text_lines([f"{w} synthetic class {i}" for i, w in enumerate(imagenet1k_wnids())]))
    tp = truth_path(out)
    atomic_write_json(tp, {
        "kind": "webvision", "seed": seed, "noise": p["noise"], "ood": p["ood"], "classes": wnids, "labels": labels,
        "counts": {k: int((kinds == k).sum()) for k in ("clean", "flip", "ood")},
        "corrupt": corrupt, "train": truth,
    })
    return {"classes": wnids, "labels": labels, "truth": str(tp),
            "counts": {"train": n_train, "val": len(val_rows), "flip": int((kinds == "flip").sum()),
                       "ood": int((kinds == "ood").sum()), "corrupt": len(corrupt)}}


def listing(root: Path, split: str, data: dict) -> SplitListing:
    """The samples of ``split`` with label < ``data["num_class"]`` (default 1000); official sizes of that version."""
    num_class = int(data.get("num_class") or 1000)
    ds = WebVision(root, num_class=num_class)
    samples = ds.val_samples() if split == "val" else ds.train_samples()
    return SplitListing(len(samples), (OFFICIAL_SIZES.get(num_class) or {}).get(split), [f"{r} {y}" for r, y in samples])


LAYOUT = DatasetLayout(
    kind="webvision", description="WebVision 1.0 / 2.0 (info/ lists, google/ flickr/ val_images_256/)",
    splits=("train", "val"), official_sizes=OFFICIAL_SIZES[1000], check=check_webvision, synth=synth_webvision,
    synth_sizes=SYNTH_SIZES, synth_code=1, listing=listing, synth_validate=_synth_validate,
)
