"""`mopro-bench inspect`: show a checkpoint's format, architecture, heads, sha256 and coverage."""

from __future__ import annotations

import json

HELP = "show a checkpoint's format, architecture, heads, sha256 and coverage"
DESCRIPTION = """Load a checkpoint the way `eval` does -- detect its layout, map it to torchvision ResNet names or timm names
(ViT, ConvNeXt), verify that every backbone parameter and buffer is present with the right shape -- and report what was
found: detected format, backbone family, architecture and width (a ViT's heads), parameter count, heads (with their
class space), sha256, input preprocessing and coverage (what was loaded, filled, kept as a head or left out).
Nothing is loaded partially: a file that does not cover the backbone is an error naming the first offending keys. A
file whose backbone holds NaN/Inf values or negative BatchNorm running variances is reported in full, with every bad
tensor listed and the line "refused" (what `eval` would say), and inspect exits with 2. `--formats` lists the
adapters."""


def add_checkpoint_args(p, required: bool = True) -> None:
    p.add_argument("--ckpt", required=required,
                   help="checkpoint file (or FILE#NETWORK, or random:ARCH); layout is detected")
    p.add_argument("--arch", help="expected architecture (resnet18..152, resnet50x2/x4/x5, vit_small_patch16_224, "
                                  "convnext_tiny, ...); inferred when omitted, "
                                  "an error when it disagrees with the file")
    p.add_argument("--select", help="network in files that hold several: encoder_q (default) / encoder_k (MoPro, MoCo, "
                                    "PCL), base_encoder / momentum_encoder (MoCo v3), teacher (default) / student (DINO), "
                                    "state_dict / state_dict_ema (timm), model / model_ema (ConvNeXt, wrapped timm)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a checkpoint that needs arbitrary pickled code (only for files you trust)")


def add_parser(sub, parents):
    p = sub.add_parser("inspect", parents=parents, help=HELP, description=DESCRIPTION)
    add_checkpoint_args(p, required=False)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--formats", action="store_true", help="list the checkpoint adapters and exit")
    p.set_defaults(func=run)
    return p


def load_from_args(args, check_values: bool = True):
    from mopro_bench.checkpoints import choose_network, load_checkpoint
    from mopro_bench.hub import resolve_checkpoint

    r = resolve_checkpoint(args.ckpt, cache_dir=args.cache_dir)  # zoo:NAME / URL -> cached, verified file
    select, name = choose_network(args.select, args.ckpt, r.select, r.name)
    return load_checkpoint(r.path, arch=args.arch, trust=args.trust_checkpoint, select=select, seed=args.seed,
                           name=name, check_values=check_values)


def report(ck) -> dict:
    from mopro_bench.checkpoints.formats.base import jsonable

    bb = ck.backbone
    heads = {}
    for k, h in ck.heads.items():
        heads[k] = {**h.summary(), "description": h.description}
    return {
        "path": ck.path,
        "name": ck.name,
        "sha256": ck.sha256,
        "format": ck.format,
        "adapter_description": ck.meta.get("adapter_description") or ("untrained baseline" if ck.format == "random" else ""),
        "container": ck.meta.get("container"),
        "select": ck.meta.get("select"),
        "selectable": ck.meta.get("selectable", []),
        "family": ck.family,
        "arch": ck.arch,
        "width": ck.width,
        "feature_dim": bb.feature_dim,
        "feature": getattr(bb, "feature", None),
        "supports_detection": bool(getattr(bb, "supports_detection", False)),
        "parameter_count": bb.num_parameters,
        "stride_in_1x1": bool(getattr(bb, "stride_in_1x1", False)),
        "preprocess": ck.record()["preprocess"],
        "heads": heads,
        "coverage": jsonable(ck.coverage),
        "meta": jsonable({k: v for k, v in ck.meta.items() if k not in ("adapter_description", "selectable")}),
        "warnings": list(ck.meta.get("warnings", [])),
        "refused": ck.meta.get("refused"),  # why eval would refuse the file (non-finite values, negative BN variance)
    }


