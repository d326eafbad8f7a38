"""The low-shot engine is dataset-agnostic: a fake in-memory dataset (features given directly, no images, no model)
runs through :class:`LowShotEngine` and its record matches a direct computation (sklearn's LinearSVC per class)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pytest

from mopro_bench.registry import RunContext
from mopro_bench.tasks.lowshot.engine import LowShotDataset, LowShotEngine
from mopro_bench.tasks.lowshot.protocols import LowShotSVMProtocol
from mopro_bench.tasks.lowshot.solve import Group
from mopro_bench.tasks.lowshot.splits import per_class_sample


@dataclass(frozen=True)
class FakeProtocol(LowShotSVMProtocol):
    test_split: str = "test"
    aggregate: str = "top-1 over the fake test set per sample, then mean and std over the samples (percent)"


class InMemoryLowShot(LowShotDataset):
    """Three Gaussian classes; the features are the data. Remembers every decision matrix the engine scores."""

    metric = "top1"
    ylabel = "top-1 (%)"
    train_what = "fake train"

    def __init__(self, seed: int = 0, C: int = 3, d: int = 8, per_class: int = 10, n_test: int = 60):
        rng = np.random.default_rng(seed)
        centres = rng.normal(size=(C, d))
        self.y_train = np.repeat(np.arange(C), per_class)
        self.X_train = centres[self.y_train] + 0.9 * rng.normal(size=(len(self.y_train), d))
        self.y_test = rng.integers(0, C, n_test)
        self.X_test = centres[self.y_test] + 0.9 * rng.normal(size=(n_test, d))
        self.classes = [f"c{c}" for c in range(C)]
        self.train_ids = {f"img{i}": i for i in range(len(self.y_train))}
        self.scored: list[np.ndarray] = []

    def draw(self, k, rng):
        return per_class_sample([(f"img{i}", int(y)) for i, y in enumerate(self.y_train)], len(self.classes), k, rng)

    def check_sample(self, k, sample, ids, src):
        pass

    def shared_features(self, splits):
        return self.X_test

    def train_features(self, k, runs):
        return self.X_train

    def groups(self, k, sample, ids):
        rows = np.array([self.train_ids[i] for i in ids])
        Y = np.where(self.y_train[rows][:, None] == np.arange(len(self.classes))[None], 1, -1)
        return [Group(sample, rows, Y, np.ones_like(Y, bool), list(range(len(self.classes))))]

    def score(self, scores):
        self.scored.append(scores.copy())
        correct = scores.argmax(1) == self.y_test
        return 100.0 * float(correct.mean()), {c: None for c in self.classes}, []


def _direct_decisions(data: InMemoryLowShot, ids: list[str], cost: float) -> np.ndarray:
    """One LinearSVC per class (liblinear's primal as the protocol states it: squared hinge, L2, regularised bias)."""
    from sklearn.svm import LinearSVC

    rows = np.array([data.train_ids[i] for i in ids])
    out = np.zeros((len(data.y_test), len(data.classes)))
    for c in range(len(data.classes)):
        y = np.where(data.y_train[rows] == c, 1, -1)
        clf = LinearSVC(C=cost, loss="squared_hinge", penalty="l2", dual=True, tol=1e-12, max_iter=1_000_000,
                        fit_intercept=True, intercept_scaling=1.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.fit(data.X_train[rows], y)
        out[:, c] = clf.decision_function(data.X_test)
    return out


def test_engine_runs_an_in_memory_dataset_and_matches_a_direct_computation(tmp_path):
    data = InMemoryLowShot()
    costs = (0.05, 0.5)
    proto = FakeProtocol(name="fake", version="1", description="in-memory", ks=(1, 2), num_samples=3, costs=costs,
                         cost_selection="test")
    ctx = RunContext(seed=3, progress=False, artifact_prefix=tmp_path / "fake")
    out = LowShotEngine("fake_lowshot", {}).run(data, proto, ctx, model_name="features")

    splits, provenance = LowShotEngine("fake_lowshot", {}).splits(InMemoryLowShot(), proto, RunContext(seed=3))  # same seed
    assert out.data == provenance and out.data["splits_source"] == "drawn from seed 3"
    seen = iter(data.scored)  # the engine scores sample by sample, cost by cost, k by k
    for k in (1, 2):
        runs = splits["k"][str(k)]
        top1 = np.zeros((len(runs), len(costs)))
        for s, ids in enumerate(runs):
            assert len(ids) == 3 * k
            for j, cost in enumerate(costs):
                direct = _direct_decisions(data, ids, cost)
                np.testing.assert_allclose(next(seen), direct, atol=1e-5)  # the engine's decision values
                top1[s, j] = 100.0 * np.mean(direct.argmax(1) == data.y_test)
        best = int(np.argmax(top1.mean(0)))  # selection "test": the cost with the best mean over the samples
        vals = top1[:, best]
        assert out.metrics[f"top1_k{k}"] == pytest.approx(round(vals.mean(), 4), abs=1e-9)
        assert out.metrics[f"top1_k{k}_std"] == pytest.approx(round(vals.std(ddof=1), 4), abs=1e-9)
        entry = out.details["lowshot"][str(k)]
        assert [r["cost"] for r in entry["runs"]] == [costs[best]] * len(runs)
        assert entry["test_by_cost"] == {str(c): pytest.approx(round(top1[:, j].mean(), 4)) for j, c in enumerate(costs)}
        assert out.details["per_run"][f"top1_k{k}"] == [round(v, 4) for v in vals]
    assert next(seen, None) is None
    assert out.details["classes"] == ["c0", "c1", "c2"] and out.details["features"]["test"] == [60, 8]
    assert all(v["all_converged"] for v in out.details["solver"]["by_k"].values())
    assert out.selection.startswith("test-set (as published)")
    assert out.artifacts == [str(tmp_path / "fake.lowshot.png")]
