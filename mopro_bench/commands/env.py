"""`mopro-bench env`: versions, devices, whether each optional part is usable, and the configured dataset roots."""

from __future__ import annotations

import json

from mopro_bench.envinfo import collect, data_status

DESCRIPTION = """Print Python/torch/torchvision/CUDA/GPU versions, the optional packages, which detectron2 is installed
(official build or Python-only wheel), and for every dataset kind the root `eval` would use (from --data KIND=PATH or
the config file: ./mopro-bench.toml, else $XDG_CONFIG_HOME/mopro-bench/config.toml) and whether it passes
`mopro-bench data check` (without --deep; --no-data-check skips that)."""


def add_parser(sub, parents):
    p = sub.add_parser("env", parents=parents, help="print versions, devices, usable optional parts and dataset roots",
                       description=DESCRIPTION)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--config", metavar="FILE", help="config file to read instead of the default search")
    p.add_argument("--data", action="append", metavar="KIND=PATH", help="a dataset root, as `eval --data` takes it")
    p.add_argument("--no-data-check", action="store_true", help="list the dataset roots without checking them")
    p.set_defaults(func=run)
    return p


def _roots(args):
    from mopro_bench.config import DataRoots, load_user_config
    from mopro_bench.errors import BenchError

    roots = DataRoots.from_args(args.data, load_user_config(args.config))
    if roots.plain is not None:
        raise BenchError(f"--data {roots.plain} does not say which dataset it is", "write --data KIND=PATH, e.g. voc07=PATH")
    return roots


def run(args) -> int:
    roots = _roots(args)
    info = collect()
    data = data_status(roots, check=not args.no_data_check)
    if args.json:
        print(json.dumps({**info, "config_file": str(roots.config.path) if roots.config.path else None, "data": data},
                         indent=2))
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
    print()
    print(f"{'config file':<16} {roots.config.path or 'none (./mopro-bench.toml or ' + str(_user_path()) + ')'}")
    for kind, e in data.items():
        if e["root"] is None:
            print(f"data {kind:<11} not set")
            continue
        print(f"data {kind:<11} {e['status']:<20} {e['root']}  (from {e['source']})")
        if e["message"]:
            print(f"{'':<16} {e['message']}")
    return 0


def _user_path():
    from mopro_bench.config import user_config_path

    return user_config_path()
