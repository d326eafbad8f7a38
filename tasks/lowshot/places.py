"""Places205 as a low-shot dataset: k images per class of ``train``, features of the whole val set and per k only of
the images its samples use (the train split has 2.4M images), one-vs-rest SVMs, top-1 on the whole val set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mopro_bench.errors import BenchError
from mopro_bench.io import sha256_lines
from mopro_bench.registry import RunContext
from mopro_bench.tasks.lowshot.engine import LowShotDataset
from mopro_bench.tasks.lowshot.features import svm_features
from mopro_bench.tasks.lowshot.protocols import PlacesLowShotProtocol
from mopro_bench.tasks.lowshot.solve import Group
from mopro_bench.tasks.lowshot.splits import StableRNG, per_class_sample


class PlacesLowShotData(LowShotDataset):
    metric = "top1"
    ylabel = "top-1 (%)"

    def __init__(self, model, data_root: Path, proto: PlacesLowShotProtocol, ctx: RunContext):
        from mopro_bench.data.places import Places205

        self.model, self.proto, self.ctx = model, proto, ctx
        self.ds = Places205(data_root)
        self.train = self.ds.samples(proto.train_split)
        self.val = self.ds.samples(proto.test_split)
        C = proto.num_classes
        self.train_ids = dict(self.train)  # relative path -> label
        self.train_what = f"Places205 {proto.train_split}"
        names = [""] * C
        for rel, lab in sorted(self.train):
            if lab < C and not names[lab]:
                names[lab] = str(Path(rel).parent)
        self.classes = [n or f"class_{c}" for c, n in enumerate(names)]
        self.val_rel = [r for r, _ in self.val]
        self.yv = np.array([lab for _, lab in self.val])
        self._row_of: dict[str, int] = {}

    def draw(self, k: int, rng: StableRNG) -> list[str]:
        return per_class_sample(self.train, len(self.classes), k, rng, self.classes)

    def check_sample(self, k: int, sample: int, ids: list[str], src: str) -> None:
        present = {self.train_ids[i] for i in ids}
        missing = [self.classes[c] for c in range(len(self.classes)) if c not in present]
        if missing:
            raise BenchError(f"splits file {src}: k={k} sample {sample} has no image of class {missing[0]!r}",
                             "every class needs at least one image in every sample")

    def shared_features(self, splits: dict) -> np.ndarray:
        """The whole val set (the training images are extracted per k, cached per k: a rerun with the same seed -- or
        with fewer k -- extracts nothing)."""
        return svm_features(self.model, [self.ds.image_path(r) for r in self.val_rel], self.val_rel, self.ctx, self.proto,
                            f"places205/{self.proto.test_split}", "Places205 val")

    def train_features(self, k: int, runs: list[list[str]]) -> np.ndarray:
        used = sorted({i for ids in runs for i in ids})
        self._row_of = {r: n for n, r in enumerate(used)}
        return svm_features(self.model, [self.ds.image_path(r) for r in used], used, self.ctx, self.proto,
                            f"places205/{self.proto.train_split}-lowshot", f"Places205 train k={k}")

    def groups(self, k: int, sample: int, ids: list[str]) -> list[Group]:
        rows = np.array([self._row_of[i] for i in ids], dtype=np.int64)
        lab = np.array([self.train_ids[i] for i in ids])
        Y = np.where(lab[:, None] == np.arange(len(self.classes))[None, :], 1, -1)
        return [Group(sample, rows, Y, np.ones_like(Y, bool), list(range(len(self.classes))))]

    def score(self, scores: np.ndarray) -> tuple[float, dict[str, float | None], list[str]]:
        """Top-1 of the argmax over the one-vs-rest decision values (first index on ties), overall and per class."""
        correct = scores.argmax(1) == self.yv
        per = {}
        for c, name in enumerate(self.classes):
            sel = self.yv == c
            per[name] = round(100.0 * float(correct[sel].mean()), 4) if sel.any() else None
        return 100.0 * float(correct.mean()), per, []

    def record_data(self, splits: dict) -> dict[str, Any]:
        n_used = len({i for runs in splits["k"].values() for ids in runs for i in ids})
        return {"train_images_used": n_used, "test_images": len(self.val_rel), "test_list_sha256": sha256_lines(self.val_rel)}
