"""What is installed and what each optional part of the suite can do with it (``mopro-bench env``)."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
from typing import Any


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _direct_url(dist: str) -> dict[str, Any] | None:
    """pip's record of where a distribution came from (VCS URL + commit, local path), if any."""
    import json

    try:
        text = md.distribution(dist).read_text("direct_url.json")
    except md.PackageNotFoundError:
        return None
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


INSTALL_HINT = "run `make setup-detection` (scripts/install_detectron2.sh)"


def detectron2_status() -> dict[str, Any]:
    """Which detectron2 is installed: the official build (compiled ops) or the registry's Python-only wheel.

    Keys: installed, importable, error, variant ("official" | "sal-detectron2" | "unknown"), version, commit (of an
    official source build, when pip recorded it), source, compiled_ops, usable (coco_maskrcnn can run), note."""
    base: dict[str, Any] = {"installed": False, "importable": False, "error": None, "variant": None, "version": None,
                            "commit": None, "source": None, "compiled_ops": False, "usable": False}
    if importlib.util.find_spec("detectron2") is None:
        return {**base, "note": f"not installed: coco_maskrcnn is unavailable ({INSTALL_HINT})"}
    sal = _version("sal-detectron2")
    official = _version("detectron2")
    if official:
        variant, version, dist = "official", official, "detectron2"
    elif sal:
        variant, version, dist = "sal-detectron2", sal, "sal-detectron2"
    else:
        variant, version, dist = "unknown", None, None
    direct = _direct_url(dist) if dist else None
    commit = ((direct or {}).get("vcs_info") or {}).get("commit_id")
    source = (direct or {}).get("url")
    try:
        import detectron2

        importable, err = True, None
        version = version or getattr(detectron2, "__version__", None)
    except Exception as e:  # pragma: no cover - depends on the machine
        importable, err = False, f"{type(e).__name__}: {e}"
    compiled = importable and importlib.util.find_spec("detectron2._C") is not None
    if not importable:
        note = f"installed but not importable ({err}): coco_maskrcnn is unavailable; {INSTALL_HINT}"
    elif compiled:
        note = "compiled ops present: everything, including deformable conv and rotated boxes"
    else:
        note = ("registry wheel, Python part only (no compiled _C): Mask R-CNN R50-FPN (coco_maskrcnn) trains and "
                "evaluates with torchvision's ops; deformable conv, rotated boxes and detectron2's C++ COCO eval are "
                "unavailable (the suite scores with pycocotools anyway)")
    return {**base, "installed": True, "importable": importable, "error": err, "variant": variant, "version": version,
            "commit": commit, "source": source, "compiled_ops": compiled, "usable": importable, "note": note}


def collect() -> dict[str, Any]:
    import platform

    import torch

    from mopro_bench import __version__
    from mopro_bench.results import git_sha

    info: dict[str, Any] = {
        "mopro-bench": __version__,
        "git_sha": git_sha(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else [],
        "bf16_supported": bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()),
        "nccl_available": bool(torch.distributed.is_available() and torch.distributed.is_nccl_available()),
        "gloo_available": bool(torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    }
    for dist in ("numpy", "scikit-learn", "pandas", "pycocotools", "matplotlib", "tensorboard", "submitit", "Pillow"):
        info[dist] = _version(dist) or "not installed"
    info["detectron2"] = detectron2_status()
    return info


def data_status(roots, check: bool = True) -> dict[str, dict[str, Any]]:
    """For every dataset KIND: its root (from ``--data`` or the config file, see :class:`mopro_bench.config.DataRoots`),
    where that came from, and whether the tree passes ``mopro-bench data check`` (not ``--deep``).

    Per kind: ``root`` (None when not set), ``source``, ``status`` ("not set" | "ok" | "usable with warnings" |
    "not usable" | "not checked") and ``message`` (the first error or warning)."""
    from mopro_bench.data import KINDS
    from mopro_bench.data.check import check as check_tree
    from mopro_bench.errors import BenchError

    out: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        hit = roots.lookup(kind)
        if hit is None:
            out[kind] = {"root": None, "source": None, "status": "not set", "message": None}
            continue
        root, source = hit
        entry: dict[str, Any] = {"root": str(root), "source": source, "status": "not checked", "message": None}
        if check:
            try:
                report = check_tree(kind, root, deep=False)
            except BenchError as e:
                entry.update(status="not usable", message=e.line())
            except OSError as e:  # unreadable tree: report, do not crash `env`
                entry.update(status="not usable", message=f"{type(e).__name__}: {e}")
            else:
                if report.errors:
                    entry.update(status="not usable", message=report.errors[0])
                elif report.warnings:
                    entry.update(status="usable with warnings", message=report.warnings[0])
                else:
                    entry["status"] = "ok"
        out[kind] = entry
    return out
