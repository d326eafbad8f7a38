"""Architecture inference from a trunk's shapes, and the 100%-coverage check before anything is loaded.

After an adapter has mapped a file to torchvision names (ResNets) or timm names (ViT, ConvNeXt: their configuration
is read by :func:`mopro_bench.backbones.vit.describe_vit` / :func:`~mopro_bench.backbones.convnext.describe_convnext`),
:func:`build_verified` infers a ResNet's architecture (block type
from ``layer1.0.conv3``, depth from the block counts per stage, width from ``layer1.0.conv1``'s output channels, and
a 64-channel or 64*width stem from ``conv1``), builds the
backbone and requires every parameter and buffer to be present with the right shape and nothing else under the trunk's
names. The one tolerated gap is ``num_batches_tracked`` missing from *every* BatchNorm (torchvision files saved before
PyTorch 0.4.1): those counters only matter in training with ``momentum=None``, so they are filled with 0 and reported.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from mopro_bench.backbones import (
    ARCHS,
    arch_for_blocks,
    build_backbone,
    build_family,
    check_arch,
    is_trunk_key,
    parse_any_arch,
    parse_arch,
    trunk_family,
)
from mopro_bench.backbones.resnet import ROOTS as RESNET_ROOTS
from mopro_bench.errors import BenchError

_BLOCK = re.compile(r"^layer([1-4])\.(\d+)\.")
VIT_MARKERS = ("cls_token", "pos_embed", "patch_embed.", "blocks.0.", "transformer.")
__all__ = ["build_verified", "is_trunk_key", "resolve_arch", "describe_trunk", "bad_values", "describe_bad_values"]


def first(keys, n: int = 3) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:n])
    return shown + (f", ... (+{len(keys) - n})" if len(keys) > n else "")


def arch_name(arch: str, width: int) -> str:
    return arch if width == 1 else f"{arch}x{width}"


def describe_trunk(trunk: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Block type, per-stage block counts and width read from the keys and shapes."""
    w = trunk.get("conv1.weight")
    if w is None:
        deep = [k for k in trunk if k.startswith("conv1.") and k[6:7].isdigit()]
        if deep:
            raise BenchError(f"the trunk has a deep stem ({first(deep)}): a ResNet-C/D variant (e.g. timm resnet50d), "
                             "not the torchvision ResNet this suite evaluates", "use a torchvision-layout ResNet checkpoint")
        raise BenchError("the trunk has no stem convolution conv1.weight", "pass a complete ResNet checkpoint")
    if w.ndim != 4 or w.shape[1] != 3 or tuple(w.shape[2:]) != (7, 7) or w.shape[0] % 64:
        raise BenchError(f"conv1.weight has shape {list(w.shape)}, not a torchvision ResNet stem [64*width, 3, 7, 7]",
                         "use a torchvision-layout ResNet checkpoint")
    counts = [0, 0, 0, 0]
    for k in trunk:
        m = _BLOCK.match(k)
        if m:
            s, i = int(m.group(1)) - 1, int(m.group(2))
            counts[s] = max(counts[s], i + 1)
    bottleneck = "layer1.0.conv3.weight" in trunk
    # width from the first block (64*width channels for BasicBlock and Bottleneck alike): conv1 alone cannot tell, since
    # MoPro's wide ResNets keep a 64-channel stem (model.wide_stem=false) where SimCLR/SwAV widen it to 64*width
    b1 = trunk.get("layer1.0.conv1.weight")
    width = int(b1.shape[0]) // 64 if b1 is not None and b1.ndim == 4 and b1.shape[0] % 64 == 0 else int(w.shape[0]) // 64
    stem = int(w.shape[0])
    if stem not in (64, 64 * width):
        raise BenchError(f"conv1.weight has {stem} output channels, neither 64 nor 64*width ({64 * width}) for the width "
                         f"{width} its first block has", "use a torchvision-layout ResNet checkpoint")
    return {"bottleneck": bottleneck, "blocks": tuple(counts), "width": max(width, 1), "wide_stem": stem == 64 * width,
            "arch": arch_for_blocks(bottleneck, tuple(counts))}


def _nearest_arch(bottleneck: bool, blocks: tuple[int, ...]) -> str | None:
    """The smallest supported arch of the same block type with at least ``blocks`` blocks per stage."""
    cands = [(sum(layers), name) for name, (b, layers) in ARCHS.items()
             if (b.expansion == 4) == bottleneck and all(x >= y for x, y in zip(layers, blocks))]
    return min(cands)[1] if cands else None


