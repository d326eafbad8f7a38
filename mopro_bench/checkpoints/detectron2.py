"""torchvision <-> detectron2 ResNet names, and the detectron2 ``.pkl`` export.

detectron2 names a ResNet trunk ``stem.conv1`` (+ ``.norm``), ``res2``..``res5`` for torchvision's ``layer1``..``layer4``,
``convK.norm`` for ``bnK`` and ``shortcut`` (+ ``.norm``) for ``downsample.0`` (``.1``). A ``.pkl`` it reads with
``matching_heuristics`` is ``{"model": {name: numpy array}, "__author__": ..., "matching_heuristics": True}``.

Our export adds ``"mopro_bench": {...}`` (plain Python types only, so detectron2 can unpickle it without this package)
with the input preprocessing and the stride placement; :func:`preprocess_from_pkl` honours it when the file is read
back, and falls back to detectron2's conventions for files written by others.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mopro_bench.backbones import Preprocess
from mopro_bench.errors import BenchError
from mopro_bench.io import atomic_write_bytes

AUTHOR = "mopro-bench"
PKL_META_VERSION = 1
# detectron2's defaults for the MSRA/caffe ImageNet models: BGR, 0..255, per-channel mean, unit std
CAFFE_PREPROCESS = Preprocess(mean=(103.530, 116.280, 123.675), std=(1.0, 1.0, 1.0), channel_order="BGR", scale=255.0)
# authors of detectron2 files converted from torchvision-style (RGB, ImageNet mean/std, stride in the 3x3 conv) models
RGB_AUTHORS = ("mopro-bench", "moco", "pcl", "torchvision", "swav", "dino", "barlowtwins", "byol", "simclr", "vicreg")

_D2_PREFIX = "backbone.bottom_up."
_TV_KEY = re.compile(r"^layer([1-4])\.(\d+)\.(conv[1-3]|bn[1-3]|downsample\.[01])\.(.+)$")
_D2_KEY = re.compile(r"^res([2-5])\.(\d+)\.(conv[1-3](?:\.norm)?|shortcut(?:\.norm)?)\.(.+)$")


def tv_to_d2_key(key: str) -> str:
    """``layer1.0.bn2.weight`` -> ``res2.0.conv2.norm.weight`` (trunk keys only; ValueError otherwise)."""
    if key.startswith("conv1."):
        return "stem." + key
    if key.startswith("bn1."):
        return "stem.conv1.norm." + key[4:]
    m = _TV_KEY.match(key)
    if not m:
        raise ValueError(f"{key!r} is not a torchvision ResNet trunk key")
    stage, block, part, leaf = m.groups()
    if part.startswith("bn"):
        part = f"conv{part[2]}.norm"
    elif part == "downsample.0":
        part = "shortcut"
    elif part == "downsample.1":
        part = "shortcut.norm"
    return f"res{int(stage) + 1}.{block}.{part}.{leaf}"


def d2_to_tv_key(key: str) -> str | None:
    """``res2.0.conv2.norm.weight`` -> ``layer1.0.bn2.weight``; None for names outside the ResNet trunk."""
    if key.startswith("stem.conv1.norm."):
        return "bn1." + key[len("stem.conv1.norm."):]
    if key.startswith("stem.conv1."):
        return key[len("stem."):]
    m = _D2_KEY.match(key)
    if not m:
        return None
    stage, block, part, leaf = m.groups()
    if part.startswith("conv"):
        part = f"bn{part[4]}" if part.endswith(".norm") else part
    else:
        part = "downsample.1" if part.endswith(".norm") else "downsample.0"
    return f"layer{int(stage) - 1}.{block}.{part}.{leaf}"


def to_detectron2(state_dict: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A backbone's torchvision-named state dict -> detectron2 names with numpy values (``num_batches_tracked`` dropped:
    detectron2's frozen/sync BN does not use it)."""
    out: dict[str, np.ndarray] = {}
    for k, v in state_dict.items():
        if k.endswith("num_batches_tracked"):
            continue
        out[tv_to_d2_key(k)] = v.detach().cpu().contiguous().numpy().copy()
    return out


