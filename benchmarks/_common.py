"""Helpers shared by the benchmark scripts (not a public API): environment header, timing, tables, generated data.

The scripts are run as ``python benchmarks/bench_X.py``, so this module is imported as ``_common`` (the script's own
folder is first on ``sys.path``).
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
DATA_CACHE = REPO / ".cache" / "mopro-bench" / "bench-data"  # /.cache/ is git-ignored


# ------------------------------------------------------------------------------------------------------- environment
def pick(device: torch.device, cpu_value: Any, cuda_value: Any, given: Any = None) -> Any:
    """A default that depends on the device: ``given`` when the user set it, else the CPU or the CUDA value."""
    if given is not None:
        return given
    return cuda_value if device.type == "cuda" else cpu_value


def pretrain_config(device: torch.device, args: Any):
    """The pretraining config a benchmark runs: ``--set`` overrides, then --arch/--image-size/--batch or the device's
    defaults (resnet18/64 px/32 on CPU, resnet50/224 px/256 on CUDA); the queue must hold whole batches."""
    from mopro_bench.config import parse_set_args
    from mopro_bench.errors import BenchError
    from mopro_bench.pretrain.config import make_config

    overrides = parse_set_args(args.set)
    overrides.setdefault("model.arch", pick(device, "resnet18", "resnet50", args.arch))
    overrides.setdefault("aug.image_size", pick(device, 64, 224, args.image_size))
    overrides.setdefault("data.batch_size", pick(device, 32, 256, args.batch))
    cfg = make_config(overrides)
    if cfg.mopro.queue_size % cfg.data.batch_size:
        raise BenchError(f"mopro.queue_size={cfg.mopro.queue_size} is not a multiple of the batch {cfg.data.batch_size}",
                         "choose a batch that divides the queue size")
    return cfg


def set_threads(n: int) -> None:
    if n:
        torch.set_num_threads(n)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        i = device.index if device.index is not None else torch.cuda.current_device()
        p = torch.cuda.get_device_properties(i)
        return f"{p.name} ({p.total_memory / 2**30:.0f} GiB)"
    cpu = platform.processor() or platform.machine()
    return f"CPU ({cpu}, {os.cpu_count()} cores visible, {torch.get_num_threads()} torch threads)"


def header(title: str, device: torch.device, **settings: Any) -> None:
    """One block naming what ran where: the numbers are meaningless without it."""
    import torchvision

    from mopro_bench import __version__
    from mopro_bench.results import git_sha

    print(f"# {title}")
    print(f"device: {device_name(device)}")
    cuda = "no CUDA"
    if device.type == "cuda":
        cuda = (f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, TF32 conv "
                f"{torch.backends.cudnn.allow_tf32} matmul {torch.backends.cuda.matmul.allow_tf32}")
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {cuda}, Python {platform.python_version()}, "
          f"mopro-bench {__version__} ({git_sha() or 'no git'}), {datetime.datetime.now().isoformat(timespec='seconds')}")
    if settings:
        print("settings: " + " ".join(f"{k}={v}" for k, v in settings.items()))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def timed(fn: Callable[[int], Any], warmup: int, steps: int, device: torch.device) -> tuple[float, list[Any]]:
    """Run ``fn(i)`` for ``warmup`` untimed then ``steps`` timed iterations; returns (seconds of the timed ones, outputs
    of all). The device is synchronised before the clock starts and after the last step."""
    outs = [fn(i) for i in range(warmup)]
    sync(device)
    t0 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        outs.append(fn(i))
    sync(device)
    return time.perf_counter() - t0, outs


# ------------------------------------------------------------------------------------------------------------- table
def fmt(v: Any, spec: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec) if spec else str(v)


def table(rows: Sequence[dict[str, Any]], cols: Sequence[tuple[str, str, str]]) -> None:
    """Print ``rows`` as a Markdown table; ``cols`` = (key, header, format spec)."""
    cells = [[fmt(r.get(k), spec) for k, _, spec in cols] for r in rows]
    heads = [h for _, h, _ in cols]
    widths = [max(len(h), *(len(c[j]) for c in cells)) if cells else len(h) for j, h in enumerate(heads)]
    text = [all(isinstance(r.get(k), str) or r.get(k) is None for r in rows) for k, _, _ in cols]  # left-aligned
    print("| " + " | ".join(h.ljust(w) for h, w in zip(heads, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for c in cells:
        print("| " + " | ".join(x.ljust(w) if t else x.rjust(w) for x, w, t in zip(c, widths, text)) + " |")


# ---------------------------------------------------------------------------------------------------- generated data
def _generated(kind: str, name: str, **kw: Any) -> Path:
    """A generated dataset under ``.cache/mopro-bench/bench-data/<name>``, written once and reused."""
    from mopro_bench.data.synth import synth

    root = DATA_CACHE / name
    if root.is_dir():
        return root
    t0 = time.time()
    print(f"generating {kind} data in {root} ...", flush=True)
    try:
        synth(kind, root, seed=0, **kw)
    except OSError:
        if not root.is_dir():  # another run finished the same tree first: use it
            raise
    print(f"  done in {time.time() - t0:.1f} s", flush=True)
    return root


def webvision_root(unique: int, size: int) -> Path:
    """A WebVision-layout tree with about ``unique`` square ``size``-px training JPEGs (clean labels)."""
    from mopro_bench.data.synth import family_wnids

    classes = min(len(family_wnids()), max(1, unique))
    per_class = max(1, math.ceil(unique / classes))
    return _generated("webvision", f"webvision-{classes}x{per_class}-{size}px", classes=classes,
                      train_per_class=per_class, val_per_class=1, image_size=size, noise=0.0, ood=0.0)


def voc_images(unique: int, width: int, height: int) -> list[Path]:
    """``unique`` JPEGs of ``width`` x ``height`` pixels (a generated VOC07 tree's trainval + test images)."""
    half = max(1, math.ceil(unique / 2))
    root = _generated("voc07", f"voc07-{2 * half}-{width}x{height}", trainval=half, test=half, width=width, height=height)
    return sorted((root / "VOCdevkit" / "VOC2007" / "JPEGImages").glob("*.jpg"))[:unique]


def cycle(items: Sequence[Any], n: int) -> list[Any]:
    """``n`` items taken cyclically from ``items`` (a long image list from a few generated files)."""
    return [items[i % len(items)] for i in range(n)]


def cycled_annotation(root: Path, length: int, out: Path) -> Path:
    """A pseudo-label file (``--annotation``) listing ``root``'s training images cyclically, ``length`` entries: long
    epochs from a few generated files, so that per-epoch start-up costs do not dominate a trainer benchmark."""
    from mopro_bench.data.webvision import MAX_CLASSES, WebVision, write_annotation

    items = cycle(WebVision(root, num_class=MAX_CLASSES).train_samples(), length)
    return write_annotation(out, [r for r, _ in items], [y for _, y in items])


def run_main(main: Callable[[], int]) -> None:
    """A benchmark script's entry point: user errors print one line and exit 2, like the CLI."""
    import sys

    from mopro_bench.errors import BenchError

    try:
        sys.exit(main())
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":  # used by bench_ddp.sh: generate (or reuse) a WebVision tree, print its root
    import argparse

    ap = argparse.ArgumentParser(description="generate benchmark data; prints the WebVision root")
    ap.add_argument("--unique", type=int, required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--length", type=int, help="also write a cycled annotation of this many entries to --annotation")
    ap.add_argument("--annotation", type=Path)
    a = ap.parse_args()
    r = webvision_root(a.unique, a.size)
    if a.length and a.annotation:
        cycled_annotation(r, a.length, a.annotation)
    print(r)
