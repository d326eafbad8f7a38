"""Batched torch SVM solver vs sklearn's LinearSVC on the same features: time, |dmAP| / |dtop1|, objective gap.

Features are generated with the shape and statistics of pooled ResNet features (non-negative, strongly correlated,
L2-normalised, 2048-d) and class signal; the problems are the low-shot protocols' (VOC: 20 classes, class weight
+1:2, C=0.5; Places: 205-way one-vs-rest, C=0.5; goyal19: per-class sets and the 11-cost grid). ``sklearn`` runs the
published settings (dual coordinate descent, tol 1e-4, max_iter 2000), one LinearSVC per problem; with
``--sklearn-problems N`` it fits only the first N problems and extrapolates its time (marked ``~``).

    python benchmarks/bench_svm.py --setting voc --k 1 4 16
    python benchmarks/bench_svm.py --setting places --k 1 4 --sklearn-problems 41
    python benchmarks/bench_svm.py --setting goyal19 --k 4
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from sklearn.svm import LinearSVC  # noqa: F401 -- imported before timing

from mopro_bench.metrics.ap import ap_per_class
from mopro_bench.tasks.lowshot import svm
from mopro_bench.tasks.lowshot.protocols import GOYAL19_COSTS


def features(rng, labels, protos, base, signal):
    x = np.maximum(0.0, base + signal * protos[labels] + rng.normal(size=(len(labels), protos.shape[1])))
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-5)


def make(setting: str, k: int, samples: int, dim: int, n_test: int, seed: int, signal: float):
    rng = np.random.default_rng(seed)
    C = 205 if setting == "places" else 20
    protos = np.abs(rng.normal(size=(C, dim)))
    base = np.abs(rng.normal(size=dim)) * 2
    lab_te = rng.integers(0, C, n_test)
    Xte = features(rng, lab_te, protos, base, signal)
    if setting == "goyal19":  # per (sample, class): k positives + 19k negatives; the 11 costs are the problems
        groups = []
        for _ in range(samples):
            for c in range(C):
                neg = rng.choice(np.delete(np.arange(C), c), 19 * k)
                lab = np.r_[np.full(k, c), neg]
                groups.append((features(rng, lab, protos, base, signal), np.where(lab == c, 1, -1)[:, None]))
        X = np.stack([g[0] for g in groups])
        Y = np.repeat(np.stack([g[1] for g in groups]), len(GOYAL19_COSTS), axis=2)
        return X, Y, np.asarray(GOYAL19_COSTS), (1.0, 1.0), Xte, lab_te, C
    lab = np.repeat(np.arange(C), k)
    X = np.stack([features(rng, lab, protos, base, signal) for _ in range(samples)])
    Y = np.where(lab[None, :, None] == np.arange(C)[None, None, :], 1, -1).repeat(samples, 0)
    cw = (1.0, 1.0) if setting == "places" else (2.0, 1.0)
    return X, Y, 0.5, cw, Xte, lab_te, C


def score(fit: svm.SVMFit, Xte, lab_te, setting: str, C: int) -> np.ndarray:
    """Per sample (per cost for goyal19): mAP (voc, goyal19) or top-1 (places), percent."""
    S = fit.decision(Xte)  # [G, m, N]
    if setting == "places":
        return 100.0 * (S.argmax(1) == lab_te[None]).mean(1)
    Yte = np.where(lab_te[:, None] == np.arange(C)[None], 1, -1)
    if setting == "voc":
        return np.array([100.0 * ap_per_class(S[g].T, Yte).mean() for g in range(S.shape[0])])
    # goyal19: group g = (sample, class); mean over classes per (sample, cost)
    G, m, _ = S.shape
    ap = np.array([[ap_per_class(S[g, j][:, None], Yte[:, [g % C]])[0] for j in range(m)] for g in range(G)])
    return 100.0 * ap.reshape(-1, C, m).mean(1)


def _timed(repeats: int, fn, *args, **kwargs):
    """(result of the last call, median wall seconds, median process CPU seconds) over ``repeats`` calls."""
    walls, cpus, out = [], [], None
    for _ in range(max(1, repeats)):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn(*args, **kwargs)
        cpus.append(time.process_time() - c0)
        walls.append(time.perf_counter() - w0)
    return out, float(np.median(walls)), float(np.median(cpus))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", choices=["voc", "places", "goyal19"], default="voc")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--signal", type=float, default=0.6)
    ap.add_argument("--sklearn-problems", type=int, default=0, help="fit only this many problems with sklearn (0: all)")
    ap.add_argument("--no-sklearn", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--method", default="auto", choices=["auto", "kernel", "primal"])
    ap.add_argument("--repeats", type=int, default=3, help="torch fits per k (median reported)")
    ap.add_argument("--sklearn-repeats", type=int, default=1, help="sklearn fits per k (median reported)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"setting={args.setting} samples={args.samples} dim={args.dim} torch threads={torch.get_num_threads()} "
          f"devices={devices} load average={' '.join(f'{x:.1f}' for x in os.getloadavg())} (cores: {os.cpu_count()})"
          + (f" gpu={torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
    print("times: median over repeats; CPU = process CPU seconds (what one thread costs, independent of other load), "
          "speedup = sklearn CPU / torch-cpu CPU")
    head = f"{'k':>3} {'n':>5} {'problems':>8} {'method':>7} {'cpu CPU s':>10} {'cpu wall s':>10} " + " ".join(
        f"{d + ' wall s':>12}" for d in devices[1:])
    print(head + f" {'sklearn CPU s':>14} {'sklearn wall s':>14} {'speedup':>8} {'|dmetric|':>10} {'obj gap':>9}")
    for k in args.k:
        X, Y, Cs, cw, Xte, lab_te, C = make(args.setting, k, args.samples, args.dim, args.n_test, args.seed, args.signal)
        mask = np.ones_like(Y, bool)
        times, fits, cpu_s = {}, {}, 0.0
        for dev in devices:
            dtypes = [torch.float64] if dev == "cpu" else [torch.float64, torch.float32]
            for dt in dtypes:
                if dev == "cuda":  # warm-up (kernels, allocator)
                    svm.fit(X[:1], Y[:1], mask[:1], Cs, class_weight=cw, device=dev, dtype=dt, method=args.method)
                f, wall, cpu = _timed(args.repeats, svm.fit, X, Y, mask, Cs, class_weight=cw, device=dev, dtype=dt,
                                      method=args.method, gtol=1e-9 if dt == torch.float64 else 1e-4)
                key = dev if dt == torch.float64 else dev + "-fp32"
                times[key], fits[key] = wall, f
                if key == "cpu":
                    cpu_s = cpu
        ours = fits["cpu"]
        line = f"{k:>3} {X.shape[1]:>5} {ours.objective.size:>8} {ours.method:>7} {cpu_s:>10.3f} {times['cpu']:>10.3f} " + \
            " ".join(f"{times[d]:>12.3f}" for d in devices[1:])
        if not ours.converged.all():
            line += " [NOT CONVERGED]"
        if not args.no_sklearn:
            G, _, m = Y.shape
            limit = args.sklearn_problems or G * m
            gs = max(1, min(G, -(-limit // m)))  # whole groups, so the metric can be compared on them
            ref, t_wall, t_cpu = _timed(args.sklearn_repeats, svm.sklearn_fit, X[:gs], Y[:gs], mask[:gs], Cs,
                                        class_weight=cw)
            t_wall, t_cpu = t_wall * (G / gs), t_cpu * (G / gs)
            approx = "~" if gs < G else " "
            sub = svm.SVMFit(ours.coef[:gs], ours.intercept[:gs], ours.objective[:gs], ours.rel_grad[:gs],
                             ours.converged[:gs], ours.iterations, ours.method, ours.seconds)
            if args.setting == "goyal19" and gs % C:
                dm = float("nan")
            else:
                dm = float(np.abs(score(sub, Xte, lab_te, args.setting, C) - score(ref, Xte, lab_te, args.setting, C)).max())
            gap = float(((ref.objective - sub.objective) / np.abs(sub.objective)).max())
            line += f" {approx}{t_cpu:>13.3f} {approx}{t_wall:>13.3f} {t_cpu / max(cpu_s, 1e-9):>8.1f} {dm:>10.4f} {gap:>9.1e}"
        print(line, flush=True)
        if "cuda" in times:
            dm32 = float(np.abs(score(fits["cuda-fp32"], Xte, lab_te, args.setting, C)
                                - score(ours, Xte, lab_te, args.setting, C)).max())
            print(f"    cuda fp32: {times['cuda-fp32']:.3f} s, |dmetric| vs fp64 {dm32:.4f}, "
                  f"max rel grad {np.nanmax(fits['cuda-fp32'].rel_grad):.1e}")
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
