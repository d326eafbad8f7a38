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


def detectron2_status() -> dict[str, Any]:
    """Which detectron2 is installed: the official build (compiled ops) or the registry's Python-only wheel."""
    if importlib.util.find_spec("detectron2") is None:
        return {"installed": False, "variant": None, "version": None, "compiled_ops": False,
                "note": "not installed: coco_maskrcnn is unavailable (run `make setup-detection`)"}
    sal = _version("sal-detectron2")
    official = _version("detectron2")
    compiled = importlib.util.find_spec("detectron2._C") is not None
    if official:
        variant, version = "official", official
    elif sal:
        variant, version = "sal-detectron2 (registry wheel, Python part only)", sal
    else:
        variant, version = "unknown distribution", None
    note = ("compiled ops present: everything, including deformable conv and rotated boxes"
            if compiled else
            "no compiled ops (_C): standard Mask R-CNN R50-FPN trains and evaluates; deformable conv, rotated "
            "boxes and detectron2's fast COCO eval are unavailable (pycocotools is used)")
    try:
        import detectron2  # noqa: F401

        importable, err = True, None
    except Exception as e:  # pragma: no cover - depends on the machine
        importable, err = False, f"{type(e).__name__}: {e}"
    return {"installed": True, "importable": importable, "error": err, "variant": variant, "version": version,
            "compiled_ops": compiled, "note": note}


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
