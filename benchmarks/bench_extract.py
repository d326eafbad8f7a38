"""Feature extraction for evaluation (images/s): JPEG decode + Resize/CenterCrop + pooled backbone features.

The images are generated VOC07-layout JPEGs (``mopro_bench.data.synth``) of ``--source-size`` (default 500x375 on
CUDA, the typical VOC / ImageNet-val photo); the list cycles over them to ``--images``. Rows:

    loader   the DataLoader alone (ImageList + eval_transform, the workers, copy to the device): decode ceiling
    network  the backbone alone on an in-memory batch, as the project runs it (eval, fp32, channels_last on CUDA)
    project  mopro_bench.features.extract_features(...) with an empty cache: the call a task makes, start to end
             (DataLoader start-up, the .npy cache write)
    naive    the same loop written plainly: fp32 NCHW, no pinned memory, blocking copies
    bf16     (CUDA only, not the project's path) the project loop under bf16 autocast: what bf16 features would give

The ratio column is against ``naive``; ``max rel diff`` compares each row's features with the naive ones.

    python benchmarks/bench_extract.py                          # CUDA: resnet50, 224 px, 8192 images, batch 256
    python benchmarks/bench_extract.py --device cpu --threads 1  # CPU: resnet18, 112 px, 128 images, batch 32
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import _common as C
import numpy as np
import torch
from torch.utils.data import DataLoader

from mopro_bench.checkpoints import load_checkpoint
from mopro_bench.data.common import ImageList, eval_transform
from mopro_bench.errors import BenchError
from mopro_bench.features import extract_features
from mopro_bench.registry import RunContext
from mopro_bench.runtime import resolve_device

ROWS = ("loader", "network", "project", "naive", "bf16")


@torch.no_grad()
def plain_loop(model, loader, device, channels_last: bool, amp: bool) -> np.ndarray:
    out = []
    for x, _, _ in loader:
        x = x.to(device, non_blocking=channels_last)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, torch.bfloat16, enabled=amp):
            out.append(model(x).float().cpu())
    return torch.cat(out).numpy()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--arch", help="backbone (random weights); default resnet50 (CUDA) / resnet18 (CPU)")
    ap.add_argument("--image-size", type=int, help="crop size; default 224 (CUDA) / 112 (CPU)")
    ap.add_argument("--batch", type=int, help="default 256 (CUDA) / 32 (CPU)")
    ap.add_argument("--workers", type=int, help="DataLoader workers; default all cores (CUDA) / 1 (CPU)")
    ap.add_argument("--images", type=int, help="images per pass; default 8192 (CUDA) / 128 (CPU)")
    ap.add_argument("--unique", type=int, help="generated JPEGs; default 1000 (CUDA) / 64 (CPU)")
    ap.add_argument("--source-size", nargs=2, type=int, metavar=("W", "H"), help="default 500 375 (CUDA) / 250 188 (CPU)")
    ap.add_argument("--rows", nargs="+", choices=ROWS)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads of the main process (0: torch default)")
    args = ap.parse_args(argv)
    C.set_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    arch = C.pick(device, "resnet18", "resnet50", args.arch)
    size = C.pick(device, 112, 224, args.image_size)
    batch = C.pick(device, 32, 256, args.batch)
    workers = C.pick(device, 1, os.cpu_count() or 1, args.workers)
    n = C.pick(device, 128, 8192, args.images)
    w, h = C.pick(device, (250, 188), (500, 375), args.source_size)
    rows_wanted = args.rows or [r for r in ROWS if cuda or r != "bf16"]
    if "bf16" in rows_wanted and not cuda:
        raise BenchError("the bf16 row needs a CUDA device", "drop bf16 from --rows")
    files = C.voc_images(C.pick(device, 64, 1000, args.unique), w, h)
    paths = C.cycle(files, n)
    ck = load_checkpoint(f"random:{arch}")
    C.header("Feature extraction (decode + Resize/CenterCrop + pooled features)", device, arch=arch, image_size=size,
             batch=batch, workers=workers, cpu_cores=os.cpu_count(), images=n, source=f"{len(files)} JPEGs {w}x{h}")
    model = ck.backbone.to(device).eval()
    if cuda:  # the project's extraction warms up here too: cuDNN's first calls are not what we measure
        with torch.no_grad():
            model.to(memory_format=torch.channels_last)(torch.randn(batch, 3, size, size, device=device).contiguous(
                memory_format=torch.channels_last))
        C.sync(device)
    transform = eval_transform(size, pre=ck.preprocess)

    def loader(pin: bool) -> DataLoader:
        return DataLoader(ImageList(paths, transform=transform), batch_size=batch, num_workers=workers, pin_memory=pin,
                          persistent_workers=False)

    rows, feats = [], {}
    for name in rows_wanted:
        C.reset_peak(device)
        t0 = time.perf_counter()
        if name == "loader":
            for x, _, _ in loader(cuda):
                x.to(device, non_blocking=True)
            C.sync(device)
            secs, count, what = time.perf_counter() - t0, n, "DataLoader only (decode, resize, crop, copy to device)"
        elif name == "network":
            x = torch.randn(batch, 3, size, size, device=device)
            reps = max(1, n // batch)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                model(x)
                C.sync(device)
                t0 = time.perf_counter()
                for _ in range(reps):
                    model(x).float()
                C.sync(device)
            secs, count = time.perf_counter() - t0, reps * batch
            what = "backbone on an in-memory batch, fp32" + (" channels_last" if cuda else "")
        elif name == "project":
            with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
                ctx = RunContext(device=device, seed=0, workers=workers, cache_dir=Path(tmp), batch_size=batch, progress=False)
                t0 = time.perf_counter()
                feats[name] = extract_features(ck, paths, ctx, dataset_id="bench/extract", image_size=size)
                C.sync(device)
                secs = time.perf_counter() - t0
            count, what = n, "mopro_bench.features.extract_features, empty cache"
        elif name == "naive":
            model_nchw = model.to(memory_format=torch.contiguous_format)
            feats[name] = plain_loop(model_nchw, loader(False), device, False, False)
            C.sync(device)
            secs, count, what = time.perf_counter() - t0, n, "plain loop: fp32 NCHW, no pinned memory"
        else:  # bf16
            model_cl = model.to(memory_format=torch.channels_last)
            feats[name] = plain_loop(model_cl, loader(True), device, True, True)
            C.sync(device)
            secs, count, what = time.perf_counter() - t0, n, "bf16 autocast + channels_last (not the project's path)"
        rows.append({"row": name, "img_s": count / secs, "secs": secs, "peak": C.peak_gib(device), "what": what})
    ref = feats.get("naive")
    base = next((r["img_s"] for r in rows if r["row"] == "naive"), None)
    for r in rows:
        r["ratio"] = r["img_s"] / base if base else None
        f = feats.get(r["row"])
        if ref is not None and f is not None:
            r["diff"] = float(np.abs(f - ref).max() / (np.abs(ref).max() + 1e-12))
    C.table(rows, [("row", "row", ""), ("img_s", "img/s", ".1f"), ("secs", "seconds", ".2f"), ("ratio", "x naive", ".2f"),
                   ("peak", "peak GiB", ".2f"), ("diff", "max rel diff", ".1e"), ("what", "what", "")])
    return 0


if __name__ == "__main__":
    C.run_main(main)
