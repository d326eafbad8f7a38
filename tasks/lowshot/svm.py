"""Batched linear SVMs: liblinear's L2-regularised squared-hinge primal, solved exactly for many problems at once.

Every problem ``b`` minimises liblinear's primal (``LinearSVC(loss="squared_hinge", penalty="l2")``)::

    f_b(w) = 1/2 ||w||^2 + sum_i C_bi * max(0, 1 - y_bi * w . [x_i, s])^2

where ``s`` is ``intercept_scaling``: the bias is an extra feature of constant value ``s`` whose weight is
regularised like any other (``intercept_ = s * w[-1]``), and ``C_bi = C_b * class_weight[y_bi]`` (0 removes an
example from problem ``b``). ``f_b`` is strictly convex, so the minimiser is unique and any two exact solvers agree.

Problems are grouped so they share a design matrix: ``X [G, n, d]`` (one training set per group), labels
``Y [G, n, m]`` in {+1, -1} and a membership mask ``[G, n, m]`` for ``m`` problems per group (classes x costs; for a
per-class training set ``G`` = samples x classes and ``m`` = costs). Two exact methods, chosen by cost:

* ``kernel`` (``n`` up to ~1000, or a large cost): generalised Newton in the span of the training points (Keerthi &
  DeCoste 2005) on the Gram matrix ``K = X X^T + s^2`` (shared by the ``m`` problems of a group). With the active set
  ``A`` (``y w.x < 1``) fixed, the objective is quadratic and its minimiser ``w = X_A^T b`` solves
  ``(K_AA + diag(1 / (2 C_A))) b = y_A``; then an exact line search. It terminates in a finite number of steps and
  is robust for any C (1000 included). Each such system is solved exactly in one of two ways, per problem, by cost:
  (1) a Cholesky factorisation of the compacted ``|A| x |A|`` system; (2) when it differs from the group's base
  ``K + delta I`` (``delta`` = the most frequent ``1/(2 C_i)``, e.g. the negatives') in only ``r`` rows (other
  class weight, inactive, absent), the base's inverse -- factorised once per (group, delta) and shared by all the
  group's problems and Newton steps -- with a rank-``r`` Woodbury correction (``r x r`` Cholesky, LU if indefinite)
  and, where the residual is not negligible, one step of iterative refinement. A one-vs-rest group with one cost
  therefore needs one ``n x n`` factorisation for all its problems' first steps.
* ``primal`` (larger ``n``): truncated Newton (as liblinear's primal solver) with a Jacobi-preconditioned CG whose
  Hessian-vector products are matrix-matrix products shared by the ``m`` problems of a group, plus the same exact
  line search.

Both stop when ``||grad f_b|| <= gtol * ||grad f_b(0)||`` for every problem (float64 by default, CPU or CUDA); the
kernel method watches the gradient through ``K`` and confirms it in feature space before it stops. ``max_iter``
Newton steps at most: a problem that did not reach ``gtol`` (``max_iter=0`` included: the zero solution) is reported
with ``converged = False`` and its true relative gradient -- never as converged.
:func:`sklearn_fit` fits the same problems one at a time with sklearn's ``LinearSVC`` (the reference).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

Array = np.ndarray | torch.Tensor


@dataclass
class SVMFit:
    """Solutions of a batch of problems: ``coef [G, m, d]``, ``intercept [G, m]`` (numpy float64)."""

    coef: np.ndarray
    intercept: np.ndarray
    objective: np.ndarray  # [G, m] primal objective at the solution
    rel_grad: np.ndarray  # [G, m] ||grad|| / ||grad at 0||  (nan for the sklearn reference)
    converged: np.ndarray  # [G, m] bool
    iterations: int
    method: str
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        rg = self.rel_grad[np.isfinite(self.rel_grad)]
        return {
            "method": self.method,
            "problems": int(self.objective.size),
            "iterations": int(self.iterations),
            "seconds": round(float(self.seconds), 4),
            "converged": int(self.converged.sum()),
            "all_converged": bool(self.converged.all()),
            "max_rel_grad": float(rg.max()) if rg.size else None,
            **self.info,
        }

    def decision(self, X: Array) -> np.ndarray:
        """Scores ``[G, m, N]`` of test features ``X [N, d]``."""
        X = np.asarray(X, dtype=np.float64)
        return np.einsum("gmd,nd->gmn", self.coef, X) + self.intercept[..., None]


def example_costs(Y: torch.Tensor, mask: torch.Tensor, C: torch.Tensor, class_weight: tuple[float, float]) -> torch.Tensor:
    """``C_bi = mask * C_b * class_weight[y]`` with ``class_weight = (w_pos, w_neg)``; ``C`` broadcastable to [G, 1, m]."""
    wpos, wneg = class_weight
    w = torch.where(Y > 0, torch.as_tensor(wpos, dtype=Y.dtype, device=Y.device),
                    torch.as_tensor(wneg, dtype=Y.dtype, device=Y.device))
    return mask.to(Y.dtype) * C * w


def costs_per_problem(C: Array, G: int, m: int) -> np.ndarray:
    """``C`` given as a scalar, ``[m]`` or ``[G, m]`` -> ``[G, m]`` float64."""
    c = np.asarray(C.cpu() if isinstance(C, torch.Tensor) else C, np.float64)
    if c.ndim <= 1:
        c = c.reshape(1, -1)
    return np.broadcast_to(c, (G, m)).copy()


def primal_objective(X: Array, Y: Array, mask: Array, C: Array, coef: Array, intercept: Array, *,
                     class_weight: tuple[float, float] = (1.0, 1.0), intercept_scaling: float = 1.0) -> np.ndarray:
    """liblinear's primal objective ``[G, m]`` of given solutions (float64, numpy; the slow, obvious formula)."""
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    mask, coef, intercept = np.asarray(mask, bool), np.asarray(coef, np.float64), np.asarray(intercept, np.float64)
    C = costs_per_problem(C, Y.shape[0], Y.shape[2])[:, None, :]
    wb = intercept / intercept_scaling
    scores = np.einsum("gnd,gmd->gnm", X, coef) + intercept[:, None, :]
    slack = np.maximum(0.0, 1.0 - Y * scores)
    cw = np.where(Y > 0, class_weight[0], class_weight[1]) * C * mask
    return 0.5 * ((coef ** 2).sum(-1) + wb ** 2) + (cw * slack ** 2).sum(1)


