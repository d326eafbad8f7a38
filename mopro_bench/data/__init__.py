"""Dataset layouts: one loader module per layout, plus ``check`` and ``synth``.

``voc`` (VOC07), ``places`` (Places205), ``imagenet`` (ImageNet folders + SimCLR subsets), ``imagenet_ra``
(ImageNet-R/-A), ``webvision`` (WebVision lists, noisy-data training set), ``coco`` (detectron2's datasets/coco),
``check`` (``mopro-bench data check``), ``synth`` + ``render`` (``mopro-bench data synth``), ``common`` (decoding,
transforms, ``ImageList``).
"""

from __future__ import annotations

import json
from pathlib import Path

KINDS = ("webvision", "imagenet", "voc07", "places205", "coco", "imagenet-r", "imagenet-a")

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