def _fmt_head(name: str, h: dict) -> str:
    shapes = ", ".join(f"{k} {v}" for k, v in list(h["shapes"].items())[:2])
    more = f", ... ({len(h['shapes'])} tensors)" if len(h["shapes"]) > 2 else ""
    if h["kind"] == "classifier":
        what = f"{h['num_classes']} classes, class space {h['class_space']}"
    elif h["kind"] == "prototypes" and h.get("num_classes"):
        what = f"{h['num_classes']} prototypes" + (f", class space {h['class_space']}" if h.get("class_space") else "")
    else:
        what = h.get("description") or h["kind"]
    return f"{name}: {what}; {shapes}{more}"


def print_text(r: dict) -> None:
    cov = r["coverage"]
    pre = r["preprocess"]
    if r.get("family") == "resnet":
        width = f"width {r['width']}" + (", stride in 1x1 (MSRA)" if r["stride_in_1x1"] else "")
    else:  # a ViT's heads (no shape shows them) from the coverage report's architecture
        heads = (cov.get("architecture") or {}).get("num_heads")
        width = f"family {r.get('family')}" + (f", {heads} heads" if heads else "")
    others = [n for n in r["selectable"] if n != r["select"]]
    sel = f" (network {r['select']}; --select {' / '.join(others)} for the other)" if r["selectable"] else ""
    rows = [
        ("checkpoint", r["path"]),
        ("sha256", r["sha256"] or "- (random init)"),
        ("format", f"{r['format']}{sel}: {r['adapter_description']} ({r['container'] or 'generated'})"),
        ("arch", f"{r['arch']} ({width}), {r['parameter_count'] / 1e6:.2f}M parameters, {r['feature_dim']}-d feature"),
        ("preprocess", f"{pre['channel_order']}, pixels 0..{pre['scale']:g}, mean {tuple(round(x, 4) for x in pre['mean'])}, "
                       f"std {tuple(round(x, 4) for x in pre['std'])}"),
    ]
    if r["heads"]:
        rows += [("heads" if i == 0 else "", _fmt_head(k, h)) for i, (k, h) in enumerate(r["heads"].items())]
    else:
        rows.append(("heads", "none"))
    if r["format"] == "random":
        rows.append(("coverage", f"nothing loaded: {cov.get('note', 'random init')}"))
    else:
        n_fill = len(cov["filled"])
        filled = f"; filled {n_fill} num_batches_tracked (absent in the file, unused in eval)" if n_fill else ""
        if cov.get("derived"):
            filled += f"; {len(cov['derived'])} BN running statistics derived from frozen (affine) BN (same function)"
        rows.append(("coverage", f"{cov['loaded']}/{cov['expected']} backbone tensors ({cov['parameters']} parameters, "
                                 f"{cov['buffers']} buffers) = 100%{filled}; file dtypes {', '.join(cov['file_dtypes'])}"))
        ign = cov.get("ignored") or {}
        if ign:
            rows.append(("not used", ", ".join(f"{k} ({v} tensors)" if isinstance(v, int) else f"{k} ({v})"
                                               for k, v in ign.items())))
    meta = r["meta"]
    for key in ("source", "epoch", "arch_in_file", "author", "preprocess_source"):
        if key == "preprocess_source" and any(str(meta.get(key)) in w for w in r["warnings"]):
            continue
        if meta.get(key) not in (None, ""):
            rows.append((key.replace("_", " "), str(meta[key])))
    for w in r["warnings"]:
        rows.append(("warning", w))
    if r.get("refused"):
        bad = cov.get("nonfinite", []) + cov.get("negative_var", [])
        rows.append(("refused", f"eval would refuse this file: {r['refused']}"))
        rows += [("", f"{k}: {'NaN/Inf' if k in cov.get('nonfinite', []) else 'negative running variance'}")
                 for k in bad[:20]] + ([("", f"... and {len(bad) - 20} more")] if len(bad) > 20 else [])
    for k, v in rows:
        print(f"{k:<12} {v}")


def run(args) -> int:
    from mopro_bench.errors import BenchError

    if args.formats:
        from mopro_bench.checkpoints.formats import adapters

        for a in adapters():
            print(f"{a.name:<12} {a.description}")
        print(f"{'random':<12} random:ARCH -- an explicitly untrained baseline (e.g. random:resnet50x2)")
        return 0
    if not args.ckpt:
        raise BenchError("inspect needs --ckpt", "e.g. `mopro-bench inspect --ckpt moco_v2_800ep_pretrain.pth.tar`")
    r = report(load_from_args(args, check_values=False))
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print_text(r)
    return 2 if r["refused"] else 0
