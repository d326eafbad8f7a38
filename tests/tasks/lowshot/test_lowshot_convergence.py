"""A low-shot solver that did not run or did not converge never yields something that looks like a result."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest

from mopro_bench.errors import BenchError
from mopro_bench.tasks.lowshot import features as lowshot
from mopro_bench.tasks.lowshot import svm
from mopro_bench.tasks.lowshot.protocols import VOC_PROTOCOLS, check_protocol
from mopro_bench.tasks.lowshot.solve import Group, solve_groups
from mopro_bench.tasks.lowshot.splits import draw_splits


def _data(seed=0, n=40, d=16):
    rng = np.random.default_rng(seed)
    y = np.where(np.arange(n) % 2 == 0, 1, -1)
    X = rng.normal(size=(n, d)) + 1.5 * y[:, None] * rng.normal(size=d)[None]  # separable-ish: the active set moves
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, y


def _rel_grad(X, y, C, coef, intercept):
    """||grad f(w)|| / ||grad f(0)|| of liblinear's primal, written out here (independent of the solver)."""
    Xa = np.c_[X, np.ones(len(X))]
    w = np.r_[coef, intercept]
    g = w - 2 * C * Xa.T @ (y * np.maximum(0, 1 - y * (Xa @ w)))
    g0 = -2 * C * Xa.T @ y
    return np.linalg.norm(g) / np.linalg.norm(g0)


@pytest.mark.parametrize("method", ["kernel", "primal"])
def test_zero_or_too_few_iterations_are_reported_as_such(method):
    X, y = _data()
    Y = y[None, :, None]
    # before: max_iter=0 reported all_converged true with max_rel_grad 0.0 (reliability case 82)
    f0 = svm.fit(X, Y, np.ones_like(Y, bool), 1000.0, max_iter=0, method=method)
    assert not f0.converged.any() and f0.summary()["all_converged"] is False and f0.summary()["converged"] == 0
    assert f0.rel_grad[0, 0] == pytest.approx(1.0)  # the zero solution: grad = grad(0)
    assert np.abs(f0.coef).max() == 0
    f1 = svm.fit(X, Y, np.ones_like(Y, bool), 1000.0, max_iter=1, gtol=1e-9, method=method)
    assert not f1.converged.any()
    assert f1.rel_grad[0, 0] == pytest.approx(_rel_grad(X, y, 1000.0, f1.coef[0, 0], f1.intercept[0, 0]), rel=1e-6)
    full = svm.fit(X, Y, np.ones_like(Y, bool), 1000.0, method=method)
    assert full.converged.all() and _rel_grad(X, y, 1000.0, full.coef[0, 0], full.intercept[0, 0]) < 1e-8
    for bad in ({"max_iter": -1}, {"gtol": 0.0}, {"gtol": math.nan}):
        with pytest.raises(ValueError):
            svm.fit(X, Y, np.ones_like(Y, bool), 1.0, **bad)


@pytest.mark.parametrize("field,value", [
    ("torch_max_iter", 0), ("torch_gtol", 0.0), ("torch_gtol", math.nan), ("torch_gtol", 1.5), ("tol", 0.0),
    ("tol", -1e-4), ("max_iter", 0), ("ks", (1.5,)), ("ks", (0,)), ("num_samples", 0), ("costs", (0.0,)),
    ("class_weight_pos", math.inf), ("std_ddof", -1), ("feature_norm_eps", -1.0),
])
def test_protocol_constants_are_validated(field, value):
    p = dataclasses.replace(VOC_PROTOCOLS["mopro"], **{field: value})
    with pytest.raises(BenchError, match=field):
        check_protocol(p)
    check_protocol(VOC_PROTOCOLS["mopro"])  # the defaults pass


def test_solver_that_converged_nowhere_is_refused_and_partial_is_counted():
    X, y = _data(seed=1)
    ctx = SimpleNamespace(device="cpu", seed=0)
    hard = Group(0, np.arange(len(y)), y[:, None], np.ones((len(y), 1), bool), [0])
    proto = dataclasses.replace(VOC_PROTOCOLS["mopro"], costs=(1000.0,), torch_max_iter=1)
    with pytest.raises(BenchError, match="converged on none of its 1 problems"):
        solve_groups([hard], X, proto, ctx, "torch")
    empty = Group(1, np.arange(len(y)), y[:, None], np.zeros((len(y), 1), bool), [0])  # no row: solved at w = 0
    with pytest.warns(RuntimeWarning, match="1 of 2 problems did not converge"):
        _, _, info = solve_groups([hard, empty], X, proto, ctx, "torch")
    assert info["converged"] == 1 and info["not_converged"] == 1 and info["all_converged"] is False
    _, _, ok = solve_groups([hard], X, dataclasses.replace(proto, torch_max_iter=100), ctx, "torch")
    assert ok["converged"] == 1 and ok["not_converged"] == 0


def test_cli_refuses_zero_iterations(cli, synth_root, tmp_path):
    voc = synth_root("voc07")
    code, out, err = cli("eval", "--ckpt", "random:resnet18", "--task", "voc_lowshot", "--data", voc, "--set",
                         "torch_max_iter=0", "--results-dir", tmp_path / "res", "--cache-dir", tmp_path / "c", "--no-progress")
    assert code == 2 and "torch_max_iter=0" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "res").exists() or not list((tmp_path / "res").rglob("*.json"))


def test_negative_seed_and_non_finite_features_are_refused(monkeypatch):
    with pytest.raises(BenchError, match="seed -1"):
        draw_splits("voc_lowshot", "voc_lowshot@mopro", -1, [1], 1, lambda k, rng: [])
    feats = np.ones((3, 4))
    feats[1, 2] = np.nan
    monkeypatch.setattr(lowshot, "extract_features", lambda *a, **k: feats)
    with pytest.raises(BenchError, match="non-finite features .* 1 of 3 images \\(first: b\\)"):
        lowshot.svm_features(None, ["a", "b", "c"], ["a", "b", "c"], None, VOC_PROTOCOLS["mopro"], "x", "VOC07 test")
