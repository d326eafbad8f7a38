"""ImageNet-R / ImageNet-A layout: ``<root>/<wnid>/*`` for the 200 wnids of each set, labels in the 1000-class space.

The dataset plug-in of kind imagenet-r and imagenet-a (``IMAGENET_R`` / ``IMAGENET_A``, registered in
``mopro_bench.data.BUILTIN_DATASETS``): the loader (:class:`ImageNetRA`), ``OFFICIAL_SIZES``, the ``data check``
rules, the ``data synth`` generator and its sizes.
"""

from __future__ import annotations

import functools
from pathlib import Path

from mopro_bench.data.check import CheckReport, check_files, examples
from mopro_bench.data.imagenet import imagenet_index, list_images
from mopro_bench.data.layout import DatasetLayout, SplitListing
from mopro_bench.data.synth import family_classes, family_image, write_file
from mopro_bench.errors import BenchError
from mopro_bench.resources import imagenet_a_wnids, imagenet_r_wnids

KINDS = ("imagenet-r", "imagenet-a")
OFFICIAL_SIZES = {"imagenet-r": 30000, "imagenet-a": 7500}
_ALIASES = {"r": "imagenet-r", "a": "imagenet-a", "imagenet_r": "imagenet-r", "imagenet_a": "imagenet-a",
            "imagenet-r": "imagenet-r", "imagenet-a": "imagenet-a"}


def normalize_kind(kind: str) -> str:
    k = _ALIASES.get(str(kind).lower())
    if k is None:
        raise BenchError(f"unknown ImageNet variant {kind!r}", "use imagenet-r or imagenet-a")
    return k


def kind_wnids(kind: str) -> tuple[str, ...]:
    return imagenet_r_wnids() if normalize_kind(kind) == "imagenet-r" else imagenet_a_wnids()


class ImageNetRA:
    """``samples() -> [(Path, label1000)]``; ``.wnids`` = the set's 200 wnids (official order), ``.indices`` = their
    ImageNet-1k indices (to restrict a 1000-way classifier), ``.present_wnids`` = class folders found."""

    def __init__(self, root: str | Path, kind: str):
        self.kind = normalize_kind(kind)
        self.root = Path(root).expanduser()
        self.wnids = list(kind_wnids(self.kind))
        index = imagenet_index()
        self.indices = [index[w] for w in self.wnids]
        if not self.root.is_dir():
            raise BenchError(f"{self.kind} root {self.root} does not exist", f"pass the extracted {self.kind} folder with --data")
        self._samples: list[tuple[Path, int]] | None = None

    @property
    def present_wnids(self) -> list[str]:
        allowed = set(self.wnids)
        found = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        bad = [w for w in found if w not in allowed]
        if bad:
            raise BenchError(f"{self.root} has {len(bad)} folder(s) that are not {self.kind} wnids (first: {bad[0]})",
                             f"pass the extracted {self.kind} folder (200 <wnid>/ folders) with --data")
        if not found:
            raise BenchError(f"{self.root} has no <wnid>/ class folders", f"pass the extracted {self.kind} folder with --data")
        return found

    def samples(self) -> list[tuple[Path, int]]:
        if self._samples is None:
            index = imagenet_index()
            out = []
            for w in self.present_wnids:
                out.extend((p, index[w]) for p in list_images(self.root / w))
            if not out:
                raise BenchError(f"{self.kind} folder {self.root} has no images in its <wnid>/ folders",
                                 f"pass the extracted {self.kind} folder with --data")
            self._samples = out
        return list(self._samples)


# --------------------------------------------------------------------------------------------------------------- check

def check_imagenet_ra(report: CheckReport, root: Path, deep: bool) -> None:
    if not root.is_dir():
        report.error(f"{report.kind} root {root} does not exist", f"pass the extracted {report.kind} folder with --data")
        return
    allowed = set(kind_wnids(report.kind))
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    bad = [w for w in folders if w not in allowed]
    if bad:
        report.error(f"{root} has {len(bad)} folder(s) that are not {report.kind} wnids (first: {examples(bad)})",
                     f"pass the extracted {report.kind} folder (its 200 <wnid>/ folders) with --data")
    good = [w for w in folders if w in allowed]
    if not folders:
        report.error(f"{root} has no <wnid>/ class folders", f"pass the extracted {report.kind} folder with --data")
    paths = [p for w in good for p in list_images(root / w)]
    report.size("test", len(paths), OFFICIAL_SIZES[report.kind])
    if good and not paths:
        report.error(f"{report.kind} folder {root} has no images in its <wnid>/ folders",
                     f"pass the extracted {report.kind} folder with --data")
    report.notes.append(f"{len(good)} class folders (official 200)")
    if deep:
        check_files(report, report.kind, paths, deep, "")


# --------------------------------------------------------------------------------------------------------------- synth
SYNTH_SIZES = {
    "imagenet-r": {
        "tiny": {"classes": 8, "per_class": 4, "image_size": 64},
        "small": {"classes": 16, "per_class": 10, "image_size": 96},
    },
    "imagenet-a": {
        "tiny": {"classes": 8, "per_class": 4, "image_size": 64},
        "small": {"classes": 16, "per_class": 10, "image_size": 96},
    },
}


def synth_imagenet_ra(root: Path, seed: int, p: dict, kind: str, out: Path) -> dict:
    wnids = family_classes(p["classes"])
    style = "rendition" if kind == "imagenet-r" else "adversarial"
    n = 0
    for c, w in enumerate(wnids):
        for j in range(p["per_class"]):
            name = f"{style[:3]}_{j:04d}.jpg" if kind == "imagenet-r" else f"{j:07d}.jpg"
            write_file(root / w / name, family_image(w, p["image_size"], seed, kind, "test", c * 100000 + j, style=style))
            n += 1
    index = imagenet_index()
    return {"classes": wnids, "labels": [index[w] for w in wnids], "counts": {"test": n}}


def listing(root: Path, split: str, data: dict, *, kind: str) -> SplitListing:
    samples = ImageNetRA(root, kind).samples()
    return SplitListing(len(samples), OFFICIAL_SIZES.get(kind), [f"{p.parent.name}/{p.name} {y}" for p, y in samples])


def _layout(kind: str, code: int, name: str) -> DatasetLayout:
    return DatasetLayout(
        kind=kind, description=f"{name} (<wnid>/ folders of its 200 classes, ImageNet-1k labels)",
        splits=("test",), official_sizes={"test": OFFICIAL_SIZES[kind]}, check=check_imagenet_ra, synth=synth_imagenet_ra,
        synth_sizes=SYNTH_SIZES[kind], synth_code=code, listing=functools.partial(listing, kind=kind),
    )


IMAGENET_R = _layout("imagenet-r", 6, "ImageNet-R")
IMAGENET_A = _layout("imagenet-a", 7, "ImageNet-A")