def resolve_arch(trunk: dict[str, torch.Tensor], arch: str | None, where: str) -> tuple[str, int, dict[str, Any]]:
    """(arch, width, description) for ``trunk``; ``arch`` (user's ``--arch``) must agree with the file."""
    d = describe_trunk(trunk)
    kind = "Bottleneck" if d["bottleneck"] else "BasicBlock"
    stem = 64 * d["width"] if d.get("wide_stem", True) else 64
    found = f"{kind} blocks {'-'.join(map(str, d['blocks']))}, first block {64 * d['width']} channels, conv1 {stem}"
    if arch:
        want, want_w = parse_arch(arch)
        check_arch(want, want_w)
        if d["arch"] is not None and (d["arch"], d["width"]) != (want, want_w):
            raise BenchError(f"--arch {arch_name(want, want_w)} disagrees with {where}: its trunk is "
                             f"{arch_name(d['arch'], d['width'])} ({found})",
                             f"drop --arch (it is inferred) or pass --arch {arch_name(d['arch'], d['width'])}")
        if d["width"] != want_w:
            raise BenchError(f"--arch {arch_name(want, want_w)} disagrees with {where}: layer1 has {64 * d['width']} channels "
                             f"(width {d['width']})", "pass the file's width, e.g. --arch resnet50x2")
        return want, want_w, d
    name = d["arch"] or _nearest_arch(d["bottleneck"], d["blocks"])
    if name is None:
        raise BenchError(f"{where} has a ResNet trunk ({found}) that matches no supported architecture",
                         "supported: " + ", ".join(ARCHS) + " (resnet50 also x2, x4, x5)")
    if d["arch"] is None:
        d["note"] = f"block counts {d['blocks']} match no architecture; checked against the nearest, {name}"
    check_arch(name, d["width"])
    return name, d["width"], d


