"""`mopro-bench data`: check a dataset layout or generate a small one in the same layout"""

from __future__ import annotations

import argparse
import json
import sys

from mopro_bench.data import KINDS

HELP = "check a dataset layout or generate a small one in the same layout"


def add_parser(sub, parents):
    p = sub.add_parser("data", parents=parents, help=HELP, description=HELP)
    dsub = p.add_subparsers(dest="data_command", metavar="{check,synth}", parser_class=type(p))
    dsub.required = True

    c = dsub.add_parser("check", parents=parents, help="verify a dataset tree and print its counts against the official sizes",
                        description="Verify the on-disk layout of a dataset: split/list files, labels in range, every "
                                    "listed image present (and decodable with --deep); counts against the official "
                                    "sizes. Exit 2 with the fix when unusable; warnings when usable but not official.")
    c.add_argument("kind", choices=KINDS, metavar="KIND", help=f"one of {', '.join(KINDS)}")
    c.add_argument("root", metavar="ROOT", help="the dataset root (what you pass to eval/pretrain with --data)")
    c.add_argument("--deep", action="store_true", help="decode every image (slow on full datasets)")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(func=run_check)

    s = dsub.add_parser("synth", parents=parents, help="write a small generated dataset in the real layout",
                        description="Generate a dataset with learnable, class-dependent images in exactly the real "
                                    "layout of KIND (deterministic by --seed). WebVision gets controlled label noise "
                                    "and out-of-distribution images; the truth goes to OUT.truth.json next to OUT.")
    s.add_argument("kind", choices=KINDS, metavar="KIND", help=f"one of {', '.join(KINDS)}")
    s.add_argument("out", metavar="OUT", help="a new or empty folder")
    s.add_argument("--scale", choices=("tiny", "small"), default="tiny",
                   help="tiny: seconds, for tests; small: the demo (default: tiny)")
    s.add_argument("--classes", type=int, help="number of classes (ImageNet family and WebVision; up to 86)")
    s.add_argument("--train-per-class", type=int, help="training images per class (webvision, imagenet, places205)")
    s.add_argument("--val-per-class", type=int, help="validation images per class (webvision, imagenet, places205)")
    s.add_argument("--per-class", type=int, help="images per class (imagenet-r, imagenet-a)")
    s.add_argument("--image-size", type=int, help="image side in pixels (square sets)")
    s.add_argument("--width", type=int, help="voc07, coco: image width in pixels")
    s.add_argument("--height", type=int, help="voc07, coco: image height in pixels")
    s.add_argument("--noise", type=float, help="webvision: fraction of training images with a flipped label (default 0.3)")
    s.add_argument("--ood", type=float, help="webvision: fraction of out-of-distribution training images (default 0.1)")
    s.add_argument("--corrupt", type=int, help="webvision: number of truncated training JPEGs (default 0)")
    s.add_argument("--trainval", type=int, help="voc07: trainval images")
    s.add_argument("--test", type=int, help="voc07: test images")
    s.add_argument("--train", type=int, help="coco: train2017 images")
    s.add_argument("--val", type=int, help="coco: val2017 images")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.set_defaults(func=run_synth)
    return p


SYNTH_OPTIONS = ("classes", "train_per_class", "val_per_class", "per_class", "image_size", "width", "height", "noise", "ood",
                 "corrupt", "trainval", "test", "train", "val")


def run_check(args: argparse.Namespace) -> int:
    from mopro_bench.data.check import check

    report = check(args.kind, args.root, deep=args.deep)
    if args.json:
        print(json.dumps({"kind": report.kind, "root": report.root, "ok": report.ok, "counts": report.counts,
                          "official": report.official, "errors": report.errors, "warnings": report.warnings,
                          "notes": report.notes}, indent=2))
    else:
        for line in report.lines():
            print(line)
    sys.stdout.flush()
    report.raise_if_unusable()
    return 0


def run_synth(args: argparse.Namespace) -> int:
    from mopro_bench.data.synth import synth

    kw = {k: getattr(args, k) for k in SYNTH_OPTIONS if getattr(args, k) is not None}
    summary = synth(args.kind, args.out, seed=args.seed, scale=args.scale, **kw)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    counts = ", ".join(f"{k} {v}" for k, v in summary["counts"].items())
    print(f"wrote {args.kind} ({args.scale}, seed {args.seed}) to {summary['root']}: {counts}")
    if "truth" in summary:
        print(f"noise truth (outside the layout): {summary['truth']}")
    for name, path in summary.get("subsets", {}).items():
        print(f"subset list {name}: {path}")
    print(f"check it with: mopro-bench data check {args.kind} {summary['root']}")
    return 0
