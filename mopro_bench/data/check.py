"""``mopro-bench data check KIND ROOT``: is a dataset tree usable, and is it the official size?

``check(kind, root, deep=False) -> CheckReport``. Errors make the tree unusable (the CLI then exits 2 with the fix);
warnings are for a usable tree that differs from the official release (sizes, a few skipped web images).
Missing files are reported as a count plus the first few; ``deep=True`` also decodes every image.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from mopro_bench.data import KINDS
from mopro_bench.errors import BenchError

FIRST = 3  # how many example paths a message names
WEB_MISSING_TOLERANCE = 0.01  # up to 1% missing/corrupt web training images: usable (skipped), with a warning


@dataclass
class CheckReport:
    kind: str
    root: str
    counts: dict[str, int] = field(default_factory=dict)
    official: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)  # fix of each error, same order

    @property
    def ok(self) -> bool:
        return not self.errors

    def error(self, message: str, fix: str) -> None:
        self.errors.append(f"{message} -- fix: {fix}")
        self.fixes.append(fix)

    def error_from(self, e: BenchError) -> None:
        self.error(e.message, e.fix or "see `mopro-bench data check --help`")

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def size(self, split: str, found: int, official: int | None, what: str = "images") -> None:
        self.counts[split] = int(found)
        if official is not None:
            self.official[split] = int(official)
            if found != official:
                self.warn(f"{self.kind} {split} has {found} {what}, the official set has {official}: "
                          "results are not comparable to published numbers")

    def lines(self) -> list[str]:
        out = [f"{self.kind} at {self.root}"]
        for split, n in self.counts.items():
            off = self.official.get(split)
            out.append(f"  {split:<12} {n:>9}" + (f"   (official {off})" if off is not None else ""))
        out += [f"  {n}" for n in self.notes]
        out += [f"warning: {w}" for w in self.warnings]
        out += [f"error: {e}" for e in self.errors]
        if self.errors:
            out.append(f"NOT USABLE: {len(self.errors)} error(s)")
        elif self.warnings:
            out.append(f"usable, with {len(self.warnings)} warning(s)")
        else:
            out.append("ok")
        return out

    def raise_if_unusable(self) -> None:
        if self.errors:
            first = self.errors[0].split(" -- fix: ")[0]
            more = f" (and {len(self.errors) - 1} more error(s) above)" if len(self.errors) > 1 else ""
            raise BenchError(f"{self.kind} dataset at {self.root} is not usable: {first}{more}", self.fixes[0])


def _examples(items: Sequence) -> str:
    shown = ", ".join(str(x) for x in items[:FIRST])
    return shown + (", ..." if len(items) > FIRST else "")


def _decode(path: Path) -> str | None:
    try:
        with Image.open(path) as im:
            im.load()
        return None
    except Exception as e:  # any decode failure
        return f"{type(e).__name__}: {e}"


def unreadable(paths: Iterable[Path], workers: int = 8) -> list[tuple[Path, str]]:
    """Paths (that exist) whose image does not decode, with the reason."""
    paths = [p for p in paths if p.is_file()]
    with ThreadPoolExecutor(max_workers=workers) as ex:
        reasons = list(ex.map(_decode, paths, chunksize=64))
    return [(p, r) for p, r in zip(paths, reasons) if r is not None]


def _files(report: CheckReport, what: str, paths: list[Path], deep: bool, fix_missing: str,
           tolerate: float = 0.0) -> None:
    """Missing files and (deep) unreadable images among ``paths``; a fraction <= ``tolerate`` is only a warning."""
    if not paths:
        return
    missing = [p for p in paths if not p.is_file()]
    if missing:
        msg = f"{len(missing)} of {len(paths)} {what} images are missing (first: {_examples(missing)})"
        if len(missing) <= tolerate * len(paths):
            report.warn(msg + "; training skips them")
        else:
            report.error(msg, fix_missing)
    if deep:
        bad = unreadable(paths)
        if bad:
            msg = f"{len(bad)} of {len(paths)} {what} images cannot be decoded (first: {bad[0][0]}: {bad[0][1]})"
            if len(missing) + len(bad) <= tolerate * len(paths):
                report.warn(msg + "; training skips them")
            else:
                report.error(msg, "replace the unreadable files with good copies from the original archive")
        report.notes.append(f"decoded every {what} image: {len(paths) - len(missing) - len(bad)} ok")


def _read(report: CheckReport, path: Path, what: str) -> str | None:
    """A list file's text, or None after reporting why it cannot be read (not UTF-8, unreadable)."""
    from mopro_bench.data.common import read_text_file

    try:
        return read_text_file(path, what)
    except BenchError as e:
        report.error_from(e)
        return None


