"""MoPro pretraining step throughput (images/s) on synthetic in-memory batches: the trainer vs a faithful naive step.

A step is everything :func:`mopro_bench.pretrain.trainer.mopro_step` does: query encoder forward, EMA of the key
encoder, shuffled-BN keys, instance + prototype logits, noise cleaning, enqueue, prototype update, the three losses,
backward and the SGD step. Batches are random tensors already on the device (no decoding: see bench_e2e.py for
that); the epoch is ``mopro.start_clean_epoch`` so that cleaning and the prototypical loss are on, and every class
already has a prototype. Variants (see benchmarks/_mopro.py):

    naive    fp32 NCHW, per-sample prototype loop, out-of-place EMA, torch.optim.SGD defaults
    fp32     the trainer's step, fp32 (the CPU default)
    bf16     the trainer's step, bf16 autocast + channels_last (the CUDA default)
    compile  bf16 + torch.compile of the query encoder (--set run.compile=true)

The ratio column is against ``naive`` from the same run. ``loss@1`` is the first step's loss: every variant starts
from the same weights and batch, so fp32 must match naive to rounding, bf16 to about 1e-2.

    python benchmarks/bench_step.py                                   # CUDA: resnet50, 224 px, batch 256
    python benchmarks/bench_step.py --variants naive bf16 compile
    python benchmarks/bench_step.py --device cpu --threads 1           # CPU: resnet18, 64 px, batch 32, 5 steps
    torchrun --standalone --nproc-per-node 1 benchmarks/bench_step.py --ddp --variants bf16   # the DDP path
"""

from __future__ import annotations

import argparse
import gc

import _common as C
import torch
from _mopro import VARIANTS, build, synthetic_batches

from mopro_bench.errors import BenchError
from mopro_bench.runtime import cleanup_distributed, init_distributed


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--arch", help="default resnet50 (CUDA) / resnet18 (CPU)")
    ap.add_argument("--image-size", type=int, help="default 224 (CUDA) / 64 (CPU)")
    ap.add_argument("--batch", type=int, help="global batch; default 256 (CUDA) / 32 (CPU)")
    ap.add_argument("--steps", type=int, help="timed steps; default 20 (CUDA) / 5 (CPU)")
    ap.add_argument("--warmup", type=int, help="untimed steps first; default 5, 15 with compile (CUDA) / 1 (CPU)")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), help="default naive fp32 bf16 (CUDA) / naive fp32 (CPU)")
    ap.add_argument("--set", action="append", metavar="FIELD=VALUE", help="a pretrain config field, e.g. mopro.queue_size=16384")
    ap.add_argument("--ddp", action="store_true", help="wrap the query encoder in DDP (needs torchrun, any number of processes)")
    ap.add_argument("--cudnn-benchmark", action="store_true",
                    help="set torch.backends.cudnn.benchmark = True (the trainer does not)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    C.set_threads(args.threads)
    info, device = init_distributed(args.device)
    if args.ddp and not info.distributed:
        raise BenchError("--ddp needs a process group", "run under torchrun --standalone --nproc-per-node N")
    cuda = device.type == "cuda"
    torch.backends.cudnn.benchmark = bool(args.cudnn_benchmark)
    variants = args.variants or (["naive", "fp32", "bf16"] if cuda else ["naive", "fp32"])
    if info.world_size > 1 and "naive" in variants:
        variants = [v for v in variants if v != "naive"]  # the naive step is single-process
    cfg = C.pretrain_config(device, args)
    steps = C.pick(device, 5, 20, args.steps)
    world, rank = info.world_size, info.rank
    local = cfg.data.batch_size // world
    epoch = cfg.mopro.start_clean_epoch
    if rank == 0:
        C.header("MoPro pretraining step (synthetic in-memory batches)", device, arch=cfg.model.arch,
                 image_size=cfg.aug.image_size, global_batch=cfg.data.batch_size, processes=world,
                 ddp=args.ddp, queue=cfg.mopro.queue_size, classes=cfg.model.num_class, steps=steps,
                 cudnn_benchmark=args.cudnn_benchmark)
    batches = synthetic_batches(cfg, device, local, seed=cfg.run.seed + rank)
    rows = []
    for v in variants:
        warmup = C.pick(device, 1, 15 if v == "compile" else 5, args.warmup)
        C.reset_peak(device)
        s = build(cfg, device, v, world=world, rank=rank, ddp=args.ddp)

        def one(i, s=s):
            x_q, x_k, y = batches[i % len(batches)]
            return s.step(x_q, x_k, y, epoch=epoch, step=i)

        secs, stats = C.timed(one, warmup, steps, device)
        st = torch.stack(stats)
        rows.append({"variant": v, "what": VARIANTS[v], "img_s": cfg.data.batch_size * steps / secs,
                     "ms": 1000 * secs / steps, "peak": C.peak_gib(device), "bn": s.bn_splits,
                     "kept": 100.0 * float(st[warmup:, 6].sum() / st[warmup:, 5].sum()), "loss1": float(st[0, 0])})
        del s, stats, one  # `one` holds the model: free it before the next variant is built
        gc.collect()
    base = next((r["img_s"] for r in rows if r["variant"] == "naive"), None)
    for r in rows:
        r["ratio"] = r["img_s"] / base if base else None
    if rank == 0:
        C.table(rows, [("variant", "variant", ""), ("img_s", "img/s", ".1f"), ("ms", "ms/step", ".1f"),
                       ("ratio", "x naive", ".2f"), ("peak", "peak GiB", ".2f"), ("kept", "kept %", ".0f"),
                       ("loss1", "loss@1", ".5f"), ("what", "what", "")])
    cleanup_distributed()
    return 0


if __name__ == "__main__":
    C.run_main(main)
