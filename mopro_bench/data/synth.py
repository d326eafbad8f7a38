"""Generated datasets in exactly the real on-disk layouts (``mopro-bench data synth KIND OUT``).

Every image is drawn from a class *look* (see :mod:`mopro_bench.data.render`): learnable, class-dependent content at
a random pose on a random scene. Deterministic by seed: each image has its own generator seeded from
``(seed, kind, split, index)``. The tree is written into a temporary sibling folder and renamed onto ``out`` at the
end, so an interrupted run never leaves a half-written dataset behind.

The ImageNet family (``webvision``, ``imagenet``, ``imagenet-r``, ``imagenet-a``) draws its classes from the wnids in
both the ImageNet-R and ImageNet-A lists (sorted); a class looks the same in all four. Labels are ImageNet-1k indices.
Sizes per scale are each layout's ``DatasetLayout.synth_sizes``; any of them can be overridden by keyword (``classes=``,
``train_per_class=``...).

This module is the driver (parameters, temporary folder, marker) and the helpers generators share; each generator lives
in its layout's module (``DatasetLayout.synth``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from functools import cache
from pathlib import Path

from mopro_bench.data import DATASETS, KINDS, SYNTH_GENERATOR, render, synth_marker_path
from mopro_bench.errors import BenchError
from mopro_bench.io import atomic_write_json, check_writable_dir
from mopro_bench.resources import imagenet_a_wnids, imagenet_r_wnids

SCALES = ("tiny", "small")


@cache
def family_wnids() -> tuple[str, ...]:
    """The wnids generated ImageNet-family datasets draw from: in both the ImageNet-R and ImageNet-A lists, sorted."""
    return tuple(sorted(set(imagenet_r_wnids()) & set(imagenet_a_wnids())))


def family_classes(n: int) -> list[str]:
    pool = family_wnids()
    if not 1 <= n <= len(pool):
        raise BenchError(f"classes={n} is out of range", f"generated ImageNet-family sets have 1..{len(pool)} classes")
    return list(pool[:n])


def truth_path(out: str | Path) -> Path:
    """Where ``synth('webvision', out)`` keeps the noise truth: next to the layout, never inside it."""
    out = Path(out)
    return out.parent / f"{out.name}.truth.json"


def _params(kind: str, scale: str, kw: dict) -> dict:
    if kind not in DATASETS:
        raise BenchError(f"unknown dataset kind {kind!r}", f"use one of {', '.join(KINDS)}")
    if scale not in SCALES:
        raise BenchError(f"unknown scale {scale!r}", f"use one of {', '.join(SCALES)}")
    layout = DATASETS.get(kind)
    p = dict(layout.synth_sizes[scale])
    bad = sorted(set(kw) - set(p))
    if bad:
        flags = ", ".join("--" + k.replace("_", "-") for k in sorted(p))
        raise BenchError(f"synth {kind} does not take {', '.join(bad)}", f"options for {kind}: {flags}")
    for k, v in kw.items():
        if v is not None:
            p[k] = type(p[k])(v)
    for k, v in p.items():
        if k in ("noise", "ood"):
            if not 0.0 <= v < 1.0:
                raise BenchError(f"{k}={v} is out of range", f"{k} is a fraction of the training images in [0, 1)")
        elif v < 0 or (v == 0 and k != "corrupt"):
            raise BenchError(f"{k}={v} is out of range", f"{k} must be a positive number")
    if layout.synth_validate is not None:
        layout.synth_validate(p)
    return p


def synth(kind: str, out: str | Path, seed: int = 0, scale: str = "tiny", **kw) -> dict:
    """Write a generated ``kind`` dataset at ``out`` (must be new or empty); returns a summary dict."""
    p = _params(kind, scale, kw)
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BenchError(f"{out} already exists and is not empty", "pass a new or empty folder to write the dataset into")
    # the tree is built next to OUT and renamed into place; the marker file also goes there (one line, exit 2 if not
    # writable, before anything is generated)
    check_writable_dir(out.parent, "output folder")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        summary = DATASETS.get(kind).synth(tmp, int(seed), p, kind=kind, out=out)
        probe = _probe(tmp)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # the marker `mopro_bench.data.is_synthetic` reads (results on this tree then say "synthetic": true); deterministic
    # and free of absolute paths, like the tree
    marker = atomic_write_json(synth_marker_path(out), {
        "generator": SYNTH_GENERATOR, "kind": kind, "layout": out.name, "seed": int(seed), "scale": scale, "params": p,
        "probe": probe,
    })
    summary = {"kind": kind, "root": str(out), "seed": int(seed), "scale": scale, "params": p, **summary,
               "marker": str(marker)}
    return summary


def _probe(root: Path) -> dict[str, int]:
    """Sizes of three generated files (first, middle, last by path): ties the marker to this very tree."""
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    picked = sorted({files[0], files[len(files) // 2], files[-1]}) if files else []
    return {rel: (root / rel).stat().st_size for rel in picked}


# ------------------------------------------------------------------------------------------------ helpers for generators
def kind_code(kind: str) -> int:
    """The number of ``kind``'s random streams (``DatasetLayout.synth_code``)."""
    return DATASETS.get(kind).synth_code


def write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def family_image(wnid: str, size: int, seed: int, kind: str, split: str, i: int, style: str = "photo") -> bytes:
    """A JPEG of ImageNet-family class ``wnid`` (the class looks the same in every kind), image ``i`` of ``split``."""
    pos = family_wnids().index(wnid)
    rng = render.image_rng(seed, kind_code(kind), split, i)
    return render.jpeg_bytes(render.object_image(render.family_look(pos), size, rng, style=style))


def text_lines(rows: list[str]) -> str:
    return "".join(r + "\n" for r in rows)