# ------------------------------------------------------------------------------------------------------ line search
def _line_search(a0: torch.Tensor, a1: torch.Tensor, M: torch.Tensor, Q: torch.Tensor, Cst: torch.Tensor,
                 todo: torch.Tensor, max_iter: int = 100) -> torch.Tensor:
    """Exact minimiser ``t >= 0`` of ``phi(t) = 1/2||w + t p||^2 + sum_i c_i max(0, 1 - m_i - t q_i)^2``, per problem.

    ``a0 = w.p`` and ``a1 = p.p`` ([G, m]); margins ``M``, directional margins ``Q`` and costs ``Cst`` are [G, n, m].
    ``phi'`` is continuous, piecewise linear and nondecreasing; a safeguarded Newton iteration on it (bisection
    when a step leaves the bracket) lands on its root exactly once it is in the right piece.
    """
    lo = torch.zeros_like(a0)
    hi = torch.full_like(a0, math.inf)
    t = torch.ones_like(a0)
    scale = a0.abs() + a1 + 1e-300
    done = ~todo
    CQ = Cst * Q
    for _ in range(max_iter):
        S = (1.0 - M - t.unsqueeze(1) * Q).clamp_min(0.0)
        d1 = a0 + t * a1 - 2.0 * (CQ * S).sum(1)
        d2 = a1 + 2.0 * (CQ * Q * (S > 0)).sum(1)
        done = done | (d1.abs() <= 1e-13 * scale)
        if bool(done.all()):
            break
        lo = torch.where(d1 < 0, t, lo)
        hi = torch.where(d1 > 0, t, hi)
        tn = t - d1 / d2.clamp_min(1e-300)
        inside = (tn > lo) & (tn < hi)
        bis = torch.where(torch.isinf(hi), 2.0 * torch.maximum(t, lo), 0.5 * (lo + hi))
        t = torch.where(done, t, torch.where(inside, tn, bis))
    return torch.where(todo, t, torch.zeros_like(t))


