"""Checkpoint import: any supported file in, a verified :class:`Backbone` out, heads kept aside.

Public API (used by every task)::

    ck = load_checkpoint("path/to/file.pth.tar")      # or "random:resnet50", "random:resnet50x2"
    ck = load_checkpoint("moco.pth.tar", select="encoder_k")   # or the spec "moco.pth.tar#encoder_k"
    ck.backbone            # Backbone with 100% of its parameters and buffers loaded and shape-checked
    ck.heads               # {"classifier": Head(...), "projection": Head(...)}  (may be empty)
    ck.classifier()        # nn.Linear with the checkpoint's classifier, or None
    ck.sha256, ck.format, ck.arch, ck.width, ck.preprocess, ck.name, ck.path
    ck.record()            # the "checkpoint" block of a result record
    ck.coverage            # what was loaded, filled (num_batches_tracked), kept as heads, ignored
    ck.meta                # adapter, selected network, source metadata, warnings

Files are read once, into memory, and ``sha256`` is the hash of exactly those bytes (the path may be re-pointed
meanwhile, as ``pretrain`` does with ``last.pth.tar``); they are deserialized without executing code from them
(:mod:`.safeload`), mapped by a named format adapter (:mod:`.formats`, one module per format; :mod:`.loader`) and
verified to cover 100% of the backbone's parameters and buffers with finite values and non-negative BatchNorm
running variances (:mod:`.verify`);
``trust=True`` lifts the pickle restrictions for files the user trusts. Export: :mod:`.export` (torchvision) and
:mod:`.detectron2`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mopro_bench.backbones import Preprocess, build_family, default_preprocess, family_of, parse_any_arch
from mopro_bench.errors import BenchError

# class spaces a classifier head can be in
CLASS_SPACES = ("imagenet1k", "webvision1k", "webvision5k", "custom")
# WebVision 1.0's 1000 classes are ImageNet-1k's, in sorted-wnid order: a webvision1k head is an imagenet1k head.
IMAGENET_COMPATIBLE = ("imagenet1k", "webvision1k")


@dataclass
class Head:
    """A head kept aside from the backbone: its tensors and what they mean."""

    kind: str  # "classifier" | "projection" | "prototypes" | ...
    state_dict: dict[str, torch.Tensor]
    num_classes: int | None = None
    class_space: str | None = None  # one of CLASS_SPACES for classifiers
    description: str = ""
    nonfinite: list[str] = field(default_factory=list)  # tensors holding NaN/Inf: the head is refused when used

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "num_classes": self.num_classes,
            "class_space": self.class_space,
            "shapes": {k: list(v.shape) for k, v in self.state_dict.items()},
            **({"nonfinite": list(self.nonfinite)} if self.nonfinite else {}),
        }


@dataclass
class LoadedCheckpoint:
    backbone: nn.Module  # a backbone of mopro_bench.backbones (family, feature_dim, forward -> pooled feature)
    format: str
    arch: str
    width: int
    sha256: str | None
    path: str
    name: str
    heads: dict[str, Head] = field(default_factory=dict)
    preprocess: Preprocess = field(default_factory=Preprocess)
    meta: dict[str, Any] = field(default_factory=dict)
    coverage: dict[str, Any] = field(default_factory=dict)

    def classifier(self, class_space: tuple[str, ...] | None = None) -> nn.Linear | None:
        """The classifier head as an ``nn.Linear`` (optionally only if its class space is in ``class_space``)."""
        head = self.heads.get("classifier")
        if head is None:
            return None
        if class_space is not None and head.class_space not in class_space:
            return None
        if head.nonfinite:
            raise BenchError(f"checkpoint {self.name}: its classifier head holds NaN/Inf values ({', '.join(head.nonfinite)})",
                             "use an earlier checkpoint of the run, or train a head with imagenet_linear --save-head "
                             "and pass it with --head")
        w = head.state_dict["weight"]
        b = head.state_dict.get("bias")
        lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
        with torch.no_grad():
            lin.weight.copy_(w)
            if b is not None:
                lin.bias.copy_(b)
        return lin

    @property
    def select(self) -> str | None:
        """The network taken from a file that holds several (``encoder_q``, ``teacher``, ...), else None."""
        return self.meta.get("select")

    @property
    def identity(self) -> str | None:
        """sha256 of the file, plus the selected network when it is not the file's default (feature-cache key)."""
        if self.sha256 is None:
            return None
        sel, avail = self.meta.get("select"), self.meta.get("selectable") or []
        ident = f"{self.sha256}#{sel}" if sel and avail and sel != avail[0] else self.sha256
        cfg = self.hub_config_sha256
        return f"{ident}+config:{cfg}" if cfg else ident  # config.json beside the file sets preprocessing / heads

    @property
    def hub_config_sha256(self) -> str | None:
        """sha256 of the timm / HF hub ``config.json`` read beside a bare file (it changes the network: preprocessing,
        a ViT's number of heads), else None."""
        return (self.meta.get("hub_config") or {}).get("sha256")

    @property
    def family(self) -> str:
        """``resnet`` | ``vit`` | ``convnext`` (:data:`mopro_bench.backbones.FAMILIES`)."""
        return family_of(self.backbone)

    def record(self) -> dict[str, Any]:
        config = getattr(self.backbone, "config", None)
        return {
            "name": self.name,
            "path": self.path,
            "sha256": self.sha256,
            "format": self.format,
            "family": self.family,
            "arch": self.arch,
            "width": self.width,
            **({"config": dict(config)} if self.family != "resnet" and isinstance(config, dict) else {}),
            "feature": getattr(self.backbone, "feature", None),
            "heads": {k: h.summary() for k, h in self.heads.items()},
            "preprocess": self.preprocess.record(),
            "select": self.meta.get("select"),
            **({"hub_config": dict(self.meta["hub_config"])} if self.hub_config_sha256 else {}),
            "stride_in_1x1": bool(getattr(self.backbone, "stride_in_1x1", False)),
            "coverage": {"loaded": self.coverage.get("loaded"), "expected": self.coverage.get("expected"),
                         "filled": len(self.coverage.get("filled") or []), "derived": len(self.coverage.get("derived") or [])},
        }


