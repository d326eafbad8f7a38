"""Read a checkpoint file, detect its format (the registered formats in priority order, see
:mod:`mopro_bench.checkpoints.formats`), map it and verify the backbone.

A bare timm-named ViT / ConvNeXt file records nothing about its input; when the Hugging Face hub's ``config.json``
(timm's ``{"architecture", "pretrained_cfg": {"mean", "std", "interpolation", "crop_pct", "input_size"}}``) lies
beside it, as in a hub snapshot, its preprocessing and architecture name are used (and its sha256 recorded)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from mopro_bench.backbones import ARCHS, Preprocess, family_of, parse_arch, trunk_family
from mopro_bench.checkpoints import LoadedCheckpoint
from mopro_bench.checkpoints.formats import adapters
from mopro_bench.checkpoints.formats.base import Adapter, Mapped, is_tensor_dict
from mopro_bench.checkpoints.safeload import read_checkpoint
from mopro_bench.checkpoints.verify import VIT_MARKERS, bad_values, build_verified, describe_bad_values, first
from mopro_bench.errors import BenchError

SELECT_NAMES = ("encoder_q", "encoder_k", "base_encoder", "momentum_encoder", "teacher", "student", "state_dict",
                "state_dict_ema", "model", "model_ema")


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = list(obj)
        inner = next((v for v in obj.values() if isinstance(v, Mapping) and v), None)
        s = f"top-level keys {first([str(k) for k in keys], 6)}"
        if inner is not None and not is_tensor_dict(obj):
            s += f"; first nested keys {first([str(k) for k in inner], 4)}"
        return s
    return f"a {type(obj).__name__}"


def detect_adapter(obj: Mapping[str, Any], where: str) -> Adapter:
    for a in adapters():
        if a.detect(obj):
            return a
    tensor_dicts = [obj] if is_tensor_dict(obj) else [v for v in obj.values() if is_tensor_dict(v)]
    if not tensor_dicts:
        raise BenchError(f"{where} holds no state dict of tensors ({_describe(obj)})",
                         "pass a checkpoint with model weights (e.g. {'state_dict': ...} or a bare state dict)")
    vit = [k for d in tensor_dicts for k in d if any(m in k for m in VIT_MARKERS)]
    raise BenchError(f"{where} is no known {'Vision Transformer' if vit else 'ResNet, ViT or ConvNeXt'} checkpoint layout "
                     f"({_describe(obj)})",
                     "supported: " + ", ".join(a.name for a in adapters()) + " (`mopro-bench inspect --formats` describes them)")


def _hub_config(path: Path, m: Mapped) -> None:
    """Use the timm / HF hub ``config.json`` beside a bare timm ViT / ConvNeXt file (see the module docstring):
    ``pretrained_cfg`` sets the preprocessing, ``architecture`` and ``model_args.num_heads`` the hints."""
    from mopro_bench.checkpoints.formats.timm import arch_hints

    cfg_path = path.parent / "config.json"
    if not cfg_path.is_file():
        return
    try:
        raw = cfg_path.read_bytes()
        cfg = json.loads(raw)
    except (OSError, ValueError):
        return
    if not isinstance(cfg, dict) or not (isinstance(cfg.get("pretrained_cfg"), dict) or isinstance(cfg.get("model_args"), dict)
                                         or isinstance(cfg.get("architecture"), str)):
        return  # some other tool's config.json (transformers': "architectures", "model_type")
    arch = cfg.get("architecture") if isinstance(cfg.get("architecture"), str) else None
    m.meta["hub_config"] = {"path": str(cfg_path), "sha256": hashlib.sha256(raw).hexdigest(), "architecture": arch}
    pc = cfg.get("pretrained_cfg")
    if isinstance(pc, dict):
        try:
            base = m.preprocess
            mean = tuple(float(x) for x in pc.get("mean", base.mean))
            std = tuple(float(x) for x in pc.get("std", base.std))
            interp = pc.get("interpolation", base.interpolation)
            size = pc.get("input_size", [3, base.input_size, base.input_size])
            pre = Preprocess(mean=mean, std=std, interpolation=interp, input_size=int(size[-1]),
                             crop_pct=float(pc.get("crop_pct", base.crop_pct)))
            if len(mean) != 3 or len(std) != 3 or interp not in ("bilinear", "bicubic") or min(std) <= 0:
                raise ValueError(f"mean {mean}, std {std}, interpolation {interp!r}")
        except (TypeError, ValueError, IndexError) as e:
            m.meta.setdefault("warnings", []).append(f"{cfg_path} has a pretrained_cfg this suite cannot use ({e}); "
                                                     "ImageNet mean/std, bicubic assumed")
        else:
            m.preprocess = pre
            m.meta["preprocess_source"] = f"{cfg_path.name} beside the file (timm pretrained_cfg)"
    family = trunk_family(m.trunk)
    hints = dict(m.hints) or (arch_hints(arch, family, "config.json architecture") if arch else {})
    heads = (cfg.get("model_args") or {}).get("num_heads") if isinstance(cfg.get("model_args"), dict) else None
    if family == "vit" and isinstance(heads, int) and not isinstance(heads, bool) and heads > 0:
        hints.update(num_heads=heads, num_heads_source=f"{cfg_path.name} model_args.num_heads")
    m.hints = hints


def load_file(path: str | Path, arch: str | None = None, trust: bool = False, select: str | None = None,
              check_values: bool = True) -> LoadedCheckpoint:
    """Read, detect, map and verify the checkpoint at ``path``.

    ``sha256`` is the hash of the bytes the weights were deserialized from (the file is read once). With
    ``check_values`` a backbone tensor holding NaN/Inf or a negative BatchNorm running variance is a BenchError;
    without it (``inspect``) they are listed in ``coverage`` and ``meta["refused"]``."""
    path = Path(path)
    where = f"checkpoint {path}"
    raw = read_checkpoint(path, trust=trust)
    obj = raw.obj
    notes: list[str] = []
    if isinstance(obj, nn.Module):  # only reachable with trust=True
        obj = obj.state_dict()
        notes.append("the file pickles a whole nn.Module; its state_dict was used")
    if not isinstance(obj, Mapping):
        raise BenchError(f"{path} is not a checkpoint (it holds {_describe(obj)}, not a dict of weights)",
                         "pass a state dict or a training checkpoint")
    if not obj:
        raise BenchError(f"{path} is an empty dict (no weights)", "pass a checkpoint that holds model weights")
    adapter = detect_adapter(obj, where)
    available = adapter.selects(obj)
    if select is not None and not available:
        raise BenchError(f"--select {select} does not apply to {where} (adapter {adapter.name}): it holds one network",
                         "drop --select")
    m = adapter.convert(obj, select, where)
    if adapter.name == "timm" and m.meta.get("wrapper") is None and trunk_family(m.trunk) != "resnet":
        _hub_config(path, m)
    chosen = m.meta.get("select") or (select if select is not None else (available[0] if available else None))
    bb, coverage = build_verified(m.trunk, arch=arch, adapter=adapter.name, where=where, stride_in_1x1=m.stride_in_1x1,
                                  unplaced=m.unplaced, hints=m.hints)
    warnings = list(notes) + list(m.meta.pop("warnings", []))
    refused = describe_bad_values(coverage["nonfinite"], coverage["negative_var"])
    if refused and check_values:
        raise BenchError(f"{where} (adapter {adapter.name}) was refused: {refused}",
                         "the training diverged or the file is corrupt: use an earlier checkpoint of the run "
                         "(`mopro-bench inspect --ckpt FILE` lists every bad tensor)")
    in_file = m.meta.get("arch_in_file")
    if (family_of(bb) == "resnet" and isinstance(in_file, str) and parse_arch(in_file)[0] in ARCHS
            and parse_arch(in_file) != (bb.arch, bb.width)):
        warnings.append(f"the file says arch {in_file!r} but its tensors are {bb.name}; {bb.name} was loaded")
    for hname in list(m.heads):
        h = m.heads[hname]
        h.state_dict = {k: v.detach().clone() for k, v in h.state_dict.items()}  # own memory, not the file's mapping
        h.nonfinite = bad_values(h.state_dict)[0]
        if h.nonfinite:
            warnings.append(f"head {hname} holds NaN/Inf values ({first(h.nonfinite)}): tasks that use it refuse it")
        if h.kind == "classifier" and h.state_dict["weight"].shape[-1] != bb.feature_dim:
            warnings.append(f"head {hname} takes {h.state_dict['weight'].shape[-1]}-d input, not the backbone's "
                            f"{bb.feature_dim}-d feature; kept aside as {hname}_unusable")
            h.kind = "other"
            m.heads[f"{hname}_unusable"] = m.heads.pop(hname)
    coverage.update({"select": chosen, "selectable": available, "heads": sorted(m.heads), "ignored": m.ignored,
                     "derived": m.derived})
    meta = {"adapter": adapter.name, "adapter_description": adapter.description, "container": raw.container,
            "trusted": raw.trusted, "select": chosen, "selectable": available, **m.meta, "warnings": warnings}
    if refused:
        meta["refused"] = refused
    if m.stride_in_1x1:
        meta["stride_in_1x1"] = True
    name = path.name if chosen is None or not available or chosen == available[0] else f"{path.name}#{chosen}"
    return LoadedCheckpoint(
        backbone=bb, format=adapter.name, arch=bb.arch, width=bb.width, sha256=raw.sha256, path=str(path),
        name=name, heads=m.heads, preprocess=m.preprocess, meta=meta, coverage=coverage,
    )
