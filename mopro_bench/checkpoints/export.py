"""Export a loaded checkpoint's backbone: a torchvision state dict or a detectron2 ``.pkl`` (:mod:`.detectron2`) for
ResNets; a timm state dict for ViT / ConvNeXt (and ResNets' torchvision names are timm's too)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mopro_bench.checkpoints import LoadedCheckpoint
from mopro_bench.checkpoints.detectron2 import export_detectron2
from mopro_bench.errors import BenchError
from mopro_bench.io import atomic_torch_save, atomic_write_bytes

FORMATS = ("torchvision", "detectron2", "timm")
# which backbone families each export format can hold
FORMAT_FAMILIES = {"torchvision": ("resnet",), "detectron2": ("resnet",), "timm": ("resnet", "vit", "convnext")}
# where a classifier goes in timm's names, per family (ViT: head; ConvNeXt: head.fc; ResNet: fc)
TIMM_CLASSIFIER = {"resnet": "fc", "vit": "head", "convnext": "head.fc"}


def torchvision_state_dict(ck: LoadedCheckpoint, with_classifier: bool = False) -> dict[str, torch.Tensor]:
    """The backbone's state dict in torchvision names (``torchvision.models.<arch>`` keys without ``fc``; with ``fc``
    from the checkpoint's classifier when ``with_classifier``)."""
    if getattr(ck.backbone, "stride_in_1x1", False):
        raise BenchError(f"{ck.name} puts the stride in the 1x1 convolution (MSRA/caffe ResNet); torchvision's ResNet puts "
                         "it in the 3x3, so a torchvision file would compute another function",
                         "export --format detectron2 (it records MODEL.RESNETS.STRIDE_IN_1X1: True)")
    return _with_classifier(ck, with_classifier, "fc")


def _with_classifier(ck: LoadedCheckpoint, with_classifier: bool, prefix: str) -> dict[str, torch.Tensor]:
    """The backbone's tensors (own memory, contiguous), plus the classifier as ``prefix.weight``/``prefix.bias``."""
    sd = {k: v.detach().cpu().clone().contiguous() for k, v in ck.backbone.state_dict().items()}
    if with_classifier:
        head = ck.heads.get("classifier")
        if head is None:
            raise BenchError(f"{ck.name} has no classifier head", "drop --with-classifier (the backbone is exported alone)")
        sd.update({f"{prefix}.{k}": head.state_dict[k].detach().cpu().clone().float()
                   for k in ("weight", "bias") if k in head.state_dict})
    return sd


def export_torchvision(ck: LoadedCheckpoint, path: str | Path, with_classifier: bool = False) -> Path:
    """Write a bare torchvision state dict (loads into ``torchvision.models.resnet50()``; strict when ``fc`` is included,
    else with only ``fc.weight``/``fc.bias`` missing). Written atomically."""
    return atomic_torch_save(path, torchvision_state_dict(ck, with_classifier))


def timm_state_dict(ck: LoadedCheckpoint, with_classifier: bool = False) -> dict[str, torch.Tensor]:
    """The backbone in timm's names (``timm.create_model(ck.arch, num_classes=0)`` loads it strictly; with the
    classifier, ``num_classes=N`` does)."""
    if getattr(ck.backbone, "stride_in_1x1", False):
        raise BenchError(f"{ck.name} puts the stride in the 1x1 convolution (MSRA/caffe ResNet), which timm's ResNet "
                         "does not", "export --format detectron2")
    return _with_classifier(ck, with_classifier, TIMM_CLASSIFIER[ck.family])


def _timm_config(ck: LoadedCheckpoint, path: Path) -> None:
    """A ViT whose number of attention heads is not the standard one of its width (MoCo v3's ViT-S: 12, not 6) cannot
    be told from a bare state dict: write timm's ``config.json`` beside the file (the loader reads it back), refusing
    to replace another one."""
    from mopro_bench.backbones.vit import SIZES

    if ck.family != "vit":
        return
    heads = int(ck.backbone.config["num_heads"])
    if SIZES.get(int(ck.backbone.config["embed_dim"]), (None, None, heads))[2] == heads:
        return
    cfg_path = path.parent / "config.json"
    text = json.dumps({"architecture": ck.arch, "model_args": {"num_heads": heads}}, indent=2) + "\n"
    if cfg_path.exists() and cfg_path.read_text(errors="replace") != text:
        raise BenchError(f"{ck.name} has {heads} attention heads, which a bare timm file cannot record, and {cfg_path} "
                         "(where it would go) already exists", "export into an empty folder")
    atomic_write_bytes(cfg_path, text.encode())


def export(ck: LoadedCheckpoint, fmt: str, path: str | Path, with_classifier: bool = False) -> Path:
    if fmt in FORMAT_FAMILIES and ck.family not in FORMAT_FAMILIES[fmt]:
        fits = [f for f, fams in FORMAT_FAMILIES.items() if ck.family in fams]
        raise BenchError(f"--format {fmt} holds ResNets; {ck.name} is a {ck.family} ({ck.arch})",
                         f"use --format {' or '.join(fits)}")
    if fmt == "timm":
        sd = timm_state_dict(ck, with_classifier)
        _timm_config(ck, Path(path))
        return atomic_torch_save(path, sd)
    if fmt == "torchvision":
        return export_torchvision(ck, path, with_classifier)
    if fmt == "detectron2":
        if with_classifier:
            raise BenchError("--with-classifier applies to --format torchvision and timm only", "drop --with-classifier")
        return export_detectron2(ck, path)
    raise BenchError(f"unknown export format {fmt!r}", "use one of: " + ", ".join(FORMATS))


__all__ = ["FORMATS", "FORMAT_FAMILIES", "export", "export_torchvision", "export_detectron2", "timm_state_dict",
           "torchvision_state_dict"]