def load_random(spec: str, seed: int = 0) -> LoadedCheckpoint:
    """``random:ARCH`` -- an explicitly untrained baseline (torchvision init for ResNets, timm's for ViT/ConvNeXt,
    seeded): ``random:resnet50``, ``random:resnet50x2``, ``random:vit_small_patch16_224``, ``random:convnext_tiny``."""
    text = spec.split(":", 1)[1]
    if not text.strip():
        raise BenchError(f"{spec!r} names no architecture",
                         "use e.g. random:resnet50, random:resnet50x2, random:vit_small_patch16_224, random:convnext_tiny")
    family, config = parse_any_arch(text)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        bb = build_family(family, config).eval()
    finally:
        torch.random.set_rng_state(gen_state)
    init = "torchvision" if family == "resnet" else "timm"
    return LoadedCheckpoint(
        backbone=bb, format="random", arch=bb.arch, width=bb.width, sha256=None, path=spec, name=spec,
        preprocess=default_preprocess(family),
        coverage={"loaded": 0, "expected": len(bb.state_dict()), "filled": [], "percent": 0.0,
                  "parameter_count": bb.num_parameters, "note": f"untrained ({init} init, seed {seed})"},
        meta={"adapter": "random", "seed": seed, "select": None, "selectable": [], "warnings": []},
    )


def split_spec(spec: str) -> tuple[str, str | None]:
    """``FILE#SELECT`` -> (FILE, SELECT) when FILE exists and SELECT names a network; else (spec, None)."""
    from mopro_bench.checkpoints.loader import SELECT_NAMES

    if "#" in spec and not Path(spec).exists():
        head, _, tail = spec.rpartition("#")
        if tail in SELECT_NAMES or "/" not in tail and Path(head).exists():
            return head, tail
    return spec, None


def choose_network(flag: str | None, spec: str, select: str | None, name: str | None) -> tuple[str | None, str | None]:
    """(network to load, display name) for ``--ckpt spec`` that the zoo / download layer resolved to (``select``,
    ``name``), and ``--select flag``: a ``#NETWORK`` written in a zoo / URL spec and ``--select`` must agree (as
    ``FILE#NETWORK`` and ``--select`` must); ``--select`` over a zoo entry's default network names the choice as the
    spec form does (``zoo:NAME#NETWORK``)."""
    remote = spec.startswith(("zoo:", "http://", "https://", "file://"))
    written = spec.rpartition("#")[2] if remote and "#" in spec else None
    if flag and written and flag != written:
        raise BenchError(f"--ckpt {spec} selects {written} but --select says {flag}", "give the network once")
    if not flag or flag == select:
        return select, name
    return flag, (f"{name.partition('#')[0]}#{flag}" if name else None)


def load_checkpoint(spec: str | Path, *, arch: str | None = None, trust: bool = False, name: str | None = None,
                    seed: int = 0, select: str | None = None, check_values: bool = True) -> LoadedCheckpoint:
    """Load ``spec`` (a file, ``FILE#NETWORK``, or ``random:ARCH``) and verify the backbone. See :mod:`.loader`.

    ``select`` picks the network in files that hold several: ``encoder_q`` (default) / ``encoder_k`` for MoPro, MoCo
    and PCL, ``base_encoder`` / ``momentum_encoder`` for MoCo v3, ``teacher`` (default) / ``student`` for DINO,
    ``state_dict`` / ``state_dict_ema`` for timm, ``model`` / ``model_ema`` for ConvNeXt and wrapped timm files.
    ``arch`` (e.g. ``resnet50x2``) is inferred when omitted and must
    agree with the file when given. ``check_values`` (default) refuses a backbone with NaN/Inf tensors or negative
    BatchNorm running variances; ``inspect`` turns it off to report them."""
    spec = str(spec)
    if spec.startswith("random:"):
        if select:
            raise BenchError(f"--select {select} does not apply to {spec}", "drop --select")
        ck = load_random(spec, seed=seed)
        if arch:
            if parse_any_arch(arch) != parse_any_arch(spec.split(":", 1)[1]):
                raise BenchError(f"--arch {arch} disagrees with {spec}", f"use random:{arch} or drop --arch")
    else:
        from mopro_bench.checkpoints.loader import load_file

        path, sel = split_spec(spec)
        if sel and select and sel != select:
            raise BenchError(f"{spec} selects {sel} but --select says {select}", "give the network once")
        ck = load_file(Path(path), arch=arch, trust=trust, select=select or sel, check_values=check_values)
    if name:
        ck.name = name
    return ck


__all__ = ["Head", "LoadedCheckpoint", "choose_network", "load_checkpoint", "split_spec", "CLASS_SPACES", "IMAGENET_COMPATIBLE",
           "BenchError"]