def from_detectron2(model: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """detectron2 ``model`` dict -> (torchvision trunk state dict, the other entries by their d2 names, prefix used).

    Accepts backbone files (``stem.*``, ``res2.*``) and whole detectors (``backbone.bottom_up.stem.*`` ...)."""
    prefix = _D2_PREFIX if any(k.startswith(_D2_PREFIX) for k in model) else ""
    trunk: dict[str, torch.Tensor] = {}
    rest: dict[str, Any] = {}
    for k, v in model.items():
        tv = d2_to_tv_key(k[len(prefix):]) if k.startswith(prefix) else None
        if tv is None:
            rest[k] = v
            continue
        trunk[tv] = _as_tensor(v)
    return trunk, rest, prefix


def _as_tensor(v: Any) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v
    if isinstance(v, np.ndarray):
        return torch.from_numpy(v if v.flags.c_contiguous else v.copy())
    if isinstance(v, np.generic | int | float):
        return torch.as_tensor(np.asarray(v))
    raise TypeError(f"not an array: {type(v).__name__}")


def d2_pixel_config(pre: Preprocess) -> dict[str, Any]:
    """detectron2 config values that feed a backbone what :class:`Preprocess` describes (images in 0..255)."""
    f = 255.0 / pre.scale
    return {
        "INPUT.FORMAT": pre.channel_order.upper(),
        "MODEL.PIXEL_MEAN": [round(m * f, 6) for m in pre.mean],
        "MODEL.PIXEL_STD": [round(s * f, 6) for s in pre.std],
    }


def preprocess_from_pkl(obj: dict[str, Any], rest: dict[str, Any]) -> tuple[Preprocess, bool, str]:
    """(preprocess, stride_in_1x1, how it was decided) for a detectron2 file."""
    meta = obj.get("mopro_bench") if isinstance(obj.get("mopro_bench"), dict) else None
    if meta and isinstance(meta.get("preprocess"), dict):
        p = meta["preprocess"]
        pre = Preprocess(mean=tuple(float(x) for x in p["mean"]), std=tuple(float(x) for x in p["std"]),
                         channel_order=str(p["channel_order"]), scale=float(p["scale"]))
        return pre, bool(meta.get("stride_in_1x1", False)), "recorded in the file by mopro-bench export"
    author = str(obj.get("__author__", "")).strip()
    if author.lower() in RGB_AUTHORS:
        return Preprocess(), False, f"__author__ {author!r}: converted from a torchvision-style model (RGB, ImageNet mean/std)"
    mean = rest.get("pixel_mean", rest.get("backbone.pixel_mean"))
    std = rest.get("pixel_std", rest.get("backbone.pixel_std"))
    if mean is not None and std is not None:  # a trained detector stores its input normalisation
        m = [float(x) for x in np.asarray(mean).reshape(-1)]
        s = [float(x) for x in np.asarray(std).reshape(-1)]
        order = "BGR" if m[0] < m[2] else "RGB"  # ImageNet's blue mean (103.5) is below its red mean (123.7)
        if all(abs(x - 1.0) < 1e-6 for x in s):
            pre = Preprocess(mean=tuple(m), std=tuple(s), channel_order=order, scale=255.0)
        else:
            pre = Preprocess(mean=tuple(x / 255 for x in m), std=tuple(x / 255 for x in s), channel_order=order, scale=1.0)
        stride = order == "BGR"
        return pre, stride, (f"pixel_mean/pixel_std stored in the detector ({order}); stride placement assumed "
                             f"{'in the 1x1 conv (MSRA)' if stride else 'in the 3x3 conv (torchvision)'}")
    return CAFFE_PREPROCESS, True, (f"__author__ {author or 'missing'!r}: assumed detectron2's MSRA convention "
                                    "(BGR, 0..255, caffe mean, stride in the 1x1 conv)")


def detectron2_payload(ck) -> dict[str, Any]:
    """The object :func:`export_detectron2` pickles, for a :class:`~mopro_bench.checkpoints.LoadedCheckpoint`."""
    if not getattr(ck.backbone, "supports_detection", True):
        raise BenchError(f"{ck.name} is a {ck.family} ({ck.arch}); detectron2's .pkl holds ResNet trunks only",
                         "export --format timm (detectron2 export and coco_maskrcnn take ResNets)")
    pre = ck.preprocess
    meta = {
        "version": PKL_META_VERSION,
        "arch": ck.arch,
        "width": int(ck.width),
        "stride_in_1x1": bool(getattr(ck.backbone, "stride_in_1x1", False)),
        "preprocess": {"mean": [float(x) for x in pre.mean], "std": [float(x) for x in pre.std],
                       "channel_order": pre.channel_order, "scale": float(pre.scale)},
        "detectron2_config": {**d2_pixel_config(pre), "MODEL.RESNETS.DEPTH": int(ck.arch.replace("resnet", "")),
                              "MODEL.RESNETS.STRIDE_IN_1X1": bool(getattr(ck.backbone, "stride_in_1x1", False)),
                              "MODEL.RESNETS.WIDTH_PER_GROUP": 64 * int(ck.width),
                              "MODEL.RESNETS.RES2_OUT_CHANNELS": int(ck.backbone.stage_channels["res2"])},
        "source": {"path": str(ck.path), "sha256": ck.sha256, "format": ck.format, "select": ck.meta.get("select")},
    }
    return {"model": to_detectron2(ck.backbone.state_dict()), "__author__": AUTHOR, "matching_heuristics": True,
            "mopro_bench": meta}


def export_detectron2(ck, path: str | Path) -> Path:
    """Write ``ck``'s backbone as a detectron2 ``.pkl`` (atomically)."""
    return atomic_write_bytes(path, pickle.dumps(detectron2_payload(ck), protocol=4))
