"""PASCAL VOC07 as a low-shot dataset: union-of-positives or per-class positives + negatives samples of ``trainval``,
the whole training split's features once, one binary SVM per class, mAP on the whole test split."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from mopro_bench.errors import BenchError
from mopro_bench.io import sha256_lines
from mopro_bench.metrics.ap import ap_per_class, mean_ap
from mopro_bench.registry import RunContext
from mopro_bench.tasks.lowshot.engine import LowShotDataset
from mopro_bench.tasks.lowshot.features import svm_features
from mopro_bench.tasks.lowshot.protocols import VOCLowShotProtocol
from mopro_bench.tasks.lowshot.solve import Group
from mopro_bench.tasks.lowshot.splits import StableRNG, voc_pos_neg_sample, voc_union_sample


class VOCLowShotData(LowShotDataset):
    metric = "mAP"
    ylabel = "mAP (%)"

    def __init__(self, model, data_root: Path, proto: VOCLowShotProtocol, ctx: RunContext):
        from mopro_bench.data.voc import VOC07, VOC_CLASSES

        self.model, self.proto, self.ctx = model, proto, ctx
        self.voc = VOC07(data_root)
        self.tv_ids, self.tv_lab = self.voc.ids(proto.train_split), self.voc.labels(proto.train_split)
        self.te_ids, self.te_lab = self.voc.ids(proto.test_split), self.voc.labels(proto.test_split)
        self.train_ids = {i: n for n, i in enumerate(self.tv_ids)}
        self.train_what = f"VOC07 {proto.train_split}"
        self.classes = list(VOC_CLASSES)
        self.per_class = proto.sampling == "positives-and-negatives-per-class"
        self._Xtr: np.ndarray | None = None

    def draw(self, k: int, rng: StableRNG) -> list[str]:
        if self.per_class:
            return voc_pos_neg_sample(self.tv_ids, self.tv_lab, self.classes, k, rng, self.proto.negatives_per_positive)
        return voc_union_sample(self.tv_ids, self.tv_lab, self.classes, k, rng)

    def check_sample(self, k: int, sample: int, ids: list[str], src: str) -> None:
        rows = np.array([self.train_ids[i] for i in ids])
        C, names, lab = len(self.classes), self.classes, self.tv_lab
        if self.per_class:
            if len(ids) % C:
                raise BenchError(f"splits file {src}: k={k} sample {sample} has {len(ids)} ids, not a multiple of {C} "
                                 "class blocks", "use a splits file written for this protocol (--save-splits)")
            blocks = rows.reshape(C, -1)
            for c in range(C):
                lc = lab[blocks[c], c]
                if not (lc == 1).any() or not (lc == -1).any():
                    raise BenchError(f"splits file {src}: k={k} sample {sample}: the block of class {names[c]!r} "
                                     "needs a positive and a negative image", "fix or regenerate the splits file")
        else:
            missing = [names[c] for c in range(C) if not (lab[rows, c] == 1).any()]
            if missing:
                raise BenchError(f"splits file {src}: k={k} sample {sample} has no positive image of {missing[0]!r}",
                                 "every class needs at least one positive in every sample")

    def shared_features(self, splits: dict) -> np.ndarray:
        """The whole training split once (every k, sample and seed reuses it), then the whole test split."""
        p = self.proto
        self._Xtr = svm_features(self.model, self.voc.paths(p.train_split), self.tv_ids, self.ctx, p,
                                 f"voc07/{p.train_split}", "VOC07 trainval")
        return svm_features(self.model, self.voc.paths(p.test_split), self.te_ids, self.ctx, p, f"voc07/{p.test_split}",
                            "VOC07 test")

    def train_features(self, k: int, runs: list[list[str]]) -> np.ndarray:
        assert self._Xtr is not None, "shared_features() first"
        return self._Xtr

    def groups(self, k: int, sample: int, ids: list[str]) -> list[Group]:
        rows = np.array([self.train_ids[i] for i in ids], dtype=np.int64)
        lab = self.tv_lab[rows]
        C = len(self.classes)
        if self.per_class:
            out = []
            for c, blk in enumerate(np.array_split(np.arange(len(rows)), C)):
                lc = lab[blk, c:c + 1]
                mask = (lc != 0) if self.proto.difficult_train == "ignore" else np.ones_like(lc, bool)
                out.append(Group(sample, rows[blk], np.where(lc == 1, 1, -1), mask, [c]))
            return out
        mask = (lab != 0) if self.proto.difficult_train == "ignore" else np.ones_like(lab, bool)
        return [Group(sample, rows, np.where(lab == 1, 1, -1), mask, list(range(C)))]

    def score(self, scores: np.ndarray) -> tuple[float, dict[str, float | None], list[str]]:
        """AP per class on the whole test split (difficult as the protocol says), mean over classes with a positive."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            aps = ap_per_class(scores, self.te_lab, difficult=self.proto.difficult_test)
            m, left_out = mean_ap(aps, self.classes)
        return 100.0 * m, {n: (None if np.isnan(a) else round(100.0 * float(a), 4)) for n, a in zip(self.classes, aps)}, left_out

    def record_data(self, splits: dict) -> dict[str, Any]:
        return {"train_images": len(self.tv_ids), "test_images": len(self.te_ids),
                "test_ids_sha256": sha256_lines(list(self.te_ids)), "train_ids_sha256": sha256_lines(list(self.tv_ids))}
