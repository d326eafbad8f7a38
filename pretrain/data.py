"""Training data for MoPro: the two views, a resumable global-batch sampler and per-sample seeded augmentation.

Determinism: the epoch's order is a permutation drawn from ``(seed, epoch)``; global batch ``s`` is rows
``[s*B, (s+1)*B)`` of it and process ``r`` takes the ``r``-th contiguous chunk of that batch, so the global batch
(and its order after all_gather) is the same for any number of processes. Each sample's augmentation is drawn
from a generator seeded with ``(seed, epoch, index)``, independent of DataLoader workers, process count and resume
position. A run resumed from a mid-epoch checkpoint therefore sees exactly the batches and crops it would have seen.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler
from torchvision import transforms as T

from mopro_bench.pretrain.config import AugConfig


def derive_seed(*values) -> int:
    """A 63-bit seed from any tuple of ints/strings (stable across processes, platforms and Python versions)."""
    h = hashlib.blake2b(repr(tuple(values)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def weak_transform(a: AugConfig) -> T.Compose:
    """Query view: RandomResizedCrop(scale) + horizontal flip."""
    ops = [T.RandomResizedCrop(a.image_size, scale=tuple(a.crop_scale))]
    if a.flip:
        ops.append(T.RandomHorizontalFlip())
    return T.Compose(ops + [T.ToTensor(), T.Normalize(a.mean, a.std)])


def strong_transform(a: AugConfig) -> T.Compose:
    """Key view: RandomResizedCrop(scale), then by ``aug.strong_order``

    * ``gray-jitter-flip`` (default, the reference's ``transform_strong`` in MoPro ``DataLoader/dataloader.py``):
      RandomGrayscale(p) -> ColorJitter(0.4 x4) -> horizontal flip;
    * ``flip-jitter-gray`` (this suite before; old checkpoints without the field): flip -> ColorJitter -> RandomGrayscale.
    """
    ops: list = [T.RandomResizedCrop(a.image_size, scale=tuple(a.crop_scale))]
    flip = [T.RandomHorizontalFlip()] if a.flip else []
    jitter: list = []
    if a.color_jitter_p > 0 and any(a.color_jitter):
        j = T.ColorJitter(*a.color_jitter)
        jitter = [j if a.color_jitter_p >= 1 else T.RandomApply([j], p=a.color_jitter_p)]
    gray = [T.RandomGrayscale(p=a.grayscale_p)] if a.grayscale_p > 0 else []
    if a.strong_order == "gray-jitter-flip":
        ops += gray + jitter + flip
    elif a.strong_order == "flip-jitter-gray":
        ops += flip + jitter + gray
    else:
        raise ValueError(f"unknown aug.strong_order {a.strong_order!r}")
    return T.Compose(ops + [T.ToTensor(), T.Normalize(a.mean, a.std)])


class TwoViews:
    def __init__(self, a: AugConfig):
        self.weak, self.strong = weak_transform(a), strong_transform(a)

    def __call__(self, img):
        return self.weak(img), self.strong(img)


class SeededDataset(Dataset):
    """Wraps a dataset indexed by int; indexed by ``(epoch, index)`` it draws the sample's augmentation from a
    generator seeded with ``(seed, epoch, index)`` (the process's global RNG state is saved and restored)."""

    def __init__(self, inner: Dataset, seed: int):
        self.inner, self.seed = inner, seed

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, key):
        epoch, index = key
        s = derive_seed("aug", self.seed, epoch, index)
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            random.seed(s)
            try:
                return self.inner[index]
            finally:
                random.setstate(state)


class GlobalBatchSampler(Sampler):
    """Yields this process's share of each global batch as a list of ``(epoch, index)`` keys.

    ``drop_last`` semantics (every global batch is full: the queue needs equal batches). ``set_epoch(e, start)``
    selects the epoch and the first global batch to yield (exact mid-epoch resume).
    """

    def __init__(self, num_samples: int, global_batch: int, rank: int = 0, world: int = 1, seed: int = 0):
        if global_batch % world:
            raise ValueError("global batch must be divisible by the world size")
        self.n, self.global_batch, self.rank, self.world, self.seed = num_samples, global_batch, rank, world, seed
        self.local = global_batch // world
        self.epoch, self.start = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.global_batch

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def epoch_order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(derive_seed("order", self.seed, epoch))
        return torch.randperm(self.n, generator=g)

    def global_batch_indices(self, epoch: int, b: int) -> list[int]:
        order = self.epoch_order(epoch)
        return order[b * self.global_batch:(b + 1) * self.global_batch].tolist()

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = self.epoch_order(self.epoch)
        for b in range(self.start, self.batches_per_epoch):
            lo = b * self.global_batch + self.rank * self.local
            yield [(self.epoch, int(i)) for i in order[lo:lo + self.local]]

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch - self.start)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.start, "seed": self.seed, "global_batch": self.global_batch,
                "num_samples": self.n}