# ---------------------------------------------------------------------------------------------------------- methods
def _kernel_newton(X: torch.Tensor, s: float, Y: torch.Tensor, Cst: torch.Tensor, gtol: float, max_iter: int,
                   chunk_bytes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, dict[str, Any]]:
    """``w = [X, s]^T A``; works with the Gram matrix ``K = X X^T + s^2`` (the bias column is never materialised)."""
    K = torch.baddbmm(torch.full((1, 1, 1), s * s, dtype=X.dtype, device=X.device), X, X.transpose(1, 2))  # [G, n, n]
    A = torch.zeros_like(Y)  # w = Xa^T A
    Z = torch.zeros_like(Y)  # K A  (decision values)
    present = Cst > 0
    E = torch.where(present, 0.5 / Cst.clamp_min(1e-300), torch.full_like(Cst, math.inf))  # diag of the Newton system
    # the base diagonal of each problem: its most frequent per-example value (the negatives' for a one-vs-rest problem)
    pos, neg = present & (Y > 0), present & (Y < 0)
    e_pos = torch.where(pos, E, torch.zeros_like(E)).amax(1)
    e_neg = torch.where(neg, E, torch.zeros_like(E)).amax(1)

    def dnorm(U: torch.Tensor) -> torch.Tensor:  # ||Xa^T U|| per problem, in feature space (the honest measure)
        return ((X.transpose(1, 2) @ U).square().sum(1) + (s * U.sum(1)).square()).sqrt()

    def knorm(U: torch.Tensor) -> torch.Tensor:  # the same through the Gram matrix: cheap, used to decide when to look
        return (U * (K @ U)).sum(1).clamp_min(0.0).sqrt()

    g0 = knorm(2.0 * Cst * Y)  # ||grad f(0)||
    bases: dict[tuple[int, float], tuple[torch.Tensor, torch.Tensor]] = {}  # (group, delta) -> (H, H padded)
    stats = {"cholesky_solves": 0, "woodbury_solves": 0, "base_factorizations": 0, "max_active": 0, "max_low_rank": 0}
    rel = torch.full_like(g0, math.inf)
    it = 0
    for it in range(max_iter + 1):  # noqa: B007 -- `it` (Newton steps taken) is reported
        S = (1.0 - Y * Z).clamp_min(0.0) * present
        U = A - 2.0 * Cst * Y * S  # grad = Xa^T U
        rel = torch.where(g0 > 0, knorm(U) / g0.clamp_min(1e-300), torch.zeros_like(g0))
        todo = rel > gtol
        if it == max_iter or not bool(todo.any()):  # confirm (or not) in feature space
            rel = torch.where(g0 > 0, dnorm(U) / g0.clamp_min(1e-300), torch.zeros_like(g0))
            todo = rel > gtol
            if it == max_iter or not bool(todo.any()):
                break
        act = (S > 0) & todo.unsqueeze(1)
        beta = _newton_points(K, Y, E, act, todo, e_pos, e_neg, bases, stats, chunk_bytes)
        Dl = torch.where(todo.unsqueeze(1), beta - A, torch.zeros_like(A))
        KD = K @ Dl
        t = _line_search((A * KD).sum(1), (Dl * KD).sum(1), Y * Z, Y * KD, Cst, todo)
        A = A + t.unsqueeze(1) * Dl
        Z = Z + t.unsqueeze(1) * KD
    W = torch.cat([X.transpose(1, 2) @ A, s * A.sum(1, keepdim=True)], dim=1)  # [G, d + 1, m]
    return W, Z, rel, it, stats


