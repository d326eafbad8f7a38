"""Dataset layouts: one module per on-disk layout, each a one-file plug-in, plus the shared machinery.

A layout module holds its loader, its ``check``, its ``synth`` generator, its official sizes and its kind name(s) in a
:class:`~mopro_bench.data.layout.DatasetLayout`: ``voc`` (voc07), ``places`` (places205), ``imagenet`` (imagenet +
SimCLR subsets), ``imagenet_ra`` (imagenet-r, imagenet-a), ``webvision`` (WebVision lists, noisy-data training set),
``coco`` (detectron2's datasets/coco). :data:`DATASETS` registers them (one lazy line each in
:data:`BUILTIN_DATASETS`). Shared machinery: ``check`` (``CheckReport`` and the ``mopro-bench data check`` driver),
``synth`` + ``render`` (the ``mopro-bench data synth`` driver, image drawing), ``common`` (decoding, transforms,
``ImageList``), ``layout`` (the plug-in type).
"""

from __future__ import annotations

import json
from pathlib import Path

from mopro_bench.data.layout import DatasetLayout, validate_layout
from mopro_bench.plugins import Registry

# kind -> "module:attr" of its DatasetLayout. The order is the order users see (help, "use one of ...").
BUILTIN_DATASETS = (
    ("webvision", "mopro_bench.data.webvision:LAYOUT"),
    ("imagenet", "mopro_bench.data.imagenet:LAYOUT"),
    ("voc07", "mopro_bench.data.voc:LAYOUT"),
    ("places205", "mopro_bench.data.places:LAYOUT"),
    ("coco", "mopro_bench.data.coco:LAYOUT"),
    ("imagenet-r", "mopro_bench.data.imagenet_ra:IMAGENET_R"),
    ("imagenet-a", "mopro_bench.data.imagenet_ra:IMAGENET_A"),
)

DATASETS: Registry[DatasetLayout] = Registry("dataset kind", validate=validate_layout)
for _kind, _ref in BUILTIN_DATASETS:
    DATASETS.register(_kind, _ref)
del _kind, _ref

KINDS = tuple(DATASETS.names())


def get_layout(kind: str) -> DatasetLayout:
    """The registered layout of ``kind`` (BenchError naming the known kinds otherwise)."""
    return DATASETS.get(kind)


SYNTH_MARKER_SUFFIX = ".synth.json"
SYNTH_GENERATOR = "mopro-bench data synth"


def synth_marker_path(root: str | Path) -> Path:
    """Where ``data synth`` marks a generated tree: ``<root>.synth.json`` next to it (like the WebVision truth file,
    outside the layout, so the tree itself stays exactly the real layout)."""
    root = Path(root)
    return root.parent / f"{root.name}{SYNTH_MARKER_SUFFIX}"


def _marked(layout_root: Path) -> bool:
    marker = synth_marker_path(layout_root)
    try:
        obj = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(obj, dict) or obj.get("generator") != SYNTH_GENERATOR:
        return False
    probe = obj.get("probe")
    if not isinstance(probe, dict) or not probe:
        return False
    # the marker belongs to *this* tree: the probed files are still there with their generated sizes (a real dataset
    # later put at the same path does not pass)
    try:
        return all((layout_root / rel).stat().st_size == int(size) for rel, size in probe.items())
    except (OSError, TypeError, ValueError):
        return False


def is_synthetic(root: str | Path) -> bool:
    """True when ``root`` (or its parent or grandparent, e.g. a VOC root given as ``.../VOCdevkit``) was written by
    ``mopro-bench data synth``: its marker file is present and matches the tree."""
    root = Path(root).expanduser()
    try:
        root = root.resolve()
    except OSError:
        return False
    return any(_marked(p) for p in (root, *list(root.parents)[:2]) if p.name)
