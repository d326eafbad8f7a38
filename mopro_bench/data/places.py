"""Places205 layout.

    <root>/trainvalsplit_places205/{train,val}_places205.csv      "<relpath> <label>" (space-separated), labels 0..204
    <root>/data/vision/torralba/deeplearning/images256/<relpath>  e.g. a/abbey/00000001.jpg

The dataset plug-in of kind places205 (``LAYOUT``, registered in ``mopro_bench.data.BUILTIN_DATASETS``): the loader
(:class:`Places205`), ``OFFICIAL_SIZES``, the ``data check`` rules, the ``data synth`` generator and its sizes.
"""

from __future__ import annotations

from pathlib import Path

from mopro_bench.data import render
from mopro_bench.data.check import CheckReport, check_files, list_problems, read_text
from mopro_bench.data.common import outside_root, read_text_file
from mopro_bench.data.layout import DatasetLayout, SplitListing
from mopro_bench.data.synth import kind_code, text_lines, write_file
from mopro_bench.errors import BenchError

NUM_CLASSES = 205
SPLITS = ("train", "val")
SPLIT_DIR = "trainvalsplit_places205"
IMAGE_DIR = "data/vision/torralba/deeplearning/images256"
OFFICIAL_SIZES = {"train": 2448873, "val": 20500}


def parse_list_lines(text: str, num_classes: int | None = None,
                     duplicates_ok: bool = False) -> tuple[list[tuple[str, int]], list[tuple[int, str, str]]]:
    """Parse ``<relpath> <label>`` lines (the label is the last field, so relpaths may hold spaces).

    Returns ``(samples, problems)`` with ``problems = [(line_number, line, reason)]`` for malformed lines, labels
    outside ``0..num_classes-1``, entries outside the dataset root (absolute or with ``..``), an image listed again
    with another label (contradictory) and -- unless ``duplicates_ok`` -- an image listed again with the same label
    (it would weigh double in every metric)."""
    out: list[tuple[str, int]] = []
    bad: list[tuple[int, str, str]] = []
    first: dict[str, tuple[int, int]] = {}  # relpath -> (line number, label)
    for ln, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        rel, _, lab = line.rpartition(" ")
        rel = rel.strip()
        try:
            label = int(lab)
        except ValueError:
            label = None
        if not rel or label is None:
            bad.append((ln, line, "expected '<relpath> <label>'"))
        elif label < 0 or (num_classes is not None and label >= num_classes):
            hi = f"0..{num_classes - 1}" if num_classes is not None else ">= 0"
            bad.append((ln, line, f"label {label} is out of range {hi}"))
        elif outside_root(rel):
            bad.append((ln, line, f"the path {outside_root(rel)}"))
        elif rel in first and first[rel][1] != label:
            bad.append((ln, line, f"contradictory labels: line {first[rel][0]} gives {rel} label {first[rel][1]}"))
        elif rel in first and not duplicates_ok:
            bad.append((ln, line, f"duplicated: {rel} is already listed on line {first[rel][0]}"))
        else:
            first.setdefault(rel, (ln, label))
            out.append((rel, label))
    return out, bad


def read_list_file(path: Path, what: str, num_classes: int | None = None, *, allow_empty: bool = False,
                   duplicates_ok: bool = False) -> list[tuple[str, int]]:
    """``<relpath> <label>`` lines; the first problem (see :func:`parse_list_lines`), a file that is not UTF-8 or
    (unless ``allow_empty``) one that lists no image is a :class:`BenchError`."""
    samples, bad = parse_list_lines(read_text_file(path, f"{what} list"), num_classes, duplicates_ok)
    if bad:
        ln, line, reason = bad[0]
        more = f" ({len(bad)} bad lines)" if len(bad) > 1 else ""
        raise BenchError(f"{path}:{ln}: {reason}: {line!r}{more}", f"restore the {what} list file")
    if not samples and not allow_empty:
        raise BenchError(f"{what} list {path} lists no images", f"restore the {what} list file")
    return samples


