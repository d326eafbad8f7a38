"""End-to-end MoPro pretraining throughput (images/s) with JPEG decoding and both augmentations.

The input pipeline is the trainer's: a generated WebVision-layout tree (``mopro_bench.data.synth``; square JPEGs of
``--source-size`` px, default 296 on CUDA = about the pixel count of a WebVision "resized" image, 256 px on the
short side), ``WebVisionTrain`` + ``TwoViews`` (weak: RandomResizedCrop + flip; strong: + ColorJitter + grayscale)
inside ``SeededDataset``, ``GlobalBatchSampler`` and a ``DataLoader`` with the trainer's settings; the file list
cycles over the generated images to make enough batches. Rows:

    loader   the DataLoader alone (decode, two augmented views, copy to the device): the input pipeline's ceiling
    trainer  loader + the trainer's step (bf16 + channels_last on CUDA, fp32 on CPU)
    naive    loader + the naive step of bench_step.py (fp32, per-sample prototype loop, out-of-place EMA)

With W > 0 workers each worker makes whole batches, so the clock starts after the first W batches (all workers
busy) and runs a multiple of W batches (complete rounds); the ratio column is against ``naive``.

    python benchmarks/bench_e2e.py                          # CUDA: resnet50, 224 px, batch 256, workers = cores
    python benchmarks/bench_e2e.py --device cpu --threads 1  # CPU: resnet18, 64 px, batch 32, 1 worker
"""

from __future__ import annotations

import argparse
import gc
import os

import _common as C
import torch
from _mopro import build
from torch.utils.data import DataLoader

from mopro_bench.data.webvision import MAX_CLASSES, WebVision, WebVisionTrain
from mopro_bench.pretrain.data import GlobalBatchSampler, SeededDataset, TwoViews
from mopro_bench.runtime import resolve_device

ROWS = ("loader", "trainer", "naive")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--arch", help="default resnet50 (CUDA) / resnet18 (CPU)")
    ap.add_argument("--image-size", type=int, help="crop size; default 224 (CUDA) / 64 (CPU)")
    ap.add_argument("--batch", type=int, help="default 256 (CUDA) / 32 (CPU)")
    ap.add_argument("--workers", type=int, help="DataLoader workers; default: all cores (CUDA) / 1 (CPU)")
    ap.add_argument("--steps", type=int, help="timed steps, rounded up to whole rounds of the workers; default 4 rounds (CPU: 4)")
    ap.add_argument("--warmup", type=int, help="untimed steps first (at least one per worker); default 3 (CUDA) / 1 (CPU)")
    ap.add_argument("--source-size", type=int, help="side of the generated JPEGs; default 296 (CUDA) / 80 (CPU)")
    ap.add_argument("--unique", type=int, help="generated JPEGs (the list cycles over them); default 2048 (CUDA) / 64 (CPU)")
    ap.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    ap.add_argument("--set", action="append", metavar="FIELD=VALUE", help="any pretrain config field")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads of the main process (0: torch default)")
    args = ap.parse_args(argv)
    C.set_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    cfg = C.pretrain_config(device, args)
    workers = C.pick(device, 1, os.cpu_count() or 1, args.workers)
    rnd = max(1, workers)
    warmup = max(C.pick(device, 1, 3, args.warmup), workers)
    steps = C.pick(device, 4, 4 * rnd, args.steps)
    steps = -(-steps // rnd) * rnd
    B = cfg.data.batch_size
    root = C.webvision_root(C.pick(device, 64, 2048, args.unique), C.pick(device, 80, 296, args.source_size))
    ds = WebVision(root, num_class=MAX_CLASSES)
    base = [(r, y) for r, y in ds.train_samples() if y < cfg.model.num_class]
    samples = C.cycle(base, B * (warmup + steps))
    C.header("MoPro end-to-end pretraining (JPEG decode + two augmented views + step)", device, arch=cfg.model.arch,
             image_size=cfg.aug.image_size, batch=B, workers=workers, cpu_cores=os.cpu_count(), warmup=warmup,
             steps=steps, source=f"{len(base)} generated {ds.root.name} JPEGs", pin_memory=cuda and cfg.data.pin_memory)

    def loader() -> DataLoader:
        dataset = SeededDataset(WebVisionTrain(samples, TwoViews(cfg.aug), root=ds.root), cfg.run.seed)
        sampler = GlobalBatchSampler(len(samples), B, 0, 1, cfg.run.seed)
        sampler.set_epoch(0)
        return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=cuda and cfg.data.pin_memory,
                          persistent_workers=False)

    epoch = cfg.mopro.start_clean_epoch
    rows = []
    for name in args.rows:
        C.reset_peak(device)
        s = None if name == "loader" else build(cfg, device, "naive" if name == "naive" else ("bf16" if cuda else "fp32"))
        it = iter(loader())

        def one(i, s=s, it=it):
            views, target, _ = next(it)
            x_q = views[0].to(device, torch.float32, non_blocking=True)
            x_k = views[1].to(device, torch.float32, non_blocking=True)
            target = target.to(device, non_blocking=True)
            if s is None:
                return None
            return s.step(x_q, x_k, target, epoch=epoch, step=i)

        secs, stats = C.timed(one, warmup, steps, device)
        row = {"row": name, "img_s": B * steps / secs, "ms": 1000 * secs / steps, "peak": C.peak_gib(device)}
        if s is not None:
            st = torch.stack(stats)
            prec = "bf16 autocast" + (" + channels_last" if s.env.channels_last else "") if s.env.amp_dtype else "fp32"
            row.update(kept=100.0 * float(st[warmup:, 6].sum() / st[warmup:, 5].sum()), loss1=float(st[0, 0]),
                       what=f"loader + {'naive' if s.variant == 'naive' else 'trainer'} step, {prec}")
        else:
            row["what"] = "DataLoader only (decode, 2 views, copy to device)"
        rows.append(row)
        del s, it, stats, one  # `one` holds the model and the loader's workers
        gc.collect()
    base_rate = next((r["img_s"] for r in rows if r["row"] == "naive"), None)
    for r in rows:
        r["ratio"] = r["img_s"] / base_rate if base_rate else None
    C.table(rows, [("row", "row", ""), ("img_s", "img/s", ".1f"), ("ms", "ms/step", ".1f"), ("ratio", "x naive", ".2f"),
                   ("peak", "peak GiB", ".2f"), ("kept", "kept %", ".0f"), ("loss1", "loss@1", ".5f"), ("what", "what", "")])
    return 0


if __name__ == "__main__":
    C.run_main(main)
