"""The low-shot engine: one loop for every low-shot dataset, driven by a small per-dataset object.

A :class:`LowShotDataset` says what is particular to a dataset -- how a training sample is drawn and checked, which
features and binary problems a sample gives, how test decision values are scored. :class:`LowShotEngine` does the rest,
the same for all of them: the splits (drawn from the seed, or a ``--splits`` file checked and ``--save-splits``
written), per k one batched solve of every sample x class x cost, cost selection (fixed / cross-validation / test as
published), mean +- std over the samples, the curve figure and the record pieces.
"""

from __future__ import annotations

import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mopro_bench.errors import BenchError
from mopro_bench.features import CACHE_STATS
from mopro_bench.registry import Protocol, RunContext, TaskOutput
from mopro_bench.tasks.lowshot.plots import plot_curve
from mopro_bench.tasks.lowshot.protocols import LowShotSVMProtocol, check_protocol
from mopro_bench.tasks.lowshot.solve import Group, cv_select, solve_groups
from mopro_bench.tasks.lowshot.splits import StableRNG, check_known, draw_splits, load_splits, save_splits, splits_sha256

SOLVERS = ("torch", "sklearn")


class LowShotDataset(ABC):
    """What the engine needs from one low-shot dataset (built per run, holding its model, data, protocol and ctx)."""

    metric: str  # the metric's name in the record: metrics[f"{metric}_k{k}"], runs[i][metric] ("mAP", "top1")
    ylabel: str  # the curve's y axis ("mAP (%)")
    classes: list[str]  # class names, in column order of the decision values
    train_ids: Mapping[str, Any]  # the ids a training sample may name (a --splits file is checked against them)
    train_what: str  # the training split in messages ("VOC07 trainval")

    @abstractmethod
    def draw(self, k: int, rng: StableRNG) -> list[str]:
        """One seeded training sample for ``k``: the ids of its images (an id may repeat)."""

    @abstractmethod
    def check_sample(self, k: int, sample: int, ids: list[str], src: str) -> None:
        """Refuse (BenchError naming ``src``) a sample of a splits file that this protocol cannot train on."""

    @abstractmethod
    def shared_features(self, splits: dict) -> np.ndarray:
        """Extract what every k shares and return the test features ``[N_test, d]``."""

    @abstractmethod
    def train_features(self, k: int, runs: list[list[str]]) -> np.ndarray:
        """The training feature matrix of ``k`` (rows indexed by :meth:`groups`), given the samples of ``k``."""

    @abstractmethod
    def groups(self, k: int, sample: int, ids: list[str]) -> list[Group]:
        """The binary problems of one sample, as groups of classes sharing one training set."""

    @abstractmethod
    def score(self, scores: np.ndarray) -> tuple[float, dict[str, float | None], list[str]]:
        """Test decision values ``[N_test, C]`` -> (metric in percent, per class, classes left out of the mean)."""

    def record_data(self, splits: dict) -> dict[str, Any]:
        """What the record's ``data`` gets besides the splits' provenance (image counts, list hashes)."""
        return {}


