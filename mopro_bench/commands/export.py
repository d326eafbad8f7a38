"""`mopro-bench export`: export a checkpoint's backbone as a torchvision / timm state dict or detectron2 pickle."""

from __future__ import annotations

from pathlib import Path

from mopro_bench.commands.inspect import add_checkpoint_args, load_from_args

HELP = "export a checkpoint's backbone as a torchvision / timm state dict or a detectron2 pickle"
DESCRIPTION = """Load and verify a checkpoint (any supported layout; a file, zoo:NAME or an https:// URL, see `mopro-bench
zoo`), then write its backbone as
`--format torchvision`: a bare state dict with torchvision.models.resnet* names (no fc unless --with-classifier), or
`--format detectron2`: a .pkl {model: {stem.*, res2..res5.*: numpy}, __author__: "mopro-bench",
matching_heuristics: True} plus the input preprocessing, which `mopro-bench` honours when it reads the file back
(both ResNet only), or
`--format timm`: a bare state dict in timm's names for any family (ViT, ConvNeXt, ResNet), loading strictly into
`timm.create_model(ARCH, num_classes=0)` (with --with-classifier: `num_classes=N`; ViT head, ConvNeXt head.fc).
The detectron2 config values that match the checkpoint are printed."""


def add_parser(sub, parents):
    p = sub.add_parser("export", parents=parents, help=HELP, description=DESCRIPTION)
    add_checkpoint_args(p)
    p.add_argument("--format", required=True, choices=["torchvision", "detectron2", "timm"], help="output format")
    p.add_argument("--out", required=True, help="output file (.pth for torchvision / timm, .pkl for detectron2)")
    p.add_argument("--with-classifier", action="store_true",
                   help="torchvision / timm: include the checkpoint's classifier (fc; ViT head; ConvNeXt head.fc)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from mopro_bench.checkpoints.detectron2 import d2_pixel_config
    from mopro_bench.checkpoints.export import export
    from mopro_bench.errors import BenchError
    from mopro_bench.io import sha256_file

    out = Path(args.out)
    if out.is_dir():
        raise BenchError(f"--out {out} is a directory", "give a file name, e.g. --out backbone.pkl")
    ck = load_from_args(args)  # zoo:NAME and URLs resolve to the verified file in the cache first
    if ck.format != "random" and out.exists() and out.resolve() == Path(ck.path).resolve():
        raise BenchError(f"--out {out} is the checkpoint being exported", "write to another file")
    export(ck, args.format, out, with_classifier=args.with_classifier)
    n = len(ck.backbone.state_dict())
    shape = f"{ck.arch} width {ck.width}" if ck.family == "resnet" else f"{ck.family} {ck.arch}"
    print(f"wrote {out} ({args.format}, {shape}, from {ck.format} {ck.name}, {n} backbone tensors)")
    print(f"sha256 {sha256_file(out)}")
    pre = ck.preprocess
    if args.format == "detectron2":
        cfg = d2_pixel_config(pre)
        stride = bool(getattr(ck.backbone, "stride_in_1x1", False))
        print("detectron2 config: " + " ".join(f"{k} {v}" for k, v in cfg.items())
              + f" MODEL.RESNETS.STRIDE_IN_1X1 {stride} MODEL.RESNETS.DEPTH {ck.arch.replace('resnet', '')}"
              + (f" MODEL.RESNETS.WIDTH_PER_GROUP {64 * ck.width} MODEL.RESNETS.RES2_OUT_CHANNELS "
                 f"{ck.backbone.stage_channels['res2']}" if ck.width != 1 else ""))
    elif (pre.channel_order, pre.scale) != ("RGB", 1.0):
        print(f"note: this backbone expects {pre.channel_order} input in 0..{pre.scale:g} with mean {pre.mean} std {pre.std}; "
              f"a {args.format} state dict does not record that")
    return 0
