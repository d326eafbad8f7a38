"""Feature extraction with an on-disk, content-addressed cache.

Features are the backbone's pooled output (BN in eval mode). They are computed once per (checkpoint identity = sha256
of the checkpoint bytes the weights were read from, image list, *content fingerprint of the images*, transform, input
preprocessing) and stored as ``<cache_dir>/features/<key>.npy`` (+ ``.json`` with what the key is made of), written
atomically. Every later request with the same key -- other k, other low-shot samples, a second ``eval`` -- reads the
file and runs no network.

The content fingerprint (:func:`mopro_bench.fingerprint.fingerprint_files`: sha256 of every file's bytes, combined
with the dataset-relative names in list order) is computed on every call, cache hit or not, and recorded in
``ctx.data_fingerprints[dataset_id]`` for the result record. Images edited in place, a resized or regenerated
dataset with the same file names, or another dataset under the same id therefore miss the cache; a copy of the same
bytes under another root hits it. After an extraction the files are stat'ed again: if any changed while they were
read, nothing is cached and the run stops (exit 2). Features that are not finite stop the run (exit 2) and are not
cached.
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
from mopro_bench.errors import BenchError
from mopro_bench.fingerprint import changed_since_fingerprint, fingerprint_files
from mopro_bench.io import atomic_save_with, atomic_write_json, sha256_json, sha256_lines
from mopro_bench.registry import RunContext

FEATURE_CACHE_VERSION = 2  # 2: key holds the images' content fingerprint

# process-wide counters of cache hits and misses (tasks record the change over a run; tests check a second run hits)
CACHE_STATS = {"hits": 0, "misses": 0}


def checkpoint_identity(ck: LoadedCheckpoint, seed: int) -> str:
    """sha256 of the file (+ ``#network`` when a non-default network was selected, e.g. ``encoder_k``); for ``random:``
    baselines the spec and the seed that initialised it."""
    ident = getattr(ck, "identity", None) or ck.sha256
    return ident if ident else f"{ck.path}#seed={seed}"


def cache_key(ck: LoadedCheckpoint, dataset_id: str, rel_paths: Sequence[str], transform_id: str, seed: int,
              content_sha256: str) -> dict[str, Any]:
    return {
        "version": FEATURE_CACHE_VERSION,
        "checkpoint": checkpoint_identity(ck, seed),
        "dataset": dataset_id,
        "list_sha256": sha256_lines(list(rel_paths)),
        "content_sha256": content_sha256,  # fingerprint_files(paths, names=rel_paths)["sha256"]
        "n": len(rel_paths),
        "transform": transform_id,
        "preprocess": ck.preprocess.normalisation(),  # what the checkpoint changes in the input tensor
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
    square: bool = False,
    interpolation: str = "bilinear",
    desc: str = "features",
) -> np.ndarray:
    """Pooled features ``[N, feature_dim]`` (float32) of ``paths`` under Resize -> CenterCrop -> normalisation
    (``square``: the whole image resized to ``resize x resize`` first; ``interpolation`` of the resize; see
    :func:`~mopro_bench.data.common.eval_transform`). The feature is ``ck.backbone(x)``: whatever the backbone's
    ``forward`` pools (ResNet GAP, ViT CLS token, ConvNeXt pre-logits), or a wrapper a task puts in its place.

    ``dataset_id`` names the dataset and split (e.g. ``"voc07/test"``); ``rel_paths`` (default: ``paths``) are the
    root-relative names hashed into the key with each file's content, so moving a dataset does not invalidate its
    cache while changing its bytes does. The content fingerprint goes to ``ctx.record_data(dataset_id, ...)``.
    """
    rel = [str(p) for p in (rel_paths if rel_paths is not None else paths)]
    if len(rel) != len(paths):
        raise ValueError("paths and rel_paths differ in length")
    resize = resize or round(image_size * 256 / 224)
    transform_id = f"resize{resize}{'x' + str(resize) if square else ''}-centercrop{image_size}"
    if interpolation != "bilinear":  # (bilinear, the default, is unnamed: the ResNet protocols' keys stay as they were)
        transform_id += f"-{interpolation}"
    fp = fingerprint_files(paths, cache_dir=ctx.cache_dir, names=rel)
    ctx.record_data(dataset_id, fp)
    key_obj = cache_key(ck, dataset_id, rel, transform_id, ctx.seed, fp["sha256"])
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
    ds = ImageList(paths, transform=eval_transform(image_size, resize, ck.preprocess, square=square,
                                                   interpolation=interpolation))
    if ctx.batch_size is not None and ctx.batch_size < 1:
        raise BenchError(f"batch size {ctx.batch_size} is not positive", "pass --batch-size 1 or more (or leave it out)")
    bs = ctx.batch_size or default_batch_size(ctx.device)
    loader = DataLoader(ds, batch_size=bs, shuffle=False, num_workers=ctx.workers,
                        pin_memory=ctx.device.type == "cuda", persistent_workers=False)
    feats = run_backbone(ck, loader, ctx.device, desc, ctx.progress).astype(np.float32)
    check_finite(feats, ck, dataset_id, paths)
    changed = changed_since_fingerprint(paths)
    if changed:
        raise BenchError(f"{len(changed)} image(s) of {dataset_id} changed while their features were extracted (first: "
                         f"{changed[0]}); nothing was cached", "run again once the dataset is no longer being written")
    atomic_save_with(npy, lambda fh: np.save(fh, feats))
    atomic_write_json(meta, {**key_obj, "shape": list(feats.shape), "data": fp, "seconds": round(time.time() - t0, 3)})
    return feats


def check_finite(feats: np.ndarray, ck: LoadedCheckpoint, dataset_id: str, paths: Sequence[str | Path]) -> None:
    """Stop (exit 2) when features hold NaN/Inf: the checkpoint's weights overflow float32 on these images."""
    bad = ~np.isfinite(feats).all(axis=1) if feats.size else np.zeros(0, bool)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise BenchError(
            f"checkpoint {ck.name} gives non-finite (NaN/Inf) features on {int(bad.sum())} of {len(bad)} images of "
            f"{dataset_id} (first: {paths[first]}); nothing was cached",
            f"check the weights with `mopro-bench inspect --ckpt {ck.path}` (values too large for float32?) and the "
            "image with `mopro-bench data check --deep`")


def cached_entries(cache_dir: str | Path) -> list[dict[str, Any]]:
    out = []
    for meta in sorted((Path(cache_dir) / "features").glob("*.json")):
        try:
            out.append(json.loads(meta.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return out