def bad_values(sd: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """(tensors holding NaN/Inf, BatchNorm ``running_var`` tensors with a negative entry) of ``sd``.

    Either makes every feature of the network NaN or meaningless (a negative variance puts ``sqrt`` of a negative
    number, or a sign flip, into BN), so a file with any of them is refused rather than evaluated."""
    nonfinite = [k for k, v in sd.items() if v.is_floating_point() and v.numel() and not bool(torch.isfinite(v).all())]
    negative = [k for k, v in sd.items() if k.endswith("running_var") and v.numel() and bool((v < 0).any())]
    return nonfinite, negative


def describe_bad_values(nonfinite: list[str], negative_var: list[str]) -> str:
    parts = []
    if nonfinite:
        parts.append(f"{len(nonfinite)} tensor(s) hold NaN/Inf ({first(nonfinite)})")
    if negative_var:
        parts.append(f"{len(negative_var)} BatchNorm running_var tensor(s) have negative entries ({first(negative_var)})")
    return "; ".join(parts)


def _resolve_timm(trunk: dict[str, torch.Tensor], family: str, arch: str | None, where: str, adapter: str,
                  hints: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(name, config, description) of a ViT / ConvNeXt trunk; ``arch`` (``--arch``) must agree with its shapes.

    ``hints`` (from the adapter: what the file's metadata or its authors' code says): ``num_heads`` (no shape shows
    it), ``depth`` (ViT) / ``depths`` (ConvNeXt) -- when the tensors have fewer or more blocks than the file's own
    architecture name says, the network of that name is built, so the coverage check names the blocks that are
    missing (a truncated file is never loaded as a shallower network)."""
    from mopro_bench.backbones import convnext, vit

    try:
        if family == "vit":
            cfg = vit.describe_vit(trunk, num_heads=hints.get("num_heads"))
        else:
            cfg = convnext.describe_convnext(trunk)
    except BenchError as e:  # name the file and the adapter, as every other coverage error does
        raise BenchError(f"{where} (adapter {adapter}): {e.message}", e.fix) from None
    desc: dict[str, Any] = {}
    key = "depth" if family == "vit" else "depths"
    want = hints.get(key)
    if want is not None and (list(want) if family == "convnext" else want) != cfg[key]:
        desc["note"] = (f"the file's metadata says {key} {want} ({hints.get('source', 'file metadata')}) but its tensors "
                        f"have {cfg[key]}")
        cfg[key] = list(want) if family == "convnext" else int(want)
    if family == "vit":
        name, keys = vit.arch_name(cfg), ("embed_dim", "depth", "patch_size")
        desc["num_heads_source"] = hints.get("num_heads_source") or (
            "the adapter" if hints.get("num_heads") else "standard size table (ViT paper Table 1, DeiT; timm vit_*)")
    else:
        name, keys = convnext.arch_name(cfg), ("depths", "dims", "use_grn")
    if arch:
        want_family, want_cfg = parse_any_arch(arch)
        if want_family != family or any(want_cfg[k] != cfg[k] for k in keys):
            raise BenchError(f"--arch {arch} disagrees with {where}: its trunk is {name}",
                             f"drop --arch (it is inferred) or pass --arch {name}")
    return name, cfg, desc


def build_verified(trunk: dict[str, torch.Tensor], *, arch: str | None, adapter: str, where: str,
                   stride_in_1x1: bool = False, unplaced: list[str] | tuple[str, ...] = (),
                   hints: dict[str, Any] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Build the backbone for ``trunk`` and load it after checking 100% coverage; returns (backbone, coverage).

    ``unplaced``: the file's keys inside the selected network that the adapter could map neither to the trunk nor to a
    known head; they count as unexpected. ``hints``: what the adapter knows that no shape shows (a ViT's
    ``num_heads``)."""
    family = trunk_family(trunk)
    if family == "resnet" and trunk and not any(k.split(".", 1)[0] in RESNET_ROOTS for k in trunk):
        # no ResNet key at all: a ViT without its patch embedding (MoCo v3's convolutional stem, a damaged file) or a
        # ConvNeXt without its stem -- let that family's description name what is missing
        family = "convnext" if any(k.startswith("stages.") for k in trunk) else "vit"
    if family == "resnet":
        name, width, desc = resolve_arch(trunk, arch, where)
        with torch.device("meta"):  # no initialisation work: every tensor is overwritten from the file
            bb = build_backbone(name, width, stride_in_1x1=stride_in_1x1, wide_stem=desc.get("wide_stem", True))
        shown = arch_name(name, width)
        architecture = {"family": family, "arch": name, "width": width, "bottleneck": desc["bottleneck"],
                        "blocks": list(desc["blocks"]), "wide_stem": bool(desc.get("wide_stem", True)),
                        **({"note": desc["note"]} if "note" in desc else {})}
    else:
        shown, cfg, desc = _resolve_timm(trunk, family, arch, where, adapter, hints or {})
        with torch.device("meta"):
            bb = build_family(family, cfg)
        architecture = {"family": family, "arch": shown, **cfg, **desc}
    bb = bb.to_empty(device="cpu")
    expected = bb.state_dict()
    missing = [k for k in expected if k not in trunk]
    unexpected = [k for k in trunk if k not in expected] + list(unplaced)
    misshaped = [k for k in trunk if k in expected and tuple(trunk[k].shape) != tuple(expected[k].shape)]
    nbt = [k for k in expected if k.endswith("num_batches_tracked")]
    nbt_missing = [k for k in missing if k.endswith("num_batches_tracked")]
    filled: list[str] = []
    if nbt_missing and len(nbt_missing) == len(nbt):
        filled = nbt_missing
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            real = [k for k in missing if not k.endswith("num_batches_tracked")] + \
                   [k for k in missing if k.endswith("num_batches_tracked")]
            parts.append(f"{len(missing)} missing ({first(real)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({first(unexpected)})")
        if misshaped:
            k = misshaped[0]
            more = f" and {len(misshaped) - 1} more" if len(misshaped) > 1 else ""
            parts.append(f"{len(misshaped)} mis-shaped ({k}: file {list(trunk[k].shape)} vs {list(expected[k].shape)}{more})")
        raise BenchError(
            f"{where} (adapter {adapter}) does not match {shown}: " + ", ".join(parts)
            + (f" [{desc['note']}]" if "note" in desc else ""),
            "the file is incomplete (compare its sha256 with the published one) or holds another architecture; "
            "it is never loaded partially",
        )
    full = dict(trunk)
    for k in filled:
        full[k] = torch.zeros((), dtype=torch.long)
    nonfloat = [k for k, v in full.items() if expected[k].is_floating_point() and not v.is_floating_point()]
    if nonfloat:
        raise BenchError(f"{where} (adapter {adapter}): {first(nonfloat)} hold integers where weights are expected",
                         "the file is not a trained network checkpoint")
    bb.load_state_dict(full, strict=True)
    bb.eval()
    nonfinite, negative_var = bad_values(full)
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in trunk.values() if v.is_floating_point()})
    params = dict(bb.named_parameters())
    coverage = {
        "adapter": adapter,
        "loaded": len(trunk),
        "expected": len(expected),
        "parameters": sum(1 for k in trunk if k in params),
        "buffers": sum(1 for k in trunk if k not in params),
        "parameter_count": sum(p.numel() for p in params.values()),
        "filled": filled,
        "percent": 100.0,
        "file_dtypes": dtypes,
        "nonfinite": nonfinite,  # tensors holding NaN/Inf: load_file refuses the file (inspect reports them)
        "negative_var": negative_var,  # BatchNorm running_var with a negative entry: refused the same way
        "architecture": architecture,
    }
    return bb, coverage
