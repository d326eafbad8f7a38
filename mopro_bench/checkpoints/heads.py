"""Head files: a trained linear classifier saved apart from its backbone (``imagenet_linear --save-head``).

Format (a plain dict of tensors and strings, loadable with ``weights_only=True``)::

    {"mopro_bench_head": 1, "weight": [C, D], "bias": [C], "class_space": "imagenet1k",
     "checkpoint_sha256": "<sha of the backbone's checkpoint, or null for random:>", "checkpoint": "<name/path>",
     "arch": "resnet50", "width": 1, "protocol": "imagenet_linear@fast", "feature_norm": "none"}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mopro_bench.checkpoints import Head, LoadedCheckpoint
from mopro_bench.errors import BenchError
from mopro_bench.io import atomic_torch_save

HEAD_FORMAT_VERSION = 1


def save_head(path: str | Path, weight: torch.Tensor, bias: torch.Tensor | None, *, ck: LoadedCheckpoint,
              class_space: str, protocol: str, extra: dict[str, Any] | None = None) -> Path:
    obj = {
        "mopro_bench_head": HEAD_FORMAT_VERSION,
        "weight": weight.detach().float().cpu().contiguous(),
        "bias": None if bias is None else bias.detach().float().cpu().contiguous(),
        "class_space": class_space,
        "checkpoint_sha256": ck.sha256,
        "checkpoint": ck.name,
        "arch": ck.arch,
        "width": ck.width,
        "protocol": protocol,
        **(extra or {}),
    }
    return atomic_torch_save(path, obj)


def load_head(path: str | Path, ck: LoadedCheckpoint) -> Head:
    """Read a head file and check it belongs to ``ck`` (same feature size; same checkpoint file when known)."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"head file {path} does not exist",
                         "train one with `mopro-bench eval --task imagenet_linear@fast --save-head FILE`")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise BenchError(f"{path} is not a readable head file ({type(e).__name__})",
                         "pass a file written by --save-head") from None
    if not isinstance(obj, dict) or "mopro_bench_head" not in obj or "weight" not in obj:
        raise BenchError(f"{path} is not a mopro-bench head file", "pass a file written by `--save-head`")
    w = obj["weight"]
    if w.ndim != 2 or w.shape[1] != ck.backbone.feature_dim:
        raise BenchError(
            f"head {path} expects {w.shape[-1]}-d features but {ck.name} gives {ck.backbone.feature_dim}-d",
            "train the head on this checkpoint with imagenet_linear --save-head",
        )
    if obj.get("checkpoint_sha256") and ck.sha256 and obj["checkpoint_sha256"] != ck.sha256:
        raise BenchError(
            f"head {path} was trained on checkpoint {obj['checkpoint_sha256'][:8]}, not on {ck.name} ({ck.sha256[:8]})",
            "train the head on this checkpoint with imagenet_linear --save-head",
        )
    sd = {"weight": w}
    if obj.get("bias") is not None:
        sd["bias"] = obj["bias"]
    from mopro_bench.checkpoints.verify import bad_values

    return Head(kind="classifier", state_dict=sd, num_classes=int(w.shape[0]), class_space=obj.get("class_space"),
                description=f"head file {path.name} ({obj.get('protocol')})", nonfinite=bad_values(sd)[0])


def attach_head(ck: LoadedCheckpoint, path: str | Path | None) -> LoadedCheckpoint:
    """Replace ``ck``'s classifier by the head in ``path`` (no-op when ``path`` is None)."""
    if path:
        ck.heads["classifier"] = load_head(path, ck)
        ck.meta["head_file"] = str(path)
    return ck
