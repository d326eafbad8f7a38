"""Feature extraction with an on-disk, content-addressed cache.

Features are the backbone's pooled output (BN in eval mode). They are computed once per (checkpoint identity,
image list, transform, input preprocessing) and stored as ``<cache_dir>/features/<key>.npy`` (+ ``.json`` with
what the key is made of), written atomically. Every later request with the same key -- other k, other low-shot
samples, a second ``eval`` -- reads the file and runs no network.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from mopro_bench.checkpoints import LoadedCheckpoint
from mopro_bench.data.common import ImageList, eval_transform
from mopro_bench.io import atomic_save_with, atomic_write_json, sha256_json, sha256_lines
from mopro_bench.registry import RunContext

FEATURE_CACHE_VERSION = 1

# process-wide counters of cache hits and misses (tasks record the change over a run; tests check a second run hits)
CACHE_STATS = {"hits": 0, "misses": 0}


def checkpoint_identity(ck: LoadedCheckpoint, seed: int) -> str:
    """sha256 of the file (+ ``#network`` when a non-default network was selected, e.g. ``encoder_k``); for ``random:``
    baselines the spec and the seed that initialised it."""
    ident = getattr(ck, "identity", None) or ck.sha256
    return ident if ident else f"{ck.path}#seed={seed}"


def cache_key(ck: LoadedCheckpoint, dataset_id: str, rel_paths: Sequence[str], transform_id: str, seed: int) -> dict[str, Any]:
    return {
        "version": FEATURE_CACHE_VERSION,
        "checkpoint": checkpoint_identity(ck, seed),
        "dataset": dataset_id,
        "list_sha256": sha256_lines(list(rel_paths)),
        "n": len(rel_paths),
        "transform": transform_id,
        "preprocess": ck.record()["preprocess"],
    }


def default_batch_size(device: torch.device) -> int:
    return 256 if device.type == "cuda" else 32


@torch.no_grad()
def run_backbone(ck: LoadedCheckpoint, loader: DataLoader, device: torch.device, desc: str, progress: bool) -> np.ndarray:
    from tqdm.auto import tqdm

    model = ck.backbone.to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    chunks = []
    for x, _, _ in tqdm(loader, desc=desc, disable=not progress, leave=False):
        x = x.to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.to(memory_format=torch.channels_last)
        chunks.append(model(x).float().cpu())
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, ck.backbone.feature_dim), np.float32)


def extract_features(
    ck: LoadedCheckpoint,
    paths: Sequence[str | Path],
    ctx: RunContext,
    *,
    dataset_id: str,
    rel_paths: Sequence[str] | None = None,
    image_size: int = 224,
    resize: int | None = None,
    desc: str = "features",
) -> np.ndarray:
    """Pooled features ``[N, feature_dim]`` (float32) of ``paths`` under Resize -> CenterCrop -> normalisation.

    ``dataset_id`` names the dataset and split (e.g. ``"voc07/test"``); ``rel_paths`` (default: ``paths``) are the
    root-relative names hashed into the key, so moving a dataset does not invalidate its cache.
    """
    rel = [str(p) for p in (rel_paths if rel_paths is not None else paths)]
    resize = resize or round(image_size * 256 / 224)
    transform_id = f"resize{resize}-centercrop{image_size}"
    key_obj = cache_key(ck, dataset_id, rel, transform_id, ctx.seed)
    key = sha256_json(key_obj)
    cache = Path(ctx.cache_dir) / "features"
    npy, meta = cache / f"{key}.npy", cache / f"{key}.json"
    if npy.exists():
        try:
            feats = np.load(npy)
            if feats.shape[0] == len(rel):
                CACHE_STATS["hits"] += 1
                return feats
        except (OSError, ValueError):
            pass  # unreadable cache entry: recompute and overwrite
    CACHE_STATS["misses"] += 1
    t0 = time.time()
    ds = ImageList(paths, transform=eval_transform(image_size, resize, ck.preprocess))
    bs = ctx.batch_size or default_batch_size(ctx.device)
    loader = DataLoader(ds, batch_size=bs, shuffle=False, num_workers=ctx.workers,
                        pin_memory=ctx.device.type == "cuda", persistent_workers=False)
    feats = run_backbone(ck, loader, ctx.device, desc, ctx.progress).astype(np.float32)
    atomic_save_with(npy, lambda fh: np.save(fh, feats))
    atomic_write_json(meta, {**key_obj, "shape": list(feats.shape), "seconds": round(time.time() - t0, 3)})
    return feats


def cached_entries(cache_dir: str | Path) -> list[dict[str, Any]]:
    out = []
    for meta in sorted((Path(cache_dir) / "features").glob("*.json")):
        try:
            out.append(json.loads(meta.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return out
