"""ImageNet-R / ImageNet-A layout: ``<root>/<wnid>/*`` for the 200 wnids of each set, labels in the 1000-class space."""

from __future__ import annotations

from pathlib import Path

from mopro_bench.data.imagenet import imagenet_index, list_images
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