class LowShotEngine:
    """Runs a :class:`LowShotDataset` under a low-shot protocol for the task ``task_name`` (protocol table ``protocols``)."""

    def __init__(self, task_name: str, protocols: Mapping[str, Protocol]):
        self.task_name = task_name
        self.protocols = protocols

    # ------------------------------------------------------------------------------------------------------ splits
    def splits(self, dataset: LowShotDataset, proto: LowShotSVMProtocol, ctx: RunContext) -> tuple[dict, dict[str, Any]]:
        """Load ``--splits`` (checked) or draw from the seed; ``--save-splits`` writes what is used."""
        proto_id = f"{self.task_name}@{proto.name}"
        data: dict[str, Any] = {}
        given = ctx.option("splits")
        if given:
            splits, file_sha = load_splits(given, self.task_name)
            other = splits["protocol"].partition("@")[2].partition("+")[0]
            ours = getattr(proto, "sampling", None)
            if ours is not None and other in self.protocols:
                theirs = getattr(self.protocols[other], "sampling", None)
                if theirs != ours:
                    raise BenchError(f"splits file {given} was drawn for {splits['protocol']} ({theirs}), but {proto_id} "
                                     f"samples {ours}", f"use a splits file written for {proto_id}")
            check_known(splits, dataset.train_ids, dataset.train_what, str(given))
            for k, runs in splits["k"].items():
                for s, ids in enumerate(runs):
                    dataset.check_sample(int(k), s, ids, str(given))
            data.update(splits_file=str(Path(given).resolve()), splits_file_sha256=file_sha, splits_source="file")
        else:
            splits = draw_splits(self.task_name, proto_id, ctx.seed, proto.ks, proto.num_samples, dataset.draw)
            data.update(splits_source=f"drawn from seed {ctx.seed}")
        data["splits_sha256"] = splits_sha256(splits)
        if ctx.option("save_splits"):
            out = save_splits(ctx.option("save_splits"), splits)
            data["splits_saved_to"] = str(Path(out).resolve())
        return splits, data

    # --------------------------------------------------------------------------------------------------------- run
    def run(self, dataset: LowShotDataset, proto: LowShotSVMProtocol, ctx: RunContext, *, model_name: str = "",
            backbone: dict[str, Any] | None = None) -> TaskOutput:
        """Splits, features, per k one batched solve of every group x class x cost, test scores, cost selection and
        aggregation; then the curve figure and the record pieces. ``backbone`` (the family and the feature the SVMs
        saw, :func:`~mopro_bench.tasks.lowshot.features.feature_record`) goes to ``details.backbone``."""
        check_protocol(proto)
        solver = ctx.option("solver", "torch")
        cache_before = dict(CACHE_STATS)
        splits, data = self.splits(dataset, proto, ctx)
        t_feat = 0.0
        t0 = time.time()
        Xte = dataset.shared_features(splits)
        t_feat += time.time() - t0
        if solver not in SOLVERS:
            raise BenchError(f"unknown solver {solver!r}", "use --solver torch or --solver sklearn")
        costs = list(proto.costs)
        nc = len(costs)
        C = len(dataset.classes)
        metric = dataset.metric
        metrics: dict[str, float] = {}
        per_run: dict[str, list[float]] = {}
        lowshot: dict[str, Any] = {}
        solver_info: dict[str, Any] = {}
        selection_notes = []
        ks = [int(k) for k in splits["k"]]
        t_svm = 0.0
        train_shapes = {}
        left_out_any: set[str] = set()
        from tqdm.auto import tqdm

        for k in tqdm(ks, desc=f"{self.task_name} SVMs ({solver})", disable=not ctx.progress, leave=False):
            runs = splits["k"][str(k)]
            t1 = time.time()
            Xtr = dataset.train_features(k, runs)
            t_feat += time.time() - t1
            train_shapes[str(k)] = list(Xtr.shape)
            t_k = time.time()
            S = len(runs)
            groups = [g for s, ids in enumerate(runs) for g in dataset.groups(k, s, ids)]
            coef, icpt, info = solve_groups(groups, Xtr, proto, ctx, solver)
            if info["not_converged"]:
                selection_notes.append(f"k={k}: {info['not_converged']} of {info['problems']} SVM problems did not "
                                       "converge (last iterate used; details.solver.by_k)")
            # test scores per (sample, cost): [N_test, C]
            scores = np.zeros((S, nc, Xte.shape[0], C))
            for gi, g in enumerate(groups):
                for j, cls in enumerate(g.classes):
                    scores[g.sample, :, :, cls] = (Xte @ coef[gi, j].T + icpt[gi, j]).T
            table = [[dataset.score(scores[s, c]) for c in range(nc)] for s in range(S)]  # (value, per_class, left_out)
            values = np.array([[table[s][c][0] for c in range(nc)] for s in range(S)])
            if np.isnan(values).any():
                raise BenchError(f"{self.task_name}: no class of the {getattr(proto, 'test_split', 'test')} set has a "
                                 "positive image", "check the dataset's label files (`mopro-bench data check`)")
            left_out_any.update(c for s in range(S) for c in table[s][0][2])
            chosen, cv_info = self._select(values, groups, Xtr, proto, ctx, solver, k, S, selection_notes)
            vals = [float(values[s, chosen[s]]) for s in range(S)]
            key = f"{metric}_k{k}"
            metrics[key] = round(float(np.mean(vals)), 4)
            metrics[f"{key}_std"] = round(_std(vals, proto.std_ddof), 4)
            per_run[key] = [round(v, 4) for v in vals]
            entry: dict[str, Any] = {
                "mean": metrics[key], "std": metrics[f"{key}_std"],
                "runs": [{"sample": s, "n_train": int(len(runs[s])), "cost": costs[chosen[s]], metric: round(vals[s], 4),
                          "per_class": table[s][chosen[s]][1],
                          **({"classes_left_out": table[s][chosen[s]][2]} if table[s][chosen[s]][2] else {})}
                         for s in range(S)],
            }
            if proto.cost_selection == "test":  # the table the published selection reads (never shown for cv)
                entry["test_by_cost"] = {str(c): round(float(values[:, i].mean()), 4) for i, c in enumerate(costs)}
            if cv_info is not None:
                entry["cv"] = {kk: v for kk, v in cv_info.items() if kk != "solver"}
            lowshot[str(k)] = entry
            solver_info[str(k)] = {**info, **({"cv_solver": cv_info["solver"]} if cv_info and "solver" in cv_info else {})}
            t_svm += time.time() - t_k

        artifacts = []
        modified = "" if self.protocols.get(proto.name) == proto else " (modified)"
        png = ctx.artifact("lowshot.png")
        if png is not None:
            plot_curve(png, ks, [metrics[f"{metric}_k{k}"] for k in ks], [metrics[f"{metric}_k{k}_std"] for k in ks],
                       ylabel=dataset.ylabel, title=f"{self.task_name}@{proto.name}{modified}  {model_name}")
            artifacts.append(str(png))
        if left_out_any:
            selection_notes.append(f"AP undefined (no positive test image), left out of the mean: "
                                   f"{', '.join(sorted(left_out_any))}")
        if selection_notes:
            warnings.warn("; ".join(selection_notes), RuntimeWarning, stacklevel=2)
        defs = {f"{metric}_k{k}": f"{proto.aggregate}; k={k} images per class" for k in ks}
        defs.update({f"{metric}_k{k}_std": f"std (ddof={proto.std_ddof}, 0 for one sample) of {metric}_k{k} over the samples"
                     for k in ks})
        details = {
            "ks": ks,
            "samples_per_k": {str(k): len(splits["k"][str(k)]) for k in ks},
            "per_run": per_run,
            "lowshot": lowshot,
            "classes": list(dataset.classes),
            "solver": {"name": solver, "by_k": solver_info},
            "selection_notes": selection_notes,
            "feature_cache": {k: CACHE_STATS[k] - cache_before[k] for k in cache_before},
            "features": {"train": train_shapes, "test": list(Xte.shape)},
            **({"backbone": {**backbone, "feature_dim": int(Xte.shape[1])}} if backbone is not None else {}),
            "timings": {"features_s": round(t_feat, 3), "svm_s": round(t_svm, 3)},
        }
        return TaskOutput(metrics=metrics, details=details, selection=selection_text(proto),
                          data={**data, **dataset.record_data(splits)}, artifacts=artifacts,
                          metric_units={m: "%" for m in metrics}, metric_definitions=defs)

    @staticmethod
    def _select(values: np.ndarray, groups: list[Group], Xtr: np.ndarray, proto: LowShotSVMProtocol, ctx: RunContext,
                solver: str, k: int, S: int, notes: list[str]) -> tuple[list[int], dict[str, Any] | None]:
        """The cost index of each sample (``values [S, ncost]`` of the test metric) and the CV record, if any."""
        if proto.cost_selection == "fixed":
            return [0] * S, None
        if proto.cost_selection == "test":
            return [int(np.argmax(values.mean(0)))] * S, None
        chosen, cv_info = cv_select(groups, Xtr, proto, ctx, solver, k, S)
        chosen = [c if c >= 0 else cv_info["fallback_cost_index"] for c in chosen]
        if cv_info["fallback_samples"]:
            notes.append(f"k={k}: {len(cv_info['fallback_samples'])} sample(s) could not be cross-validated "
                         f"(< 2 positives per class): C={proto.cv_fallback_cost}")
        return chosen, cv_info


def selection_text(proto: LowShotSVMProtocol) -> str:
    """The record's ``selection``: how the cost of each sample was chosen."""
    if proto.cost_selection == "fixed":
        return f"fixed cost C={proto.costs[0]} (no selection); mean ± std over the samples of each k"
    if proto.cost_selection == "test":
        return "test-set (as published): per k, the cost with the best mean test metric over the samples"
    return (f"cost per (k, sample) by {proto.cv_folds}-fold stratified cross-validation inside the training sample "
            f"(mean held-out AP over classes); C={proto.cv_fallback_cost} where a class has < 2 positives")


def _std(values: list[float], ddof: int) -> float:
    v = np.asarray(values, dtype=np.float64)
    return float(v.std(ddof=ddof)) if len(v) > ddof else 0.0