def _list_problems(report: CheckReport, path: Path, bad: list[tuple[int, str, str]], fix: str) -> None:
    if bad:
        ln, line, reason = bad[0]
        more = f" ({len(bad)} bad lines)" if len(bad) > 1 else ""
        report.error(f"{path}:{ln}: {reason}: {line!r}{more}", fix)


# ---------------------------------------------------------------------------------------------------------------- kinds
def _check_voc07(report: CheckReport, root: Path, deep: bool) -> None:
    from mopro_bench.data.voc import OFFICIAL_SIZES, TARS, VOC_CLASSES, find_voc2007

    try:
        voc = find_voc2007(root)
    except BenchError as e:
        report.error_from(e)
        return
    from mopro_bench.data.voc import parse_class_lines, parse_ids

    main = voc / "ImageSets" / "Main"
    tar = TARS
    split_ids: dict[str, set[str]] = {}
    for split in ("trainval", "test"):
        f = main / f"{split}.txt"
        fix = f"extract {tar[split]} into {root}"
        if not f.is_file():
            report.error(f"VOC07 split file {f} is missing", fix)
            continue
        text = _read(report, f, "VOC07 split file")
        if text is None:
            continue
        ids, bad_ids = parse_ids(text)
        _list_problems(report, f, bad_ids, f"restore {f.name} from {tar[split]}")
        id_set = split_ids[split] = set(ids)
        both = id_set & split_ids.get("trainval", set()) if split == "test" else set()
        if both:
            report.error(f"VOC07: {len(both)} image id(s) are in both trainval.txt and test.txt (first: {min(both)})",
                         "restore ImageSets/Main from the VOC2007 tars")
        report.size(split, len(ids), OFFICIAL_SIZES[split])
        if not ids:
            report.error(f"VOC07 split file {f} lists no images", fix)
            continue
        missing_cls = [c for c in VOC_CLASSES if not (main / f"{c}_{split}.txt").is_file()]
        if missing_cls:
            report.error(f"{len(missing_cls)} of 20 VOC07 class files for {split} are missing "
                         f"(first: {_examples([f'{c}_{split}.txt' for c in missing_cls])})", fix)
        no_pos = []
        for c in VOC_CLASSES:
            cf = main / f"{c}_{split}.txt"
            if not cf.is_file():
                continue
            text = _read(report, cf, "VOC07 class file")
            if text is None:
                continue
            labels, bad = parse_class_lines(text, id_set, f.name)
            _list_problems(report, cf, bad, f"restore {cf.name} from {tar[split]}")
            if not bad and len(labels) != len(id_set):
                report.error(f"{cf}: {len(id_set) - len(labels)} of the {len(id_set)} {split} ids have no label",
                             f"restore {cf.name} from {tar[split]}")
            if not any(y == 1 for y in labels.values()):
                no_pos.append(c)
        if no_pos:
            report.warn(f"VOC07 {split}: {len(no_pos)} class(es) have no positive image (first: {_examples(no_pos)})")
        _files(report, f"VOC07 {split}", [voc / "JPEGImages" / f"{i}.jpg" for i in ids], deep, fix)


