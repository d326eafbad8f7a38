"""Head files: a trained linear classifier saved apart from its backbone (``imagenet_linear --save-head``).

Format (a plain dict of tensors and strings, loadable with ``weights_only=True``)::

    {"mopro_bench_head": 1, "weight": [C, D], "bias": [C], "class_space": "imagenet1k",
     "checkpoint_sha256": "<sha of the backbone's checkpoint, or null for random:>", "checkpoint": "<name/path>",
     "arch": "resnet50", "width": 1, "protocol": "imagenet_linear@fast", "feature_norm": "none",
     "feature": "pooled", "feature_dim": D}

``feature`` names what the head reads (:data:`FEATURES`): ``pooled`` -- the backbone's own pooled feature (its
``forward``: ResNet global average pool, ViT CLS token after the final norm, ConvNeXt pre-logits), which is what
``imagenet_val`` and the robustness tasks compute -- or a protocol's own feature, e.g. ``dino-last4-cls`` (DINO's linear
probe: the CLS tokens of a ViT's last 4 blocks concatenated, 4 x D). Files written before the key existed read the
pooled feature. :func:`load_head` refuses a head whose feature or size is not the one the task computes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from mopro_bench.checkpoints import Head, LoadedCheckpoint
from mopro_bench.errors import BenchError
from mopro_bench.io import atomic_torch_save

HEAD_FORMAT_VERSION = 1
POOLED = "pooled"
_DINO = re.compile(r"^dino-last(\d+)-cls(-avgpool)?$")
FEATURES = {
    POOLED: "the backbone's pooled feature (its forward: ResNet GAP, ViT final-norm CLS token, ConvNeXt pre-logits)",
    "dino-lastN-cls[-avgpool]": "DINO's linear-probe feature: the CLS tokens of a ViT's last N blocks, each through the "
                                "final norm, concatenated (-avgpool: interleaved with the mean patch token)",
}
TRAIN_FIX = ("train a head on the pooled feature: `mopro-bench eval --ckpt CKPT --task imagenet_linear@fast --save-head "
             "FILE` (ViT: also imagenet_linear@mocov3)")


def describe_feature(feature: str) -> str:
    """Words for a feature id (``pooled``, ``dino-last4-cls``, ``dino-last1-cls-avgpool``)."""
    if feature == POOLED:
        return "the pooled feature"
    m = _DINO.match(feature)
    if m:
        n = int(m.group(1))
        what = f"the CLS tokens of the last {n} ViT blocks" if n > 1 else "the last ViT block's CLS token"
        return f"DINO's linear-probe feature {feature} ({what}{' with the mean patch token' if m.group(2) else ''})"
    return f"feature {feature!r}"


def save_head(path: str | Path, weight: torch.Tensor, bias: torch.Tensor | None, *, ck: LoadedCheckpoint,
              class_space: str, protocol: str, feature: str = POOLED, extra: dict[str, Any] | None = None) -> Path:
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
        "feature": feature,
        "feature_dim": int(weight.shape[1]),
        **(extra or {}),
    }
    return atomic_torch_save(path, obj)


def load_head(path: str | Path, ck: LoadedCheckpoint, feature: str = POOLED) -> Head:
    """Read a head file and check it belongs to ``ck`` and reads ``feature`` (the feature the caller computes: the
    pooled one for ``imagenet_val`` and the robustness tasks): same feature, same size, same checkpoint file when
    known."""
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
    if not torch.is_tensor(w) or w.ndim != 2:
        raise BenchError(f"head {path} has no [classes, features] weight matrix", "pass a file written by `--save-head`")
    have = obj.get("feature") or POOLED
    if not isinstance(have, str):
        raise BenchError(f"head {path} names its feature with a {type(have).__name__}, not a string",
                         "pass a file written by `--save-head`")
    if have != feature:
        raise BenchError(
            f"head {path} reads {describe_feature(have)}, {w.shape[1]}-d (written by {obj.get('protocol')}), but this "
            f"task scores {describe_feature(feature)} of {ck.name}, {ck.backbone.feature_dim}-d", TRAIN_FIX)
    if w.shape[1] != ck.backbone.feature_dim:
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
                description=f"head file {path.name} ({obj.get('protocol')}, feature {have})", nonfinite=bad_values(sd)[0])


def attach_head(ck: LoadedCheckpoint, path: str | Path | None) -> LoadedCheckpoint:
    """Replace ``ck``'s classifier by the head in ``path`` (no-op when ``path`` is None); the head must read the
    pooled feature."""
    if path:
        ck.heads["classifier"] = load_head(path, ck)
        ck.meta["head_file"] = str(path)
    return ck
