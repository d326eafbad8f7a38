"""Momentum-prototype update: the vectorised update vs the per-sample Python loop, at the global batch of a
multi-GPU run (default 1024 = 4 x 256, 1000 classes, 128-d embeddings, m = 0.999).

Both come from :mod:`mopro_bench.pretrain.prototypes` (``update_prototypes`` and ``update_prototypes_sequential``,
the reference's loop) and are timed on every available device (CPU always, CUDA when present) for both
normalisation modes (``batch``: the reference code; ``sample``: the paper's Eq. 5). Labels are drawn uniformly over
the classes; ``--kept`` keeps that fraction of the batch (noise cleaning drops the rest). ``max abs diff`` is the largest
difference between the two results (they must agree to float32 rounding).

    python benchmarks/bench_proto.py
    python benchmarks/bench_proto.py --batch 4096 --num-class 1000 --norm batch
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import _common as C
import torch
import torch.nn.functional as F

from mopro_bench.pretrain.prototypes import update_prototypes, update_prototypes_sequential


def time_fn(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of ``repeats`` calls after one untimed call."""
    fn()
    times = []
    for _ in range(repeats):
        C.sync(device)
        t0 = time.perf_counter()
        fn()
        C.sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=1024, help="global batch (gathered embeddings)")
    ap.add_argument("--num-class", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--m", type=float, default=0.999)
    ap.add_argument("--kept", type=float, default=1.0, help="fraction of the batch kept by noise cleaning")
    ap.add_argument("--norm", nargs="+", default=["batch", "sample"], choices=["batch", "sample"])
    ap.add_argument("--devices", nargs="+", help="default: cpu and cuda when available")
    ap.add_argument("--repeats", type=int, default=20, help="timed calls of the vectorised update")
    ap.add_argument("--loop-repeats", type=int, default=3, help="timed calls of the per-sample loop")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    C.set_threads(args.threads)
    devices = [torch.device(d) for d in (args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else [])))]
    C.header("Prototype update: vectorised vs per-sample loop", devices[-1], batch=args.batch, classes=args.num_class,
             dim=args.dim, m=args.m, kept=args.kept, cpu_threads=torch.get_num_threads())
    g = torch.Generator().manual_seed(args.seed)
    n = max(1, round(args.batch * args.kept))
    protos = F.normalize(torch.randn(args.num_class, args.dim, generator=g), dim=1)
    feats = F.normalize(torch.randn(n, args.dim, generator=g), dim=1)
    labels = torch.randint(0, args.num_class, (n,), generator=g)
    rows = []
    for dev in devices:
        p, z, y = protos.to(dev), feats.to(dev), labels.to(dev)
        for norm in args.norm:
            def vec(p=p, z=z, y=y, norm=norm):
                return update_prototypes(p, z, y, args.m, norm)

            def loop(p=p, z=z, y=y, norm=norm):
                return update_prototypes_sequential(p, z, y, args.m, norm)

            t_vec, t_loop = time_fn(vec, args.repeats, dev), time_fn(loop, args.loop_repeats, dev)
            diff = float((vec() - loop()).abs().max())
            rows.append({"device": C.device_name(dev) if dev.type == "cuda" else "cpu", "norm": norm, "n": n,
                         "vec_ms": 1000 * t_vec, "loop_ms": 1000 * t_loop, "ratio": t_loop / t_vec,
                         "rounds": int(torch.bincount(labels).max()) if norm == "sample" else 1, "diff": diff})
    C.table(rows, [("device", "device", ""), ("norm", "norm", ""), ("n", "samples", "d"), ("vec_ms", "vectorised ms", ".3f"),
                   ("loop_ms", "loop ms", ".2f"), ("ratio", "x loop", ".1f"), ("rounds", "rounds", "d"),
                   ("diff", "max abs diff", ".1e")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