class Places205:
    """``samples(split) -> [(relpath, label)]`` from the official csv split files; ``image_path(relpath)``."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise BenchError(f"Places205 root {self.root} does not exist",
                             f"pass the folder that contains {SPLIT_DIR}/ and data/ with --data")
        self.images = self.root / IMAGE_DIR
        self._memo: dict[str, list[tuple[str, int]]] = {}

    def split_file(self, split: str) -> Path:
        if split not in SPLITS:
            raise BenchError(f"unknown Places205 split {split!r}", f"use one of {', '.join(SPLITS)}")
        return self.root / SPLIT_DIR / f"{split}_places205.csv"

    def samples(self, split: str) -> list[tuple[str, int]]:
        if split not in self._memo:
            f = self.split_file(split)
            if not f.is_file():
                raise BenchError(f"Places205 split file {f} is missing",
                                 f"extract trainvalsplit_places205.tar.gz into {self.root}")
            self._memo[split] = read_list_file(f, f"Places205 {split}", NUM_CLASSES)
        return list(self._memo[split])

    def image_path(self, relpath: str) -> Path:
        return self.images / relpath


# --------------------------------------------------------------------------------------------------------------- check

def check_places205(report: CheckReport, root: Path, deep: bool) -> None:
    for split in ("train", "val"):
        f = root / SPLIT_DIR / f"{split}_places205.csv"
        if not f.is_file():
            report.error(f"Places205 split file {f} is missing", f"extract trainvalsplit_places205.tar.gz into {root}")
            continue
        text = read_text(report, f, f"Places205 {split} list")
        if text is None:
            continue
        samples, bad = parse_list_lines(text, NUM_CLASSES)
        report.size(split, len(samples) + len(bad), OFFICIAL_SIZES[split])
        list_problems(report, f, bad, "restore the file from trainvalsplit_places205.tar.gz")
        if not samples and not bad:
            report.error(f"Places205 {split} list {f} lists no images", "restore the file from trainvalsplit_places205.tar.gz")
        classes = {y for _, y in samples}
        if samples and len(classes) != NUM_CLASSES:
            report.warn(f"Places205 {split} covers {len(classes)} of {NUM_CLASSES} classes")
        check_files(report, f"Places205 {split}", [root / IMAGE_DIR / r for r, _ in samples], deep,
                    f"extract imagesPlaces205_resize.tar.gz into {root}")


# --------------------------------------------------------------------------------------------------------------- synth
SYNTH_SIZES = {
    "tiny": {"train_per_class": 2, "val_per_class": 1, "image_size": 40},
    "small": {"train_per_class": 17, "val_per_class": 4, "image_size": 64},
}


def places_category(c: int) -> str:
    """Relative folder of generated Places class ``c`` (same shape as the real ``a/abbey``)."""
    return f"s/scene_{c:03d}"


def synth_places205(root: Path, seed: int, p: dict, kind: str, out: Path) -> dict:
    images = root / IMAGE_DIR
    rows: dict[str, list[str]] = {"train": [], "val": []}
    for c in range(NUM_CLASSES):
        look = render.places_look(c)
        k = 0
        for split in ("train", "val"):
            for j in range(p[f"{split}_per_class"]):
                k += 1
                rel = f"{places_category(c)}/{k:08d}.jpg"
                irng = render.image_rng(seed, kind_code(kind), split, c * 100000 + j)
                write_file(images / rel, render.jpeg_bytes(render.scene_image(look, p["image_size"], irng)))
                rows[split].append(f"{rel} {c}")
    for split, r in rows.items():
        (root / SPLIT_DIR).mkdir(parents=True, exist_ok=True)
        (root / SPLIT_DIR / f"{split}_places205.csv").write_text(text_lines(r))
    return {"counts": {s: len(r) for s, r in rows.items()}, "classes": NUM_CLASSES}


def listing(root: Path, split: str, data: dict) -> SplitListing:
    samples = Places205(root).samples(split)
    return SplitListing(len(samples), OFFICIAL_SIZES.get(split), [f"{r} {y}" for r, y in samples])


LAYOUT = DatasetLayout(
    kind="places205", description="Places205 (trainvalsplit_places205 csv lists + images256)", splits=SPLITS,
    official_sizes=OFFICIAL_SIZES, check=check_places205, synth=synth_places205, synth_sizes=SYNTH_SIZES, synth_code=4,
    listing=listing,
)
