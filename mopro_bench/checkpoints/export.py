"""Export a loaded checkpoint's backbone: a torchvision state dict, or a detectron2 ``.pkl`` (:mod:`.detectron2`)."""

from __future__ import annotations

from pathlib import Path

import torch

from mopro_bench.checkpoints import LoadedCheckpoint
from mopro_bench.checkpoints.detectron2 import export_detectron2
from mopro_bench.errors import BenchError
from mopro_bench.io import atomic_torch_save

FORMATS = ("torchvision", "detectron2")


def torchvision_state_dict(ck: LoadedCheckpoint, with_classifier: bool = False) -> dict[str, torch.Tensor]:
    """The backbone's state dict in torchvision names (``torchvision.models.<arch>`` keys without ``fc``; with ``fc``
    from the checkpoint's classifier when ``with_classifier``)."""
    if getattr(ck.backbone, "stride_in_1x1", False):
        raise BenchError(f"{ck.name} puts the stride in the 1x1 convolution (MSRA/caffe ResNet); torchvision's ResNet puts "
                         "it in the 3x3, so a torchvision file would compute another function",
                         "export --format detectron2 (it records MODEL.RESNETS.STRIDE_IN_1X1: True)")
    sd = {k: v.detach().cpu().clone().contiguous() for k, v in ck.backbone.state_dict().items()}
    if with_classifier:
        head = ck.heads.get("classifier")
        if head is None:
            raise BenchError(f"{ck.name} has no classifier head", "drop --with-classifier (the backbone is exported alone)")
        sd["fc.weight"] = head.state_dict["weight"].detach().cpu().clone().float()
        if "bias" in head.state_dict:
            sd["fc.bias"] = head.state_dict["bias"].detach().cpu().clone().float()
    return sd


def export_torchvision(ck: LoadedCheckpoint, path: str | Path, with_classifier: bool = False) -> Path:
    """Write a bare torchvision state dict (loads into ``torchvision.models.resnet50()``; strict when ``fc`` is included,
    else with only ``fc.weight``/``fc.bias`` missing). Written atomically."""
    return atomic_torch_save(path, torchvision_state_dict(ck, with_classifier))


def export(ck: LoadedCheckpoint, fmt: str, path: str | Path, with_classifier: bool = False) -> Path:
    if fmt == "torchvision":
        return export_torchvision(ck, path, with_classifier)
    if fmt == "detectron2":
        if with_classifier:
            raise BenchError("--with-classifier applies to --format torchvision only", "drop --with-classifier")
        return export_detectron2(ck, path)
    raise BenchError(f"unknown export format {fmt!r}", "use one of: " + ", ".join(FORMATS))


__all__ = ["FORMATS", "export", "export_torchvision", "export_detectron2", "torchvision_state_dict"]
