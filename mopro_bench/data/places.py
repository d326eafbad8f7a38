"""Places205 layout.

    <root>/trainvalsplit_places205/{train,val}_places205.csv      "<relpath> <label>" (space-separated), labels 0..204
    <root>/data/vision/torralba/deeplearning/images256/<relpath>  e.g. a/abbey/00000001.jpg
"""

from __future__ import annotations

from pathlib import Path

from mopro_bench.data.common import outside_root, read_text_file
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
