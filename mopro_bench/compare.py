"""Compare two checkpoints (or two result files) protocol by protocol: the difference, its uncertainty, and whether
it is significant.

A side (``A`` or ``B``) is a result file, or a checkpoint looked up in a results directory by display name, SHA-256
prefix or checkpoint path. For every protocol (id + version + constants) both sides have, and every metric both
report, the difference ``B - A`` gets the strongest test the records allow, in this order:

1. ``details["per_image"]`` on both sides (same images): **paired bootstrap over test images** (same resampled
   images for both models; percentile interval; two-sided bootstrap p-value). With several common seeds the
   per-seed metric is averaged inside every resample.
2. ``details["per_run"][metric]`` on both sides, paired (same seeds, equal run counts, same data/splits):
   **paired t-test over runs** (e.g. the 5 low-shot split draws per seed), t interval.
3. two or more common seeds: **paired t-test over seeds** on the recorded metric.
4. runs or seeds that cannot be paired (different splits, different seeds): **Welch's t-test**.
5. one number each: the difference only, no test (the report says what to add).

Only records of the *same experiment* are pooled as seeds of a side (``record.experiment.key``), and a pair A/B is
only formed between experiments that differ in the checkpoint alone (same protocol, data content, options:
:func:`mopro_bench.results.pairing_key`); a checkpoint evaluated on two datasets gives two comparisons, never one
pooled one.

``significant`` means p < alpha (two-sided; default alpha = 0.05), per comparison; ``--correction holm`` adjusts the
p-values of all comparisons together (Holm-Bonferroni). Bootstrap draws are seeded (``--seed``), so the output is
reproducible.

Per-image detail formats (written by tasks into ``details["per_image"]``)::

    {"ids_sha256": "<hash of the ordered test image ids>",          # optional; checked when both sides have it
     "top1": {"correct": [1, 0, 1, ...]},                            # accuracy in % = 100 * mean
     "mAP": {"scores": [[...C...], ...], "labels": [[1, -1, 0, ...], ...], "ap": "sklearn" | "voc07"},
     "nll": {"values": [...], "scale": 1.0}}                         # any per-image additive score: scale * mean

or the short form ``{"correct": [...]}`` (for ``top1``) / ``{"scores": ..., "labels": ...}`` (for ``mAP``), with an
optional ``"metric"`` key naming the metric it reproduces.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mopro_bench.errors import BenchError
from mopro_bench.leaderboard.model import is_companion, lower_is_better_guess, natural_key, task_info
from mopro_bench.metrics import stats
from mopro_bench.results import (
    data_fingerprint,
    load_records,
    pairing_key,
    protocol_key,
    read_record,
    run_data_key,
    task_matches,
)

# a per-image recomputation may differ from the recorded metric by rounding only; more means a definition mismatch
RECOMPUTE_TOLERANCE = 0.05


@dataclass
class Side:
    label: str
    records: list[dict[str, Any]]


@dataclass
class Comparison:
    protocol_id: str
    metric: str
    a: float
    b: float
    diff: float  # B - A
    low: float | None
    high: float | None
    p_value: float | None
    test: str
    n: int
    alpha: float
    higher_is_better: bool
    note: str = ""
    p_adjusted: float | None = None

    @property
    def significant(self) -> bool | None:
        p = self.p_adjusted if self.p_adjusted is not None else self.p_value
        return None if p is None else bool(p < self.alpha)

    @property
    def verdict(self) -> str:
        sig = self.significant
        if sig is None:
            return "no test"
        if not sig:
            return "no"
        better = "B" if (self.diff > 0) == self.higher_is_better else "A"
        return f"yes ({better} better)"


@dataclass
class CompareReport:
    a: Side
    b: Side
    rows: list[Comparison]
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # same id, different protocol definition
    alpha: float = stats.DEFAULT_ALPHA
    correction: str = "none"


# --------------------------------------------------------------------------------------------------- resolving


def _ck_ident(rec: dict[str, Any]) -> tuple[str, str | None]:
    ck = rec["checkpoint"]
    return ck["name"], ck.get("sha256")


def _describe(records: list[dict[str, Any]], spec: str) -> str:
    names = sorted({f"{n} [{(s or 'no hash')[:8]}]" for n, s in map(_ck_ident, records)})
    return f"{spec} = {', '.join(names)} ({len(records)} record{'s' if len(records) != 1 else ''})"


def resolve_side(spec: str, results_dir: str | Path, *, task: str | None = None, skip_invalid: bool = False,
                 _cache: dict | None = None) -> Side:
    """A result file, or the records in ``results_dir`` of the checkpoint named ``spec`` (display name, SHA-256
    prefix of at least 6 hex digits, or the checkpoint file's path)."""
    p = Path(spec)
    if p.suffix == ".json" and not p.exists():
        raise BenchError(f"result file {p} does not exist", "check the path, or name a checkpoint in --results-dir")
    if p.suffix == ".json" and not p.is_file():
        raise BenchError(f"result file {p} is not a file", "pass a result file (*.json) or a checkpoint name")
    if p.suffix == ".json" and p.is_file():
        rec = read_record(p)
        if not task_matches(task, rec["task"], rec["protocol"]["id"]):
            raise BenchError(f"{p} is a {rec['protocol']['id']} result, not {task}", "drop --task or pass another file")
        return Side(_describe([rec], spec), [rec])
    if _cache is not None and "records" in _cache:
        records = _cache["records"]
    else:
        loaded = load_records(results_dir, task=task, skip_invalid=skip_invalid)
        for line in loaded.unreadable:
            print(f"warning: skipped {line}", file=sys.stderr)
        for line in loaded.invalid:
            print(f"warning: skipped invalid record: {line}", file=sys.stderr)
        records = [r for _, r in loaded.records]
        if _cache is not None:
            _cache["records"] = records
    if not records:
        raise BenchError(f"no result records in {results_dir}" + (f" for --task {task}" if task else ""),
                         "run `mopro-bench eval` first, or pass result files or --results-dir")
    matched = [r for r in records if r["checkpoint"]["name"] == spec]
    if not matched and re.fullmatch(r"[0-9a-fA-F]{6,64}", spec):
        matched = [r for r in records if (r["checkpoint"].get("sha256") or "").startswith(spec.lower())]
    if not matched and p.exists():
        target = str(p.resolve())
        matched = [r for r in records if _same_path(r["checkpoint"].get("path"), target)]
        if not matched and p.is_file():
            from mopro_bench.io import sha256_file

            digest = sha256_file(p)
            matched = [r for r in records if r["checkpoint"].get("sha256") == digest]
    if not matched:
        known = sorted({n for n, _ in map(_ck_ident, records)})
        shown = ", ".join(known[:12]) + (f", ... ({len(known)} in all)" if len(known) > 12 else "")
        raise BenchError(f"no results for checkpoint {spec!r} in {results_dir}" + (f" (--task {task})" if task else ""),
                         f"use a result file, a checkpoint name ({shown}), a SHA-256 prefix or a checkpoint path")
    idents = sorted({(n, s or "") for n, s in map(_ck_ident, matched)})
    if len(idents) > 1:
        listed = ", ".join(f"{n} [{s[:12] or 'no hash'}]" for n, s in idents)
        raise BenchError(f"{spec!r} matches {len(idents)} different checkpoints: {listed}",
                         "pass a longer SHA-256 prefix or a result file")
    return Side(_describe(matched, spec), matched)


def _same_path(a: str | None, target: str) -> bool:
    if not a:
        return False
    try:
        return str(Path(a).resolve()) == target
    except OSError:
        return False


# --------------------------------------------------------------------------------------------------- per-image data


def per_image_spec(record: dict[str, Any], metric: str) -> dict[str, Any] | None:
    """The per-image data of ``record`` that reproduces ``metric``, or None."""
    pi = (record.get("details") or {}).get("per_image")
    if not isinstance(pi, dict):
        return None
    spec = pi.get(metric)
    if isinstance(spec, dict):
        return spec
    if "correct" in pi or "scores" in pi or "values" in pi:
        default = "top1" if "correct" in pi else "mAP" if "scores" in pi else None
        if (pi.get("metric") or default) == metric:
            return pi
    return None


def _ids(record: dict[str, Any]) -> str | None:
    pi = (record.get("details") or {}).get("per_image") or {}
    if "ids_sha256" in pi:
        return str(pi["ids_sha256"])
    if isinstance(pi.get("ids"), list):
        from mopro_bench.io import sha256_lines

        return sha256_lines([str(i) for i in pi["ids"]])
    return None


def _spec_kind(spec: dict[str, Any]) -> str | None:
    if "correct" in spec:
        return "correct"
    if "values" in spec:
        return "values"
    if "scores" in spec and "labels" in spec:
        return "ap"
    return None


def _per_image_test(metric: str, a_recs, b_recs, *, alpha, n_boot, seed) -> stats.DiffTest | None:
    a_specs = [per_image_spec(r, metric) for r in a_recs]
    b_specs = [per_image_spec(r, metric) for r in b_recs]
    if any(s is None for s in a_specs + b_specs):
        return None
    kinds = {_spec_kind(s) for s in a_specs + b_specs}
    if len(kinds) != 1 or None in kinds:
        return None
    kind = kinds.pop()
    for ra, rb in zip(a_recs, b_recs):
        ia, ib = _ids(ra), _ids(rb)
        if ia and ib and ia != ib:
            return None
    test = "paired bootstrap over test images" + (f" (mean of {len(a_recs)} seeds)" if len(a_recs) > 1 else "")
    try:
        if kind in ("correct", "values"):
            key = kind
            scale = 100.0 if kind == "correct" else float(a_specs[0].get("scale", 1.0))
            a = np.mean([np.asarray(s[key], dtype=np.float64) for s in a_specs], axis=0)
            b = np.mean([np.asarray(s[key], dtype=np.float64) for s in b_specs], axis=0)
            if a.shape != b.shape or a.ndim != 1:
                return None
            return stats.paired_bootstrap_mean(a, b, scale=scale, n_boot=n_boot, alpha=alpha, seed=seed, test=test)
        mode = str(a_specs[0].get("ap", "sklearn"))
        a_s = [np.asarray(s["scores"], dtype=np.float64) for s in a_specs]
        b_s = [np.asarray(s["scores"], dtype=np.float64) for s in b_specs]
        labels = [np.asarray(s["labels"]) for s in a_specs]
        if any(x.shape != labels[0].shape for x in a_s + b_s + labels + [np.asarray(s["labels"]) for s in b_specs]):
            return None
        if any(not np.array_equal(np.asarray(sa["labels"]), np.asarray(sb["labels"])) for sa, sb in zip(a_specs, b_specs)):
            return None

        # images on axis 0, seeds on axis 1: [n, seeds, classes]; a resample weights images, every seed alike
        y = np.stack(labels, axis=1)

        def mean_map(scores: np.ndarray, w: np.ndarray) -> np.ndarray:
            return np.mean([stats.mean_ap_weighted(scores[:, i], y[:, i], w, mode=mode) for i in range(y.shape[1])], axis=0)

        return stats.paired_bootstrap(mean_map, np.stack(a_s, axis=1), np.stack(b_s, axis=1), n_boot=n_boot,
                                      alpha=alpha, seed=seed, test=test)
    except (KeyError, TypeError, ValueError):
        return None


# --------------------------------------------------------------------------------------------------- one metric


def _per_run(record: dict[str, Any], metric: str) -> list[float] | None:
    pr = (record.get("details") or {}).get("per_run")
    if not isinstance(pr, dict):
        return None
    vals = pr.get(metric)
    if not isinstance(vals, list) or not vals:
        return None
    try:
        return [float(v) for v in vals]
    except (TypeError, ValueError):
        return None


def _by_seed(records: list[dict], metric: str) -> tuple[dict[int, dict], bool]:
    """One record per seed (the newest when a seed was evaluated twice, e.g. on two datasets)."""
    out: dict[int, dict] = {}
    dup = False
    for r in sorted((r for r in records if metric in r["metrics"]), key=lambda r: r.get("created", "")):
        dup |= r["seed"] in out
        out[r["seed"]] = r
    return out, dup


def compare_metric(metric: str, a_recs: list[dict], b_recs: list[dict], *, alpha: float, n_boot: int, seed: int,
                   higher_is_better: bool, protocol_id: str) -> Comparison:
    a_by, dup_a = _by_seed(a_recs, metric)
    b_by, dup_b = _by_seed(b_recs, metric)
    extra_note = "several records for one seed, the newest used" if dup_a or dup_b else ""
    common = sorted(set(a_by) & set(b_by))
    pa, pb = [a_by[s] for s in common], [b_by[s] for s in common]

    def row(test: stats.DiffTest | None, a_val: float, b_val: float, test_name: str, n: int, note: str = ""):
        note = "; ".join(x for x in (note, extra_note) if x)
        if test is None:
            return Comparison(protocol_id, metric, a_val, b_val, b_val - a_val, None, None, None, test_name, n, alpha,
                              higher_is_better, note)
        return Comparison(protocol_id, metric, a_val, b_val, test.diff, test.low, test.high, test.p_value, test_name,
                          test.n, alpha, higher_is_better, note)

    def mean_metric(recs):
        return float(np.mean([r["metrics"][metric] for r in recs]))

    same_data = all(run_data_key(x) == run_data_key(y) for x, y in zip(pa, pb))
    has_images = bool(pa) and all(per_image_spec(r, metric) is not None for r in pa + pb)
    if has_images and not same_data:
        extra_note = "; ".join(x for x in (extra_note, "per-image data not paired: different data") if x)
    # 1. per-image paired bootstrap
    if common and same_data:
        res = _per_image_test(metric, pa, pb, alpha=alpha, n_boot=n_boot, seed=seed)
        if res is not None:
            a_val, b_val = mean_metric(pa), mean_metric(pb)
            note = ""
            if abs(res.diff - (b_val - a_val)) > RECOMPUTE_TOLERANCE:
                note = (f"per-image recomputation gives B-A = {res.diff:.3f}, the records {b_val - a_val:.3f}: "
                        "check the task's details.per_image")
            return row(res, a_val, b_val, res.test, res.n, note)
        if has_images:
            extra_note = "; ".join(x for x in (extra_note, "per-image data not paired: different images or formats") if x)
    # 2. per-run paired t-test
    if common and same_data:
        ra = [_per_run(r, metric) for r in pa]
        rb = [_per_run(r, metric) for r in pb]
        if all(x is not None for x in ra + rb) and all(len(x) == len(y) for x, y in zip(ra, rb)):
            xa = [v for x in ra for v in x]
            xb = [v for x in rb for v in x]
            if len(xa) >= 2:
                res = stats.paired_ttest(xa, xb, alpha=alpha)
                where = f"{len(xa)} runs over {len(common)} seed{'s' if len(common) > 1 else ''}"
                return row(res, float(np.mean(xa)), float(np.mean(xb)), f"paired t-test over runs ({where})", len(xa))
    # 3. seeds paired
    if len(common) >= 2 and same_data:
        xa = [r["metrics"][metric] for r in pa]
        xb = [r["metrics"][metric] for r in pb]
        res = stats.paired_ttest(xa, xb, alpha=alpha)
        return row(res, float(np.mean(xa)), float(np.mean(xb)), f"paired t-test over seeds (n={len(common)})", len(common))
    # 4. unpaired
    all_a, all_b = list(a_by.values()), list(b_by.values())
    why = "different data/splits" if common and not same_data else "no common seeds" if not common else "single seed"
    ra = [_per_run(r, metric) for r in all_a]
    rb = [_per_run(r, metric) for r in all_b]
    if all(x is not None for x in ra + rb):
        xa = [v for x in ra for v in x]
        xb = [v for x in rb for v in x]
        if len(xa) >= 2 and len(xb) >= 2:
            res = stats.welch_ttest(xa, xb, alpha=alpha)
            return row(res, float(np.mean(xa)), float(np.mean(xb)), f"Welch t-test over runs ({len(xa)}+{len(xb)})",
                       len(xa) + len(xb), f"not paired: {why}")
    if len(all_a) >= 2 and len(all_b) >= 2:
        xa = [r["metrics"][metric] for r in all_a]
        xb = [r["metrics"][metric] for r in all_b]
        res = stats.welch_ttest(xa, xb, alpha=alpha)
        return row(res, float(np.mean(xa)), float(np.mean(xb)), f"Welch t-test over seeds ({len(xa)}+{len(xb)})",
                   len(xa) + len(xb), f"not paired: {why}")
    # 5. nothing to test with
    return row(None, mean_metric(all_a), mean_metric(all_b), "none", min(len(all_a), len(all_b)),
               "one number each: run more seeds, or use a task that records details.per_run / per_image")


# --------------------------------------------------------------------------------------------------- report


def compare(a: Side, b: Side, *, alpha: float = stats.DEFAULT_ALPHA, n_boot: int = stats.DEFAULT_N_BOOT,
            seed: int = 0, correction: str = "none", metrics: list[str] | None = None) -> CompareReport:
    if not 0 < alpha < 1:
        raise BenchError(f"--alpha {alpha} is not a level", "use a number between 0 and 1, e.g. 0.05")
    if n_boot < 100:
        raise BenchError(f"--bootstrap {n_boot} is too few resamples", "use 1000 or more (100 at the very least)")
    if correction not in ("none", "holm"):
        raise BenchError(f"--correction {correction!r} is unknown", "use none or holm")
    ga: dict[tuple, dict[str, list[dict]]] = {}
    gb: dict[tuple, dict[str, list[dict]]] = {}
    for recs, g in ((a.records, ga), (b.records, gb)):
        for r in recs:  # protocol definition -> how it was measured (data, options) -> the records
            g.setdefault(protocol_key(r), {}).setdefault(pairing_key(r), []).append(r)
    ids_a = {k[0] for k in ga}
    ids_b = {k[0] for k in gb}
    report = CompareReport(a, b, [], alpha=alpha, correction=correction)
    report.only_a = sorted(ids_a - ids_b, key=natural_key)
    report.only_b = sorted(ids_b - ids_a, key=natural_key)
    for key in sorted(set(ga) | set(gb), key=lambda k: (natural_key(k[0]), k[1], k[2])):
        if key not in ga or key not in gb:
            if key[0] in ids_a and key[0] in ids_b:
                report.mismatched.append(f"{key[0]} (protocol v{key[1]}, constants {key[2]} on "
                                         f"{'A' if key in ga else 'B'} only)")
            continue
        common = sorted(set(ga[key]) & set(gb[key]))
        several = len(set(ga[key]) | set(gb[key])) > 1
        if not common:
            report.mismatched.append(f"{key[0]} (measured on different data or with different options: "
                                     f"data {_data_fps(ga[key])} vs {_data_fps(gb[key])})")
            continue
        for pk in common:
            ra, rb = ga[key][pk], gb[key][pk]
            label = f"{key[0]} [{data_fingerprint(ra[0])}]" if several else key[0]
            split = [side for side, recs in (("A", ra), ("B", rb)) if len({r["experiment"]["key"] for r in recs}) > 1]
            if split:
                report.mismatched.append(f"{label} ({' and '.join(split)} hold several experiments of this protocol and "
                                         "data, e.g. two head files: pass result files)")
                continue
            task = ra[0]["task"]
            preferred, hib = task_info(task)
            ma = set().union(*(r["metrics"] for r in ra))
            mb = set().union(*(r["metrics"] for r in rb))
            both = {m for m in ma & mb if not is_companion(m, ma | mb)}
            if metrics:
                both &= set(metrics)
            ordered = [m for m in preferred if m in both] + sorted(both - set(preferred), key=natural_key)
            for m in ordered:
                report.rows.append(compare_metric(
                    m, ra, rb, alpha=alpha, n_boot=n_boot, seed=seed, protocol_id=label,
                    higher_is_better=hib.get(m, not lower_is_better_guess(m)),
                ))
    report.mismatched = sorted(set(report.mismatched))
    if correction == "holm":
        tested = [r for r in report.rows if r.p_value is not None]
        for r, p in zip(tested, stats.holm([r.p_value for r in tested])):
            r.p_adjusted = float(p)
    if not report.rows:
        shared = sorted(ids_a & ids_b)
        if shared and all("protocol v" in m for m in report.mismatched):
            raise BenchError(f"A and B share {', '.join(shared)} but under different protocol definitions",
                             "re-run one of them with the same mopro-bench version and --set overrides")
        if shared:
            raise BenchError(f"A and B share {', '.join(shared)} but no experiment: " + "; ".join(report.mismatched),
                             "evaluate both on the same data with the same options, or pass the two result files")
        raise BenchError("A and B have no task@protocol in common "
                         f"(A: {', '.join(sorted(ids_a)) or 'none'}; B: {', '.join(sorted(ids_b)) or 'none'})",
                         "evaluate both checkpoints on the same task@protocol")
    return report


def _data_fps(groups: dict[str, list[dict]]) -> str:
    return ", ".join(sorted({data_fingerprint(recs[0]) for recs in groups.values()}))


def _f(v: float | None, digits: int = 2) -> str:
    if v is None:
        return "—"
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return f"{v:.{digits}f}"


def _p(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.2g}" if v < 0.001 else f"{v:.3f}"


HEAD = ("protocol", "metric", "A", "B", "B-A", "CI", "p", "test", "significant")


def _table_rows(report: CompareReport) -> list[list[str]]:
    out = []
    for r in report.rows:
        ci = f"[{_f(r.low)}, {_f(r.high)}]" if r.low is not None else "—"
        p = _p(r.p_adjusted if r.p_adjusted is not None else r.p_value)
        out.append([r.protocol_id, r.metric + (" ↑" if r.higher_is_better else " ↓"), _f(r.a), _f(r.b),
                    f"{r.diff:+.2f}", ci, p, r.test, r.verdict])
    return out


def _legend(report: CompareReport) -> list[str]:
    level = round(100 * (1 - report.alpha), 3)
    corr = " with Holm-Bonferroni adjusted p-values over all rows" if report.correction == "holm" else ""
    return [
        f"A: {report.a.label}",
        f"B: {report.b.label}",
        f"B-A with its {level:g}% interval; significant = two-sided p < {report.alpha:g}{corr}. "
        "Tests: paired bootstrap over test images (per-image data), paired t-test over runs/seeds, Welch t-test "
        "when runs cannot be paired.",
    ]


def render_text(report: CompareReport) -> str:
    rows = [list(HEAD)] + _table_rows(report)
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEAD))]
    lines = _legend(report) + [""]
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if j < 2 or j >= 7 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += _tail(report)
    return "\n".join(lines) + "\n"