def _check_places205(report: CheckReport, root: Path, deep: bool) -> None:
    from mopro_bench.data.places import IMAGE_DIR, NUM_CLASSES, OFFICIAL_SIZES, SPLIT_DIR, parse_list_lines

    for split in ("train", "val"):
        f = root / SPLIT_DIR / f"{split}_places205.csv"
        if not f.is_file():
            report.error(f"Places205 split file {f} is missing", f"extract trainvalsplit_places205.tar.gz into {root}")
            continue
        text = _read(report, f, f"Places205 {split} list")
        if text is None:
            continue
        samples, bad = parse_list_lines(text, NUM_CLASSES)
        report.size(split, len(samples) + len(bad), OFFICIAL_SIZES[split])
        _list_problems(report, f, bad, "restore the file from trainvalsplit_places205.tar.gz")
        if not samples and not bad:
            report.error(f"Places205 {split} list {f} lists no images", "restore the file from trainvalsplit_places205.tar.gz")
        classes = {y for _, y in samples}
        if samples and len(classes) != NUM_CLASSES:
            report.warn(f"Places205 {split} covers {len(classes)} of {NUM_CLASSES} classes")
        _files(report, f"Places205 {split}", [root / IMAGE_DIR / r for r, _ in samples], deep,
               f"extract imagesPlaces205_resize.tar.gz into {root}")


def _check_imagenet(report: CheckReport, root: Path, deep: bool) -> None:
    from mopro_bench.data.imagenet import OFFICIAL_SIZES, imagenet_index, list_images

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
            report.error(f"{d} has {len(bad)} folder(s) that are not ImageNet-1k wnids (first: {_examples(bad)})",
                         "keep only the 1000 ImageNet-1k class folders named by wnid")
        if loose:
            msg = f"{d} holds {len(loose)} image file(s) outside class folders (first: {_examples(loose)})"
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
            report.warn(f"ImageNet {split}: {len(empty)} class folder(s) are empty (first: {_examples(empty)})")
        if not paths and not bad and folders:
            report.error(f"ImageNet {split} folder {d} has no images", f"put the {split} images in {d}/<wnid>/")
        elif not folders and not loose:
            report.error(f"ImageNet {split} folder {d} has no class folders", f"put the {split} images in {d}/<wnid>/")
        if deep:
            _files(report, f"ImageNet {split}", paths, deep, "")


