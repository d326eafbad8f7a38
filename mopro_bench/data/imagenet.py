"""ImageNet-1k folder layout: ``<root>/{train,val}/<wnid>/*.JPEG``; class index = position in the sorted 1000 wnids.

Semi-supervised subsets use the SimCLR list format: one bare training filename per line (``n01440764_10026.JPEG``).
"""

from __future__ import annotations

from pathlib import Path

from mopro_bench.data.common import read_text_file
from mopro_bench.errors import BenchError
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
