"""ImageNet-1k folder layout: ``<root>/{train,val}/<wnid>/*.JPEG``; class index = position in the sorted 1000 wnids.

Semi-supervised subsets use the SimCLR list format: one bare training filename per line (``n01440764_10026.JPEG``).

The dataset plug-in of kind imagenet (``LAYOUT``, registered in ``mopro_bench.data.BUILTIN_DATASETS``): the loader
(:class:`ImageNetFolder`, :func:`read_subset_file`), ``OFFICIAL_SIZES``, the ``data check`` rules, the ``data synth``
generator and its sizes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mopro_bench.data.check import CheckReport, check_files, examples
from mopro_bench.data.common import read_text_file
from mopro_bench.data.layout import DatasetLayout, SplitListing
from mopro_bench.data.synth import family_classes, family_image, kind_code, text_lines, write_file
from mopro_bench.errors import BenchError
from mopro_bench.io import atomic_write_text
from mopro_bench.resources import imagenet1k_wnids

SPLITS = ("train", "val")
OFFICIAL_SIZES = {"train": 1281167, "val": 50000}
IMAGE_EXTS = (".jpeg", ".jpg", ".png")


def imagenet_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(imagenet1k_wnids())}


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))


def read_subset_file(path: str | Path) -> list[str]:
    """A SimCLR-format subset list: bare file names, one per line (blank lines and ``#`` comments ignored)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BenchError(f"subset file {path} does not exist",
                         "pass a SimCLR-format list (one file name such as n01440764_10026.JPEG per line)")
    names = []
    first: dict[str, int] = {}
    for ln, line in enumerate(read_text_file(path, "subset file").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name = line.split()[0]
        if "/" in name or "_" not in name:
            raise BenchError(f"{path}:{ln}: {name!r} is not a training file name like n01440764_10026.JPEG",
                             "use the SimCLR subset format: one bare file name per line")
        if name in first:
            raise BenchError(f"{path}:{ln}: {name} is already listed on line {first[name]}",
                             "list every image once (a repeated name would weigh double in training)")
        first[name] = ln
        names.append(name)
    if not names:
        raise BenchError(f"subset file {path} lists no images", "use the SimCLR subset format: one file name per line")
    return names


class ImageNetFolder:
    """``samples(split) -> [(Path, label1000)]`` (sorted by wnid then file name)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise BenchError(f"ImageNet root {self.root} does not exist",
                             "pass the folder that contains train/ and val/ with --data")
        self._memo: dict[str, list[tuple[Path, int]]] = {}

    def split_dir(self, split: str) -> Path:
        if split not in SPLITS:
            raise BenchError(f"unknown ImageNet split {split!r}", f"use one of {', '.join(SPLITS)}")
        return self.root / split

    def wnids(self, split: str) -> list[str]:
        d = self.split_dir(split)
        if not d.is_dir():
            raise BenchError(f"ImageNet {split} folder {d} is missing",
                             f"put the {split} images in {d}/<wnid>/ (val sorted into class folders, e.g. with valprep.sh)")
        index = imagenet_index()
        wnids = sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
        bad = [w for w in wnids if w not in index]
        if bad:
            raise BenchError(f"{d} has {len(bad)} folder(s) that are not ImageNet-1k wnids (first: {bad[0]})",
                             "keep only the 1000 ImageNet-1k class folders named by wnid")
        if not wnids:
            raise BenchError(f"ImageNet {split} folder {d} has no class folders",
                             f"put the {split} images in {d}/<wnid>/ (val sorted into class folders)")
        return wnids

    def samples(self, split: str) -> list[tuple[Path, int]]:
        if split not in self._memo:
            index = imagenet_index()
            d = self.split_dir(split)
            out = []
            for w in self.wnids(split):
                out.extend((p, index[w]) for p in list_images(d / w))
            if not out:
                raise BenchError(f"ImageNet {split} folder {d} has no images", f"put the {split} images in {d}/<wnid>/")
            self._memo[split] = out
        return list(self._memo[split])

    def subset(self, names: list[str] | str | Path) -> list[tuple[Path, int]]:
        """Training samples named in a SimCLR subset list (or a list of names), in the list's order."""
        if not isinstance(names, list):
            names = read_subset_file(names)
        by_name = {p.name: (p, y) for p, y in self.samples("train")}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise BenchError(f"{len(missing)} of {len(names)} subset images are not under {self.root / 'train'} "
                             f"(first: {missing[0]})", "use the subset list that matches this ImageNet copy")
        return [by_name[n] for n in names]


# --------------------------------------------------------------------------------------------------------------- check

def check_imagenet(report: CheckReport, root: Path, deep: bool) -> None:
    index = imagenet_index()
    for split in ("train", "val"):
        d = root / split
        if not d.is_dir():
            report.error(f"ImageNet {split} folder {d} is missing",
                         f"put the {split} images in {d}/<wnid>/ (val sorted into class folders, e.g. with valprep.sh)")
            continue
        loose = [p.name for p in d.iterdir() if p.is_file() and not p.name.startswith(".")]
        folders = sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
        bad = [w for w in folders if w not in index]
        if bad:
            report.error(f"{d} has {len(bad)} folder(s) that are not ImageNet-1k wnids (first: {examples(bad)})",
                         "keep only the 1000 ImageNet-1k class folders named by wnid")
        if loose:
            msg = f"{d} holds {len(loose)} image file(s) outside class folders (first: {examples(loose)})"
            if not folders:
                report.error(msg, f"sort the {split} images into {d}/<wnid>/ folders (e.g. with valprep.sh)")
            else:
                report.warn(msg + "; they are ignored")
        good = [w for w in folders if w in index]
        paths = [p for w in good for p in list_images(d / w)]
        empty = [w for w in good if not any(True for _ in list_images(d / w))]
        report.size(split, len(paths), OFFICIAL_SIZES[split])
        report.notes.append(f"{split}: {len(good)} class folders (official 1000)")
        if empty:
            report.warn(f"ImageNet {split}: {len(empty)} class folder(s) are empty (first: {examples(empty)})")
        if not paths and not bad and folders:
            report.error(f"ImageNet {split} folder {d} has no images", f"put the {split} images in {d}/<wnid>/")
        elif not folders and not loose:
            report.error(f"ImageNet {split} folder {d} has no class folders", f"put the {split} images in {d}/<wnid>/")
        if deep:
            check_files(report, f"ImageNet {split}", paths, deep, "")


# --------------------------------------------------------------------------------------------------------------- synth
SYNTH_SIZES = {
    "tiny": {"classes": 8, "train_per_class": 16, "val_per_class": 4, "image_size": 64},
    "small": {"classes": 16, "train_per_class": 50, "val_per_class": 10, "image_size": 96},
}


def synth_imagenet(root: Path, seed: int, p: dict, kind: str, out: Path) -> dict:
    wnids = family_classes(p["classes"])
    counts = {"train": 0, "val": 0}
    train_names: dict[str, list[str]] = {}
    vid = 0
    for c, w in enumerate(wnids):
        names = []
        for j in range(p["train_per_class"]):
            name = f"{w}_{10000 + 37 * j + c}.JPEG"
            write_file(root / "train" / w / name, family_image(w, p["image_size"], seed, kind, "train", c * 100000 + j))
            names.append(name)
        train_names[w] = names
        counts["train"] += len(names)
        for j in range(p["val_per_class"]):
            vid += 1
            name = f"ILSVRC2012_val_{vid:08d}.JPEG"
            write_file(root / "val" / w / name, family_image(w, p["image_size"], seed, kind, "val", c * 100000 + j))
            counts["val"] += 1
    # SimCLR-format subset lists (1% / 10% of each class, at least one image), outside the layout
    rng = np.random.default_rng(np.random.SeedSequence([seed, kind_code(kind), 2]))
    subsets = {}
    sub_dir = out.parent / f"{out.name}.subsets"
    for pct in (1, 10):
        picked = []
        for w in wnids:
            names = train_names[w]
            k = max(1, int(round(len(names) * pct / 100)))
            picked.extend(names[i] for i in sorted(rng.choice(len(names), size=k, replace=False)))
        subsets[f"{pct}percent"] = str(atomic_write_text(sub_dir / f"{pct}percent.txt", text_lines(picked)))
    index = imagenet_index()
    return {"classes": wnids, "labels": [index[w] for w in wnids], "counts": counts, "subsets": subsets}


def listing(root: Path, split: str, data: dict) -> SplitListing:
    ds = ImageNetFolder(root)
    names = [f"{w}/{p.name}" for w in ds.wnids(split) for p in list_images(ds.split_dir(split) / w)]
    return SplitListing(len(names), OFFICIAL_SIZES.get(split), names)


LAYOUT = DatasetLayout(
    kind="imagenet", description="ImageNet-1k folders ({train,val}/<wnid>/) + SimCLR subset lists", splits=SPLITS,
    official_sizes=OFFICIAL_SIZES, check=check_imagenet, synth=synth_imagenet, synth_sizes=SYNTH_SIZES, synth_code=2,
    listing=listing,
)