def _check_imagenet_ra(report: CheckReport, root: Path, deep: bool) -> None:
    from mopro_bench.data.imagenet import list_images
    from mopro_bench.data.imagenet_ra import OFFICIAL_SIZES, kind_wnids

    if not root.is_dir():
        report.error(f"{report.kind} root {root} does not exist", f"pass the extracted {report.kind} folder with --data")
        return
    allowed = set(kind_wnids(report.kind))
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    bad = [w for w in folders if w not in allowed]
    if bad:
        report.error(f"{root} has {len(bad)} folder(s) that are not {report.kind} wnids (first: {_examples(bad)})",
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
        _files(report, report.kind, paths, deep, "")


def _check_webvision(report: CheckReport, root: Path, deep: bool) -> None:
    from mopro_bench.data.places import parse_list_lines
    from mopro_bench.data.webvision import MAX_CLASSES, OFFICIAL_SIZES, SYNSETS, TRAIN_LISTS, VAL_DIR, VAL_LIST

    fix = (f"extract the WebVision info/ folder (train_filelist_google.txt, train_filelist_flickr.txt, val_filelist.txt) "
           f"into {root}")
    n_classes = MAX_CLASSES
    syn = root / SYNSETS
    if syn.is_file():
        text = _read(report, syn, "WebVision synsets file")
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
            text = _read(report, f, f"WebVision {f.name}")
            if text is None:
                continue
            # training lists of web data may repeat an entry (it only weighs double): a warning; val may not
            samples, bad = parse_list_lines(text, n_classes, duplicates_ok=split == "train")
            _list_problems(report, f, bad, f"restore {f.name} from the WebVision info archive")
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
    _files(report, "WebVision train", [root / r for r, _ in lists["train"]], deep,
           f"extract the WebVision training archives into {root} (paths in the lists are relative to it)",
           tolerate=WEB_MISSING_TOLERANCE)
    _files(report, "WebVision val", [root / VAL_DIR / r for r, _ in lists["val"]], deep,
           f"extract val_images_256.tar into {root}")


def _check_coco(report: CheckReport, root: Path, deep: bool) -> None:
    from mopro_bench.data.coco import OFFICIAL_SIZES, coco_files, image_problems
    from mopro_bench.data.common import outside_root

    files = coco_files(root, check=False)
    for split in ("train", "val"):
        jf, imd = files[f"{split}_json"], files[f"{split}_images"]
        if not jf.is_file():
            report.error(f"COCO annotation file {jf} is missing", f"extract annotations_trainval2017.zip into {root}")
            continue
        text = _read(report, jf, "COCO annotation file")
        if text is None:
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            report.error(f"COCO annotation file {jf} is not valid JSON ({e})", "re-extract annotations_trainval2017.zip")
            continue
        if not isinstance(obj, dict):
            report.error(f"COCO annotation file {jf} is not a JSON object", "re-extract annotations_trainval2017.zip")
            continue
        miss = [k for k in ("images", "annotations", "categories") if not isinstance(obj.get(k), list)]
        if miss:
            report.error(f"COCO annotation file {jf} has no '{miss[0]}' list", "re-extract annotations_trainval2017.zip")
            continue
        images, anns, cats = obj["images"], obj["annotations"], obj["categories"]
        report.size(split, len(images), OFFICIAL_SIZES[split])
        report.notes.append(f"{split}: {len(anns)} instances, {len(cats)} categories")
        if not images:
            report.error(f"COCO annotation file {jf} lists no images", "re-extract annotations_trainval2017.zip")
        bad_images = image_problems(images)
        if bad_images:
            report.error(f"{jf}: {len(bad_images)} bad image entr{'y' if len(bad_images) == 1 else 'ies'} "
                         f"(first: {bad_images[0]})", "re-extract annotations_trainval2017.zip")
        images = [im for im in images if isinstance(im, dict)]
        image_ids = {im.get("id") for im in images}
        cat_ids = {c.get("id") for c in cats}
        bad = []
        for a in anns:
            b = a.get("bbox")
            if a.get("image_id") not in image_ids:
                bad.append(f"annotation {a.get('id')}: unknown image_id {a.get('image_id')}")
            elif a.get("category_id") not in cat_ids:
                bad.append(f"annotation {a.get('id')}: unknown category_id {a.get('category_id')}")
            elif not (isinstance(b, list) and len(b) == 4 and b[2] >= 0 and b[3] >= 0):
                bad.append(f"annotation {a.get('id')}: bbox {b} is not [x, y, w, h]")
            elif not a.get("iscrowd", 0) and isinstance(a.get("segmentation"), list) and any(
                    len(poly) < 6 or len(poly) % 2 for poly in a["segmentation"]):
                bad.append(f"annotation {a.get('id')}: a segmentation polygon has fewer than 3 points")
        if bad:
            report.error(f"{jf}: {len(bad)} bad annotation(s) (first: {bad[0]})", "re-extract annotations_trainval2017.zip")
        no_size = [im.get("id") for im in images if not im.get("width") or not im.get("height") or not im.get("file_name")]
        if no_size:
            report.error(f"{jf}: {len(no_size)} image entries lack file_name/width/height (first id: {no_size[0]})",
                         "re-extract annotations_trainval2017.zip")
        if not imd.is_dir():
            report.error(f"COCO image folder {imd} is missing", f"extract {imd.name}.zip into {root}")
            continue
        _files(report, f"COCO {split}2017", [imd / im["file_name"] for im in images
                                                    if isinstance(im.get("file_name"), str) and im["file_name"]
                                                    and not outside_root(im["file_name"])], deep,
               f"extract {imd.name}.zip into {root}")


_CHECKS = {"voc07": _check_voc07, "places205": _check_places205, "imagenet": _check_imagenet,
           "imagenet-r": _check_imagenet_ra, "imagenet-a": _check_imagenet_ra, "webvision": _check_webvision,
           "coco": _check_coco}


def check(kind: str, root: str | Path, deep: bool = False) -> CheckReport:
    """Check the layout of a ``kind`` dataset at ``root``; never raises for a problem of the data (see ``.errors``)."""
    if kind not in _CHECKS:
        raise BenchError(f"unknown dataset kind {kind!r}", f"use one of {', '.join(KINDS)}")
    root = Path(root).expanduser()
    report = CheckReport(kind=kind, root=str(root))
    if not root.is_dir():
        report.error(f"dataset root {root} does not exist", "pass the folder that holds the dataset")
        return report
    _CHECKS[kind](report, root, deep)
    return report
