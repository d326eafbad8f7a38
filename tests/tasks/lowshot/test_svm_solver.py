"""The batched squared-hinge SVM against sklearn's LinearSVC (liblinear) and against the primal's optimality conditions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mopro_bench.metrics.ap import ap_per_class
from mopro_bench.tasks.lowshot import svm


def _problem(seed=0, G=2, n=50, d=24, m=3, p_pos=0.3, p_mask=0.9):
    rng = np.random.default_rng(seed)
    X = np.abs(rng.normal(size=(G, n, d))) + rng.normal(size=(G, n, d)) * 0.5
    X /= np.linalg.norm(X, axis=2, keepdims=True) + 1e-5
    Y = np.where(rng.random((G, n, m)) < p_pos, 1, -1)
    mask = rng.random((G, n, m)) < p_mask
    return X, Y, mask


def _grad(X, Y, mask, C, cw, coef, intercept, s=1.0):
    """Gradient of liblinear's primal, written out in numpy (independent of the solver)."""
    G, n, d = X.shape
    Xa = np.concatenate([X, np.full((G, n, 1), s)], 2)
    W = np.concatenate([coef, (intercept / s)[..., None]], 2)  # [G, m, D]
    z = np.einsum("gnd,gmd->gnm", Xa, W)
    slack = np.maximum(0, 1 - Y * z)
    c = np.where(Y > 0, cw[0], cw[1]) * np.asarray(C)[None, None, :] * mask
    return W - 2 * np.einsum("gnd,gnm->gmd", Xa, c * Y * slack)


@pytest.mark.parametrize("method", ["kernel", "primal"])
def test_matches_liblinear_to_tight_tolerance(method):
    X, Y, mask = _problem()
    C, cw = [0.5, 5.0, 100.0], (2.0, 1.0)
    ours = svm.fit(X, Y, mask, C, class_weight=cw, method=method, gtol=1e-10)
    # liblinear's primal (trust-region Newton) to a tight tolerance; its dual CD does not get there for C=100
    ref = svm.sklearn_fit(X, Y, mask, C, class_weight=cw, tol=1e-12, max_iter=200_000, dual=False)
    assert ours.converged.all() and ours.method == method
    np.testing.assert_allclose(ours.coef, ref.coef, atol=1e-6)
    np.testing.assert_allclose(ours.intercept, ref.intercept, atol=1e-6)
    np.testing.assert_allclose(ours.objective, ref.objective, rtol=1e-10)
    assert np.all(ours.objective <= ref.objective * (1 + 1e-12))
    # the optimality condition, from an independent formula
    g = _grad(X, Y, mask, C, cw, ours.coef, ours.intercept)
    assert np.abs(g).max() < 1e-7
    # the reported objective is the slow obvious formula's
    np.testing.assert_allclose(ours.objective, svm.primal_objective(X, Y, mask, C, ours.coef, ours.intercept,
                                                                    class_weight=cw), rtol=1e-12)


def test_bias_is_regularised_with_intercept_scaling():
    X, Y, mask = _problem(seed=3, m=1)
    for s in (1.0, 3.0):
        ours = svm.fit(X, Y, mask, 1.0, intercept_scaling=s)
        ref = svm.sklearn_fit(X, Y, mask, 1.0, intercept_scaling=s, tol=1e-12, max_iter=200_000, dual=False)
        np.testing.assert_allclose(ours.intercept, ref.intercept, atol=1e-6)
    # a larger scaling penalises the bias less: the solutions differ
    a = svm.fit(X, Y, mask, 1.0, intercept_scaling=1.0)
    b = svm.fit(X, Y, mask, 1.0, intercept_scaling=3.0)
    assert np.abs(a.intercept - b.intercept).max() > 1e-3


def test_protocol_tolerance_sklearn_gives_the_same_map():
    """Published settings (tol 1e-4, dual CD) vs the exact solver: |dmAP| <= 0.1 and objectives within 1e-3."""
    rng = np.random.default_rng(1)
    C_, d, k, S = 20, 64, 4, 2
    protos = rng.normal(size=(C_, d))

    def feats(lab):
        x = np.abs(rng.normal(size=(len(lab), d)) + 0.8 * protos[lab])
        return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-5)

    lab_tr = np.stack([np.repeat(np.arange(C_), k) for _ in range(S)])
    X = np.stack([feats(lab_tr[s]) for s in range(S)])
    Y = np.where(lab_tr[:, :, None] == np.arange(C_)[None, None], 1, -1)
    lab_te = rng.integers(0, C_, 400)
    Xte = feats(lab_te)
    Yte = np.where(lab_te[:, None] == np.arange(C_)[None], 1, -1)
    mask = np.ones_like(Y, bool)
    ours = svm.fit(X, Y, mask, 0.5, class_weight=(2.0, 1.0))
    ref = svm.sklearn_fit(X, Y, mask, 0.5, class_weight=(2.0, 1.0), tol=1e-4, max_iter=2000)
    assert np.all(ours.objective <= ref.objective * (1 + 1e-12))  # the exact minimiser is never worse
    np.testing.assert_allclose(ours.objective, ref.objective, rtol=1e-3)
    for s in range(S):
        m_ours = 100 * ap_per_class(ours.decision(Xte)[s].T, Yte).mean()
        m_ref = 100 * ap_per_class(ref.decision(Xte)[s].T, Yte).mean()
        assert abs(m_ours - m_ref) <= 0.1
        assert m_ours > 25  # the features carry signal (chance is 5)


