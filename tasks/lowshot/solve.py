"""Fitting groups of binary SVM problems on one feature matrix: :class:`Group` (one training set shared by ``q``
problems), :func:`solve_groups` (every group x class x cost as batched problems of :mod:`.svm`, convergence counted
and checked) and :func:`cv_select` (the cost per sample by stratified cross-validation inside the training sample)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from mopro_bench.errors import BenchError
from mopro_bench.metrics.ap import ap_per_class
from mopro_bench.registry import RunContext
from mopro_bench.tasks.lowshot import svm
from mopro_bench.tasks.lowshot.protocols import LowShotSVMProtocol
from mopro_bench.tasks.lowshot.splits import StableRNG

# memory budget for one batched solve (stacked design matrices); larger batches are cut into chunks
SOLVE_BUDGET_BYTES = 768 << 20


@dataclass
class Group:
    """One training set shared by ``q`` binary problems: rows index the training feature matrix."""

    sample: int
    rows: np.ndarray  # [n] int
    Y: np.ndarray  # [n, q] +1 / -1
    mask: np.ndarray  # [n, q] bool: row belongs to that problem
    classes: list[int]  # class of each column


def solve_groups(groups: list[Group], X: np.ndarray, proto: LowShotSVMProtocol, ctx: RunContext, solver: str
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Fit every (group, column, cost) problem; returns ``coef [G, q, ncost, d]``, ``intercept [G, q, ncost]``."""
    q, nc, d = len(groups[0].classes), len(proto.costs), X.shape[1]
    n_max = max(len(g.rows) for g in groups)
    per_group = n_max * (d + 1) * 8 * 3 + n_max * n_max * 8
    chunk = max(1, SOLVE_BUDGET_BYTES // per_group)
    coef = np.zeros((len(groups), q, nc, d))
    intercept = np.zeros((len(groups), q, nc))
    costs = np.tile(np.asarray(proto.costs, np.float64), q)  # column j * nc + c
    summaries = []
    for s in range(0, len(groups), chunk):
        part = groups[s:s + chunk]
        Xb = np.zeros((len(part), n_max, d))
        Yb = -np.ones((len(part), n_max, q * nc))
        Mb = np.zeros((len(part), n_max, q * nc), bool)
        for i, g in enumerate(part):
            n = len(g.rows)
            Xb[i, :n] = X[g.rows]
            Yb[i, :n] = np.repeat(g.Y, nc, axis=1)
            Mb[i, :n] = np.repeat(g.mask, nc, axis=1)
        kw = {"class_weight": (proto.class_weight_pos, proto.class_weight_neg), "intercept_scaling": proto.intercept_scaling}
        if solver == "sklearn":
            fit = svm.sklearn_fit(Xb, Yb, Mb, costs, tol=proto.tol, max_iter=proto.max_iter, dual=proto.dual,
                                  random_state=ctx.seed, **kw)
        else:
            fit = svm.fit(Xb, Yb, Mb, costs, gtol=proto.torch_gtol, max_iter=proto.torch_max_iter, device=ctx.device, **kw)
        coef[s:s + len(part)] = fit.coef.reshape(len(part), q, nc, d)
        intercept[s:s + len(part)] = fit.intercept.reshape(len(part), q, nc)
        summaries.append(fit.summary())
    problems = sum(x["problems"] for x in summaries)
    converged = sum(x["converged"] for x in summaries)
    info = {
        "solver": summaries[0]["method"],
        "problems": problems,
        "batches": len(summaries),
        "seconds": round(sum(x["seconds"] for x in summaries), 4),
        "converged": converged,
        "not_converged": problems - converged,
        "all_converged": converged == problems,
    }
    grads = [x["max_rel_grad"] for x in summaries if x.get("max_rel_grad") is not None]
    if grads:
        info["max_rel_grad"] = max(grads)
        info["max_iterations"] = max(x["iterations"] for x in summaries)
    if solver == "sklearn":
        info["convergence_warnings"] = sum(x.get("convergence_warnings", 0) for x in summaries)
    # a solver that did not get anywhere must not produce something that looks like a result
    how = (f"gtol {proto.torch_gtol} within torch_max_iter={proto.torch_max_iter} Newton steps" if solver != "sklearn"
           else f"tol {proto.tol} within max_iter={proto.max_iter} (ConvergenceWarning)")
    if problems and converged == 0:
        raise BenchError(f"the {solver} SVM solver converged on none of its {problems} problems ({how}; max rel grad "
                         f"{info.get('max_rel_grad')})", "raise --set torch_max_iter=... / --set max_iter=... (or loosen "
                         "the tolerance); the protocol defaults converge")
    if converged < problems:
        warnings.warn(f"{solver} SVM solver: {problems - converged} of {problems} problems did not converge ({how}); "
                      "their last iterate is used and the count is recorded", RuntimeWarning, stacklevel=2)
    return coef, intercept, info


def cv_select(groups: list[Group], X: np.ndarray, proto: LowShotSVMProtocol, ctx: RunContext, solver: str, k: int,
              num_samples: int) -> tuple[list[int], dict[str, Any]]:
    """Cost index per sample by stratified k-fold CV inside the training sample (mean held-out AP over classes and
    folds). Folds are over distinct images (a duplicate never sits on both sides). A sample in which some class has
    fewer than 2 distinct positives (or negatives) cannot be cross-validated: it gets ``cv_fallback_cost``."""
    cv_groups: list[Group] = []
    held: list[tuple[int, np.ndarray, np.ndarray]] = []  # (sample, held-out feature rows, labels)
    impossible: set[int] = set()
    for g in groups:
        for j, cls in enumerate(g.classes):
            rows = g.rows[g.mask[:, j]]
            y = g.Y[g.mask[:, j], j]
            uniq, first = np.unique(rows, return_index=True)
            uy = y[first]
            label_of = {int(r): int(v) for r, v in zip(uniq, uy)}
            pos, neg = uniq[uy > 0], uniq[uy < 0]
            F = min(proto.cv_folds, len(pos), len(neg))
            if F < 2:
                impossible.add(g.sample)
                continue
            rng = StableRNG(ctx.seed, k, g.sample, 104729, cls)  # the CV stream, independent of the split draw
            fold_of: dict[int, int] = {}
            for part in (pos, neg):
                for rank, idx in enumerate(rng.sample(list(part), len(part))):
                    fold_of[int(idx)] = rank % F
            folds = np.array([fold_of[int(r)] for r in rows])
            for f in range(F):
                tr = folds != f
                cv_groups.append(Group(g.sample, rows[tr], y[tr, None], np.ones((int(tr.sum()), 1), bool), [cls]))
                hu = np.array(sorted({int(r) for r in rows[~tr]}))
                held.append((g.sample, hu, np.array([label_of[int(r)] for r in hu])))
    nc = len(proto.costs)
    scores = np.zeros((num_samples, nc))
    counts = np.zeros(num_samples)
    info: dict[str, Any] = {"folds": proto.cv_folds, "fallback_samples": sorted(impossible)}
    if cv_groups:
        todo = [i for i, g in enumerate(cv_groups) if g.sample not in impossible]
        sub = [cv_groups[i] for i in todo]
        if sub:
            coef, icpt, sinfo = solve_groups(sub, X, proto, ctx, solver)
            info["solver"] = sinfo
            for t, i in enumerate(todo):
                s, hu, hy = held[i]
                sc = X[hu] @ coef[t, 0].T + icpt[t, 0]  # [n_held, ncost]
                aps = ap_per_class(sc, np.repeat(hy[:, None], nc, axis=1))
                scores[s] += aps
                counts[s] += 1
    chosen = []
    fallback = list(proto.costs).index(proto.cv_fallback_cost)
    for s in range(num_samples):
        if s in impossible or counts[s] == 0:
            chosen.append(-1)
        else:
            chosen.append(int(np.argmax(scores[s] / counts[s])))
    info["cv_mean_ap"] = [[round(float(v), 6) for v in (scores[s] / max(counts[s], 1))] for s in range(num_samples)]
    info["fallback_cost_index"] = fallback
    return chosen, info