def _newton_points(K: torch.Tensor, Y: torch.Tensor, E: torch.Tensor, act: torch.Tensor, todo: torch.Tensor,
                   e_pos: torch.Tensor, e_neg: torch.Tensor, bases: dict, stats: dict, chunk_bytes: int) -> torch.Tensor:
    """The minimiser of the quadratic with the active set fixed, for every problem still to do: ``beta = 0`` off the
    active set ``A`` and ``(K_AA + diag(E_A)) beta_A = y_A`` on it.

    Two exact ways, chosen per problem by cost: a Cholesky factorisation of the compacted ``|A| x |A|`` system, or --
    when the system differs from a per-group base ``K + delta I`` in only a few rows ``R`` (other class weight, inactive,
    absent) -- the base's inverse (factorised once per group and delta, shared by the group's problems and by every
    Newton iteration) with a Woodbury correction of rank ``|R|``, followed by one step of iterative refinement."""
    G, n, m = Y.shape
    beta = torch.zeros(G, n + 1, m, dtype=Y.dtype, device=Y.device)  # row n: a sink for padded indices
    n_act = act.sum(1)  # [G, m]
    npos_act = (act & (Y > 0)).sum(1)
    delta = torch.where(npos_act * 2 > n_act, e_pos, e_neg)  # base diagonal per problem
    on_base = act & (E == delta.unsqueeze(1))
    n_low = n - on_base.sum(1)  # rows where the system differs from the base
    idx = todo.nonzero(as_tuple=False).tolist()
    cube = lambda v: float(v) ** 3 / 3.0  # noqa: E731
    # per (group, delta): is the Woodbury route worth the base factorisation?
    want: dict[tuple[int, float], list[tuple[int, int]]] = {}
    direct: list[tuple[int, int]] = []
    nl, na, dl = n_low.tolist(), n_act.tolist(), delta.tolist()
    for g, j in idx:
        if na[g][j] == 0:
            continue  # no active row: beta = 0
        if nl[g][j] < na[g][j]:
            want.setdefault((g, dl[g][j]), []).append((g, j))
        else:
            direct.append((g, j))
    wood: list[tuple[tuple[int, float], list[tuple[int, int]]]] = []
    for key, probs in want.items():
        gain = sum(cube(na[g][j]) - cube(nl[g][j]) for g, j in probs)
        if key in bases or gain > 3.0 * cube(n):
            wood.append((key, probs))
        else:
            direct.extend(probs)
    # ---- compacted direct solves, sorted by |A| so that padding stays small
    direct.sort(key=lambda p: na[p[0]][p[1]])
    per = max(1, int(chunk_bytes // (24 * na[direct[-1][0]][direct[-1][1]] ** 2))) if direct else 1
    for s in range(0, len(direct), per):
        part = direct[s:s + per]
        a_max = max(na[g][j] for g, j in part)
        gi = torch.tensor([p[0] for p in part], device=Y.device)
        mi = torch.tensor([p[1] for p in part], device=Y.device)
        a = act[gi, :, mi]  # [P, n]
        # indices of the active rows first (stable), padded: masked out of the system, scattered to the sink row n
        order = torch.argsort((~a).to(torch.int8), dim=1, stable=True)[:, :a_max]
        valid = torch.gather(a, 1, order)
        ridx = torch.where(valid, order, torch.zeros_like(order))
        vv = valid.to(K.dtype)
        Mtx = K[gi.view(-1, 1, 1), ridx.unsqueeze(2), ridx.unsqueeze(1)] * (vv.unsqueeze(2) * vv.unsqueeze(1))
        Ea = torch.gather(E[gi, :, mi], 1, ridx)
        Mtx.diagonal(dim1=1, dim2=2).add_(torch.where(valid, Ea, torch.ones_like(Ea)))
        rhs = (torch.gather(Y[gi, :, mi], 1, ridx) * vv).unsqueeze(2)
        L, info = torch.linalg.cholesky_ex(Mtx)
        sol = torch.linalg.solve(Mtx, rhs) if bool((info > 0).any()) else torch.cholesky_solve(rhs, L)
        beta[gi.view(-1, 1), torch.where(valid, order, torch.full_like(order, n)), mi.view(-1, 1)] = sol.squeeze(2)
        stats["cholesky_solves"] += len(part)
        stats["max_active"] = max(stats["max_active"], a_max)
    # ---- Woodbury: (B + P_R diag(E_R - delta) P_R^T)^-1 y_A with B = K + delta I, H = B^-1:
    #      beta = H y - H P_R z,  (diag(1 / (E_R - delta)) + H_RR) z = (H y)_R   (1 / (E - delta) = 0 off A)
    eye = None
    for key, probs in wood:
        g, d = key
        if key not in bases:
            eye = torch.eye(n, dtype=K.dtype, device=K.device) if eye is None else eye
            L = torch.linalg.cholesky(K[g] + d * eye)
            Hp = torch.zeros(n + 1, n + 1, dtype=K.dtype, device=K.device)  # H with a zero row/column n for padding
            Hp[:n, :n] = torch.cholesky_inverse(L)
            bases[key] = (Hp[:n, :n].contiguous(), Hp)
            stats["base_factorizations"] += 1
        H, Hp = bases[key]
        probs = sorted(probs, key=lambda p: nl[p[0]][p[1]])  # similar ranks share a batch: little padding
        cols = torch.tensor([j for _, j in probs], device=Y.device)
        a = act[g][:, cols].T  # [P, n]
        Eg = E[g][:, cols].T
        low = ~(a & (Eg == d))  # the rows R
        f = torch.where(a & low, 1.0 / (Eg - d), torch.zeros_like(Eg))
        y = Y[g][:, cols].T * a
        ranks = [nl[p[0]][p[1]] for p in probs]
        s = 0
        while s < len(probs):
            e = min(len(probs), s + 32)
            r_max = max(ranks[s:e])
            e = min(e, s + max(1, int(chunk_bytes // max(1, 8 * (3 * r_max * r_max + 8 * n)))))
            sl = slice(s, e)
            s = e
            aa, ll, ff, yy = a[sl], low[sl], f[sl], y[sl]
            P = aa.shape[0]
            order = torch.argsort((~ll).to(torch.int8), dim=1, stable=True)[:, :r_max]
            valid = torch.gather(ll, 1, order)
            ridx = torch.where(valid, order, torch.zeros_like(order))
            sink = torch.where(valid, order, torch.full_like(order, n))
            vv = valid.to(K.dtype)
            cap = torch.take(Hp, sink.unsqueeze(2) * (n + 1) + sink.unsqueeze(1))  # H_RR, zero on the padding
            cap.diagonal(dim1=1, dim2=2).add_(torch.where(valid, torch.gather(ff, 1, ridx), torch.ones_like(vv)))
            Lc, info = torch.linalg.cholesky_ex(cap)  # SPD unless a row has a smaller diagonal than the base
            lu = torch.linalg.lu_factor(cap) if bool((info > 0).any()) else None

            def apply(r: torch.Tensor, H=H, ridx=ridx, sink=sink, vv=vv, Lc=Lc, lu=lu, aa=aa, P=P) -> torch.Tensor:
                hr = r @ H  # [P, n] (H symmetric)
                rhs = (torch.gather(hr, 1, ridx) * vv).unsqueeze(2)
                z = (torch.cholesky_solve(rhs, Lc) if lu is None else torch.linalg.lu_solve(*lu, rhs)).squeeze(2)
                zf = torch.zeros(P, n + 1, dtype=r.dtype, device=r.device).scatter_(1, sink, z * vv)[:, :n]
                return (hr - zf @ H) * aa

            bb = apply(yy)
            # one step of iterative refinement against the exact system, where the residual is not negligible
            res = (yy - (bb @ K[g] + torch.where(aa, Eg[sl], torch.zeros_like(bb)) * bb)) * aa
            if float(res.abs().max()) > 1e-12 * max(1.0, float(yy.abs().max())):
                bb = bb + apply(res)
                stats["refinements"] = stats.get("refinements", 0) + 1
            beta[g, :n, cols[sl]] = bb.T
            stats["max_low_rank"] = max(stats["max_low_rank"], r_max)
        stats["woodbury_solves"] += len(probs)
    return beta[:, :n]


def _primal_newton_cg(Xa: torch.Tensor, Y: torch.Tensor, Cst: torch.Tensor, gtol: float, max_iter: int,
                      max_cg: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, dict[str, Any]]:
    G, _, D = Xa.shape
    m = Y.shape[2]
    Xt = Xa.transpose(1, 2)
    X2t = (Xa * Xa).transpose(1, 2)
    W = torch.zeros(G, D, m, dtype=Xa.dtype, device=Xa.device)
    Z = torch.zeros_like(Y)
    present = Cst > 0
    g0 = (Xt @ (2.0 * Cst * Y)).norm(dim=1)
    rel = torch.full_like(g0, math.inf)
    cg_total = 0
    it = 0
    for it in range(max_iter + 1):  # noqa: B007 -- `it` (Newton steps taken) is reported
        S = (1.0 - Y * Z).clamp_min(0.0) * present
        grad = W - 2.0 * (Xt @ (Cst * Y * S))
        gn = grad.norm(dim=1)
        rel = torch.where(g0 > 0, gn / g0.clamp_min(1e-300), torch.zeros_like(gn))
        todo = rel > gtol
        if it == max_iter or not bool(todo.any()):
            break
        Dw = Cst * (S > 0)  # generalised Hessian weights
        precond = 1.0 + 2.0 * (X2t @ Dw)  # diag(H) [G, D, m]

        def hv(V: torch.Tensor, Dw=Dw) -> torch.Tensor:
            return V + 2.0 * (Xt @ (Dw * (Xa @ V)))

        # preconditioned CG on H p = -grad, per problem, to a relative residual eta (superlinear: eta -> 0)
        eta = torch.clamp(torch.sqrt(rel), max=0.1)
        P = torch.zeros_like(W)
        R = -grad
        Zr = R / precond
        Dd = Zr.clone()
        rz = (R * Zr).sum(1)
        tol = eta * gn
        cg_done = ~todo | (R.norm(dim=1) <= tol)
        for _ in range(max_cg):
            if bool(cg_done.all()):
                break
            Hd = hv(Dd)
            dHd = (Dd * Hd).sum(1)
            alpha = torch.where(cg_done, torch.zeros_like(rz), rz / dHd.clamp_min(1e-300))
            P = P + alpha.unsqueeze(1) * Dd
            R = R - alpha.unsqueeze(1) * Hd
            cg_done = cg_done | (R.norm(dim=1) <= tol)
            Zr = R / precond
            rz_new = (R * Zr).sum(1)
            beta = torch.where(cg_done, torch.zeros_like(rz), rz_new / rz.clamp_min(1e-300))
            rz = rz_new
            Dd = torch.where(cg_done.unsqueeze(1), torch.zeros_like(Dd), Zr + beta.unsqueeze(1) * Dd)
            cg_total += 1
        XP = Xa @ P
        t = _line_search((W * P).sum(1), (P * P).sum(1), Y * Z, Y * XP, Cst, todo)
        W = W + t.unsqueeze(1) * P
        Z = Z + t.unsqueeze(1) * XP
    return W, Z, rel, it, {"cg_iterations": cg_total}


def choose_method(n: int, d: int, max_cost: float = 1.0) -> str:
    """``kernel`` up to ``n = 1024`` training rows (or for a large cost), else ``primal``.

    CPU, float64, one thread, process CPU seconds (benchmarks/bench_svm.py, benchmarks/README.md): VOC k=16 (n=320,
    d=2048, 100 problems) kernel 0.18 s; Places k=4 (n=820, 1025 problems) kernel 7.7 s vs primal 17.1 s; Places k=8
    (n=1640) kernel 75 s (the Woodbury rank grows with the inactive rows) vs primal (see benchmarks/README.md). Costs 0.01..1000
    (goyal19): the primal CG needs ~sqrt(condition) steps and the condition grows with C * n, while the kernel
    method's factorisations do not care about C (n=320: kernel 10 s vs primal 445 s)."""
    if max_cost > 2.0 and n <= 4096:
        return "kernel"
    return "kernel" if n <= 1024 else "primal"


def fit(X: Array, Y: Array, mask: Array, C: Array, *, class_weight: tuple[float, float] = (1.0, 1.0),
        intercept_scaling: float = 1.0, gtol: float = 1e-9, max_iter: int = 100, method: str = "auto",
        device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64, max_cg: int = 1000,
        chunk_bytes: int = 1 << 29) -> SVMFit:
    """Solve ``G x m`` squared-hinge SVMs exactly (see module doc).

    ``X [G, n, d]`` features, ``Y [G, n, m]`` labels in {+1, -1}, ``mask [G, n, m]`` which rows belong to which
    problem, ``C`` the cost per problem (scalar, ``[m]`` or ``[G, m]``). ``X`` may also be ``[n, d]`` (one group).
    """
    t0 = time.time()
    if not (isinstance(gtol, float | int) and math.isfinite(gtol) and 0 < gtol < 1):
        raise ValueError(f"gtol must be in (0, 1), got {gtol!r}")
    if not (isinstance(max_iter, int) and max_iter >= 0):
        raise ValueError(f"max_iter must be an integer >= 0 (0: no Newton step, reported as not converged), got {max_iter!r}")
    device = torch.device(device)
    Xt = torch.as_tensor(np.asarray(X) if not isinstance(X, torch.Tensor) else X).to(device=device, dtype=dtype)
    if Xt.dim() == 2:
        Xt = Xt.unsqueeze(0)
    Yt = torch.as_tensor(np.asarray(Y) if not isinstance(Y, torch.Tensor) else Y).to(device=device, dtype=dtype)
    if Yt.dim() == 2:
        Yt = Yt.unsqueeze(0)
    Mt = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask).to(device=device)
    Mt = Mt.expand_as(Yt) if Mt.dim() == 3 else Mt.reshape(1, *Mt.shape).expand_as(Yt)
    G, n, d = Xt.shape
    m = Yt.shape[2]
    if Yt.shape[:2] != (G, n):
        raise ValueError(f"Y {tuple(Yt.shape)} does not match X {tuple(Xt.shape)}")
    if not bool(((Yt == 1) | (Yt == -1)).all()):
        raise ValueError("labels must be +1 or -1")
    Ct = torch.as_tensor(costs_per_problem(C, G, m), dtype=dtype, device=device).unsqueeze(1)
    Cst = example_costs(Yt, Mt, Ct, class_weight)
    if method == "auto":
        method = choose_method(n, d, float(Cst.max()) if Cst.numel() else 0.0)
    if method == "kernel":
        W, Z, rel, iters, info = _kernel_newton(Xt, float(intercept_scaling), Yt, Cst, gtol, max_iter, chunk_bytes)
    elif method == "primal":
        Xa = torch.cat([Xt, torch.full((G, n, 1), float(intercept_scaling), dtype=dtype, device=device)], dim=2)
        W, Z, rel, iters, info = _primal_newton_cg(Xa, Yt, Cst, gtol, max_iter, max_cg)
    else:
        raise ValueError(f"unknown method {method!r}")
    # objective at the solution, from the decision values recomputed in feature space (not the solver's running ones)
    Z = Xt @ W[:, :d] + float(intercept_scaling) * W[:, d:]
    S = (1.0 - Yt * Z).clamp_min(0.0) * (Cst > 0)
    obj = 0.5 * (W * W).sum(1) + (Cst * S * S).sum(1)
    W = W.transpose(1, 2).double().cpu().numpy()  # [G, m, D]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    rel_np = rel.double().cpu().numpy()
    return SVMFit(
        coef=W[..., :d].copy(), intercept=W[..., d] * float(intercept_scaling), objective=obj.double().cpu().numpy(),
        rel_grad=rel_np, converged=rel_np <= gtol, iterations=int(iters), method=method, seconds=time.time() - t0,
        info={**info, "device": str(device), "dtype": str(dtype).replace("torch.", ""), "gtol": gtol},
    )


def sklearn_fit(X: Array, Y: Array, mask: Array, C: Array, *, class_weight: tuple[float, float] = (1.0, 1.0),
                intercept_scaling: float = 1.0, tol: float = 1e-4, max_iter: int = 2000, dual: bool | str = True,
                random_state: int = 0) -> SVMFit:
    """The reference: one ``sklearn.svm.LinearSVC`` per problem, called as the published code does (C, class_weight)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    t0 = time.time()
    X, Y, mask = np.asarray(X, np.float64), np.asarray(Y), np.asarray(mask, bool)
    if X.ndim == 2:
        X, Y = X[None], Y[None]
    mask = np.broadcast_to(mask, Y.shape)
    G, n, d = X.shape
    m = Y.shape[2]
    Cg = costs_per_problem(C, G, m)
    coef = np.zeros((G, m, d))
    intercept = np.zeros((G, m))
    warned = 0
    conv = np.ones((G, m), bool)
    for g in range(G):
        for j in range(m):
            rows = mask[g, :, j]
            y = Y[g, rows, j].astype(np.int64)
            if len(np.unique(y)) < 2:
                raise ValueError(f"problem ({g}, {j}) has a single class; LinearSVC cannot fit it")
            clf = LinearSVC(C=float(Cg[g, j]), loss="squared_hinge", penalty="l2", dual=dual, tol=tol,
                            max_iter=max_iter, class_weight={1: class_weight[0], -1: class_weight[1]},
                            fit_intercept=True, intercept_scaling=intercept_scaling, random_state=random_state)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                clf.fit(X[g, rows], y)
            hit = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
            warned += hit
            conv[g, j] = hit == 0
            coef[g, j] = clf.coef_[0]
            intercept[g, j] = clf.intercept_[0]
    obj = primal_objective(X, Y, mask, Cg, coef, intercept, class_weight=class_weight, intercept_scaling=intercept_scaling)
    return SVMFit(coef=coef, intercept=intercept, objective=obj, rel_grad=np.full((G, m), np.nan),
                  converged=conv, iterations=0, method="sklearn-liblinear",
                  seconds=time.time() - t0, info={"convergence_warnings": warned, "tol": tol, "max_iter": max_iter,
                                                  "dual": dual})