def test_masked_rows_are_absent():
    X, Y, _ = _problem(seed=5, G=1, n=40, m=1)
    mask = np.ones_like(Y, bool)
    mask[0, 30:] = False
    padded = svm.fit(X, Y, mask, 2.0)
    alone = svm.fit(X[:, :30], Y[:, :30], mask[:, :30], 2.0)
    np.testing.assert_allclose(padded.coef, alone.coef, atol=1e-10)


def test_duplicate_row_equals_double_cost():
    """An image drawn twice (VOC union sample) counts twice: like sklearn's sample_weight 2."""
    from sklearn.svm import LinearSVC

    X, Y, _ = _problem(seed=6, G=1, n=30, m=1)
    Xd = np.concatenate([X, X[:, :5]], 1)
    Yd = np.concatenate([Y, Y[:, :5]], 1)
    ours = svm.fit(Xd, Yd, np.ones_like(Yd, bool), 1.0)
    w = np.ones(30)
    w[:5] = 2
    ref = LinearSVC(C=1.0, tol=1e-12, max_iter=200_000).fit(X[0], Y[0, :, 0], sample_weight=w)
    np.testing.assert_allclose(ours.coef[0, 0], ref.coef_[0], atol=1e-6)


def test_large_cost_and_single_class_problems():
    X, Y, mask = _problem(seed=7, m=2)
    Y[1, :, 1] = -1  # one problem has negatives only: w -> pushes everything below -1, no positive
    fit = svm.fit(X, Y, mask, [1000.0, 1000.0], method="kernel")
    assert fit.converged.all()
    # every training image ends (almost) beyond the margin on the negative side: slack ~ 1/C
    assert (fit.decision(X[1])[1, 1][mask[1, :, 1]] < -0.99).all()
    other = svm.fit(X, Y, mask, [1000.0, 1000.0], method="primal")
    np.testing.assert_allclose(other.objective, fit.objective, rtol=1e-8)


def test_line_search_is_exact():
    rng = np.random.default_rng(2)
    G, n, m = 3, 25, 4
    M = torch.tensor(rng.normal(size=(G, n, m)))
    Q = torch.tensor(rng.normal(size=(G, n, m)))
    Cst = torch.tensor(rng.random((G, n, m)))
    a1 = torch.tensor(rng.random((G, m)) + 0.1)
    a0 = -torch.tensor(rng.random((G, m)) + 0.5) - 2 * (Cst * Q * (1 - M).clamp_min(0)).sum(1).abs()  # phi'(0) < 0
    t = svm._line_search(a0, a1, M, Q, Cst, torch.ones(G, m, dtype=torch.bool)).numpy()
    grid = np.linspace(0, 20, 200_001)
    for g in range(G):
        for j in range(m):
            phi = (a0[g, j].item() * grid + 0.5 * a1[g, j].item() * grid ** 2
                   + (Cst[g, :, j].numpy()[:, None] * np.maximum(0, 1 - M[g, :, j].numpy()[:, None]
                                                                  - grid * Q[g, :, j].numpy()[:, None]) ** 2).sum(0))
            assert t[g, j] == pytest.approx(grid[np.argmin(phi)], abs=2e-4)


def test_method_choice():
    assert svm.choose_method(320, 2048, 1.0) == "kernel"  # VOC k=16
    assert svm.choose_method(3280, 2048, 0.5) == "primal"  # Places k=16
    assert svm.choose_method(820, 2048, 0.5) == "kernel"  # Places k=4: the shared-base Woodbury solves win
    assert svm.choose_method(1640, 2048, 0.5) == "primal"  # Places k=8
    assert svm.choose_method(320, 2048, 1000.0) == "kernel"  # goyal19's cost grid: CG would crawl


@pytest.mark.parametrize("cw", [(1.0, 1.0), (2.0, 1.0)])
def test_shared_base_woodbury_and_compacted_direct_solves_match_liblinear(cw):
    """The two ways the kernel method solves its Newton systems: one cost shared by the problems of a group (a base
    factorisation + Woodbury corrections: SPD capacitance for 1:1 weights, indefinite -> LU for +1:2), and one cost
    per problem (compacted Cholesky on the active rows)."""
    X, Y, mask = _problem(seed=11, G=2, n=60, d=24, m=8, p_pos=0.2)
    ref_kw = {"class_weight": cw, "tol": 1e-12, "max_iter": 200_000, "dual": False}
    shared = svm.fit(X, Y, mask, 0.5, class_weight=cw, method="kernel", gtol=1e-10)
    assert shared.info["woodbury_solves"] > 0 and shared.info["max_low_rank"] > 0 and shared.converged.all()
    ref = svm.sklearn_fit(X, Y, mask, 0.5, **ref_kw)
    np.testing.assert_allclose(shared.coef, ref.coef, atol=1e-6)
    np.testing.assert_allclose(shared.intercept, ref.intercept, atol=1e-6)
    costs = [0.05, 0.2, 0.5, 1.0, 3.0, 10.0, 50.0, 300.0]
    each = svm.fit(X, Y, mask, costs, class_weight=cw, method="kernel", gtol=1e-10)
    assert each.info["cholesky_solves"] > 0 and each.converged.all()
    ref = svm.sklearn_fit(X, Y, mask, costs, **ref_kw)
    np.testing.assert_allclose(each.coef, ref.coef, atol=1e-6)
    np.testing.assert_allclose(each.objective, ref.objective, rtol=1e-9)
    assert np.all(each.objective <= ref.objective * (1 + 1e-12))
