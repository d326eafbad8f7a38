"""`mopro-bench env`: versions, devices, and whether each optional part is usable."""

from __future__ import annotations

import json

from mopro_bench.envinfo import collect


def add_parser(sub, parents):
    p = sub.add_parser("env", parents=parents, help="print versions, devices and which optional parts are usable",
                       description="Print Python/torch/torchvision/CUDA/GPU versions, the optional packages, and "
                                   "which detectron2 is installed (official build or Python-only wheel).")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    d2 = info.pop("detectron2")
    for k, v in info.items():
        if isinstance(v, list):
            v = ", ".join(v) or "none"
        print(f"{k:<16} {v}")
    if d2["installed"]:
        print(f"{'detectron2':<16} {d2['version']} [{d2['variant']}]")
    else:
        print(f"{'detectron2':<16} not installed")
    print(f"{'':<16} {d2['note']}")
    print(f"{'usable':<16} pretrain: yes ({'GPU' if info['cuda_available'] else 'CPU only'}); "
          f"low-shot/ImageNet/robustness tasks: yes; coco_maskrcnn: {'yes' if d2.get('usable', d2['installed']) else 'no'}; "
          f"multi-GPU: {'NCCL' if info['nccl_available'] and info['cuda_available'] else 'gloo (CPU) only'}")
    return 0