def _tail(report: CompareReport) -> list[str]:
    out = []
    notes = [f"{r.protocol_id} {r.metric}: {r.note}" for r in report.rows if r.note]
    if notes:
        out += ["", "notes:"] + [f"  {n}" for n in notes]
    if report.mismatched:
        out += ["", "not compared (same id, different protocol definition): " + "; ".join(report.mismatched)]
    if report.only_a:
        out.append("only A has: " + ", ".join(report.only_a))
    if report.only_b:
        out.append("only B has: " + ", ".join(report.only_b))
    return out


def render_markdown(report: CompareReport) -> str:
    lines = [f"- {x}" for x in _legend(report)] + [""]
    lines.append("| " + " | ".join(HEAD) + " |")
    lines.append("|---|---|" + "---:|" * 5 + "---|---|")
    lines += ["| " + " | ".join(r) + " |" for r in _table_rows(report)]
    tail = _tail(report)
    return "\n".join(lines + ([""] + [f"> {t.strip()}" for t in tail if t.strip()] if tail else [])) + "\n"


def report_dicts(report: CompareReport) -> list[dict[str, Any]]:
    out = []
    for r in report.rows:
        d = asdict(r)
        d["significant"] = r.significant
        out.append(d)
    return out


def render_csv(report: CompareReport) -> str:
    buf = io.StringIO()
    rows = report_dicts(report)
    cols = list(rows[0]) if rows else []
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def render_json(report: CompareReport) -> str:
    return json.dumps({
        "a": report.a.label, "b": report.b.label, "alpha": report.alpha, "correction": report.correction,
        "difference": "B - A", "rows": report_dicts(report), "only_a": report.only_a, "only_b": report.only_b,
        "not_compared": report.mismatched,
    }, indent=2) + "\n"


RENDERERS = {"text": render_text, "md": render_markdown, "csv": render_csv, "json": render_json}
