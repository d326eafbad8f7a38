"""``mopro-bench data check KIND ROOT``: is a dataset tree usable, and is it the official size?

``check(kind, root, deep=False) -> CheckReport`` runs the layout's own check (``DatasetLayout.check`` in its module);
this module keeps the shared machinery: the report and the helpers layout checks use (``check_files``, ``read_text``,
``list_problems``, ``examples``). Errors make the tree unusable (the CLI then exits 2 with the fix);
warnings are for a usable tree that differs from the official release (sizes, a few skipped web images).
Missing files are reported as a count plus the first few; ``deep=True`` also decodes every image.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from mopro_bench.data import DATASETS, KINDS
from mopro_bench.errors import BenchError

FIRST = 3  # how many example paths a message names


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


def examples(items: Sequence) -> str:
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


def check_files(report: CheckReport, what: str, paths: list[Path], deep: bool, fix_missing: str,
                tolerate: float = 0.0) -> None:
    """Missing files and (deep) unreadable images among ``paths``; a fraction <= ``tolerate`` is only a warning."""
    if not paths:
        return
    missing = [p for p in paths if not p.is_file()]
    if missing:
        msg = f"{len(missing)} of {len(paths)} {what} images are missing (first: {examples(missing)})"
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


def read_text(report: CheckReport, path: Path, what: str) -> str | None:
    """A list file's text, or None after reporting why it cannot be read (not UTF-8, unreadable)."""
    from mopro_bench.data.common import read_text_file

    try:
        return read_text_file(path, what)
    except BenchError as e:
        report.error_from(e)
        return None


def list_problems(report: CheckReport, path: Path, bad: list[tuple[int, str, str]], fix: str) -> None:
    if bad:
        ln, line, reason = bad[0]
        more = f" ({len(bad)} bad lines)" if len(bad) > 1 else ""
        report.error(f"{path}:{ln}: {reason}: {line!r}{more}", fix)


# --------------------------------------------------------------------------------------------------------------- driver
def check(kind: str, root: str | Path, deep: bool = False) -> CheckReport:
    """Check the layout of a ``kind`` dataset at ``root``; never raises for a problem of the data (see ``.errors``).
    The per-layout checks live in the layout modules (``DatasetLayout.check``)."""
    if kind not in DATASETS:
        raise BenchError(f"unknown dataset kind {kind!r}", f"use one of {', '.join(KINDS)}")
    layout = DATASETS.get(kind)
    root = Path(root).expanduser()
    report = CheckReport(kind=kind, root=str(root))
    if not root.is_dir():
        report.error(f"dataset root {root} does not exist", "pass the folder that holds the dataset")
        return report
    layout.check(report, root, deep)
    return report
