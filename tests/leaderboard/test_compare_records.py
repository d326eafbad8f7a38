"""`compare` on synthetic records with a known difference: significant and not, per test kind, and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sst

from mopro_bench.compare import Side, compare, resolve_side
from mopro_bench.errors import BenchError
from tests.leaderboard.test_leaderboard_tables import SHA_A, SHA_B, VOC_DATA, _fast_records, make_record, put  # noqa: F401 (fixture)

KS = (1, 2, 4, 8, 16)


def lowshot(name, sha, runs: dict[int, np.ndarray], seed=0, **kw):
    metrics = {f"mAP_k{k}": float(np.mean(v)) for k, v in runs.items()}
    metrics |= {f"mAP_k{k}_std": float(np.std(v, ddof=1)) for k, v in runs.items()}
    return make_record(name=name, sha=sha, seed=seed, metrics=metrics,
                       details={"per_run": {f"mAP_k{k}": list(map(float, v)) for k, v in runs.items()}}, **kw)


def by_metric(report):
    return {(r.protocol_id, r.metric): r for r in report.rows}


def test_per_run_paired_ttest_significant_and_not():
    rng = np.random.default_rng(0)
    base = {k: 50 + 5 * i + rng.normal(0, 2.0, 5) for i, k in enumerate(KS)}  # split draws vary a lot...
    better = {k: v + 3.0 + rng.normal(0, 0.3, 5) for k, v in base.items()}  # ...but B is +3 on every draw
    noise = {k: v + rng.normal(0, 0.3, 5) for k, v in base.items()}  # no real difference
    a = Side("A", [lowshot("a", SHA_A, base)])
    rep = compare(a, Side("B", [lowshot("b", SHA_B, better)]), n_boot=200)
    assert [r.metric for r in rep.rows] == [f"mAP_k{k}" for k in KS]  # `_std` companions are not compared
    for k in KS:
        r = by_metric(rep)["voc_lowshot@mopro", f"mAP_k{k}"]
        ref = sst.ttest_rel(better[k], base[k])
        assert r.test == "paired t-test over runs (5 runs over 1 seed)"
        assert r.diff == pytest.approx(np.mean(better[k] - base[k])) and r.diff == pytest.approx(3.0, abs=0.5)
        assert r.p_value == pytest.approx(ref.pvalue) and r.significant and r.verdict == "yes (B better)"
        assert r.low < r.diff < r.high and r.low > 0
    rep = compare(a, Side("B", [lowshot("b", SHA_B, noise)]), n_boot=200)
    for r in rep.rows:
        assert r.low < 0 < r.high and not r.significant and r.verdict == "no"
    # unpaired view of the same +3 runs (different splits) is not significant: the split variance swamps it
    rep = compare(a, Side("B", [lowshot("b", SHA_B, better, data={**VOC_DATA, "splits_sha256": "other"})]), n_boot=200)
    r = by_metric(rep)["voc_lowshot@mopro", "mAP_k1"]
    assert r.test.startswith("Welch t-test over runs") and "not paired: different data/splits" in r.note
    assert r.p_value == pytest.approx(sst.ttest_ind(better[1], base[1], equal_var=False).pvalue)


def test_per_image_bootstrap_for_accuracy():
    rng = np.random.default_rng(1)
    n = 1000
    a = (rng.random(n) < 0.6).astype(int)
    b = a.copy()
    b[rng.choice(np.nonzero(a == 0)[0], 80, replace=False)] = 1  # +8 points, paired
    c = a.copy()
    c[rng.choice(np.nonzero(a == 0)[0], 3, replace=False)] = 1  # +0.3 points

    def rec(name, sha, correct):
        return make_record(task="imagenet_r", pid="imagenet_r@hendrycks", name=name, sha=sha, data={"kind": "imagenet-r"},
                           metrics={"top1": 100 * correct.mean(), "calib_rms": 10.0},
                           details={"per_image": {"ids_sha256": "same", "top1": {"correct": correct.tolist()}}})

    ra = Side("A", [rec("a", SHA_A, a)])
    rep = compare(ra, Side("B", [rec("b", SHA_B, b)]), n_boot=1000, seed=0)
    r = by_metric(rep)["imagenet_r@hendrycks", "top1"]
    assert r.test == "paired bootstrap over test images" and r.n == n
    assert r.diff == pytest.approx(8.0) and r.low > 6.0 and r.high < 10.0 and r.significant
    assert r.note == ""  # recomputed accuracy equals the recorded one
    cal = by_metric(rep)["imagenet_r@hendrycks", "calib_rms"]
    assert cal.test == "none" and cal.p_value is None and cal.verdict == "no test" and not cal.higher_is_better
    rep2 = compare(ra, Side("B", [rec("b", SHA_B, b)]), n_boot=1000, seed=0)
    assert by_metric(rep2)["imagenet_r@hendrycks", "top1"] == r  # seeded: identical
    r = by_metric(compare(ra, Side("B", [rec("c", SHA_B, c)]), n_boot=1000))["imagenet_r@hendrycks", "top1"]
    assert r.diff == pytest.approx(0.3) and r.low <= 0 and not r.significant
    # different test images: no pairing over images (and one number each, so no test at all)
    other = rec("b", SHA_B, b)
    other["details"]["per_image"]["ids_sha256"] = "different"
    r = by_metric(compare(ra, Side("B", [other])))["imagenet_r@hendrycks", "top1"]
    assert r.test == "none" and "per-image data not paired: different images" in r.note


def test_per_image_bootstrap_for_map():
    rng = np.random.default_rng(2)
    n, c = 400, 4
    labels = np.where(rng.random((n, c)) < 0.25, 1, -1)
    labels[::11, 0] = 0
    sa = rng.normal(size=(n, c)) + 0.5 * (labels > 0)
    sb = sa + 1.0 * (labels > 0)  # B separates positives better on every class

    def rec(name, sha, scores):
        from mopro_bench.metrics.stats import mean_ap_weighted

        m = float(mean_ap_weighted(scores, labels, np.ones((1, n)))[0])
        return make_record(task="voc_linear", pid="voc_linear@x", name=name, sha=sha, metrics={"mAP": m},
                           details={"per_image": {"scores": scores.tolist(), "labels": labels.tolist()}})

    rep = compare(Side("A", [rec("a", SHA_A, sa)]), Side("B", [rec("b", SHA_B, sb)]), n_boot=300)
    (r,) = rep.rows
    assert r.test == "paired bootstrap over test images" and r.diff > 5 and r.low > 0 and r.significant and r.note == ""


def test_seeds_paired_and_unpaired():
    def recs(name, sha, values, seeds=(0, 1, 2)):
        return [make_record(name=name, sha=sha, seed=s, metrics={"mAP_k1": v}) for s, v in zip(seeds, values)]

    a, b = [60.0, 62.0, 61.0], [63.0, 64.5, 63.5]
    r = compare(Side("A", recs("a", SHA_A, a)), Side("B", recs("b", SHA_B, b))).rows[0]
    assert r.test == "paired t-test over seeds (n=3)" and r.p_value == pytest.approx(sst.ttest_rel(b, a).pvalue)
    r = compare(Side("A", recs("a", SHA_A, a)), Side("B", recs("b", SHA_B, b, seeds=(5, 6, 7)))).rows[0]
    assert r.test.startswith("Welch t-test over seeds") and "no common seeds" in r.note
    assert r.p_value == pytest.approx(sst.ttest_ind(b, a, equal_var=False).pvalue)


def test_holm_and_argument_checks():
    rng = np.random.default_rng(3)
    base = {k: 50 + rng.normal(0, 1, 5) for k in KS}
    a = Side("A", [lowshot("a", SHA_A, base)])
    b = Side("B", [lowshot("b", SHA_B, {k: v + rng.normal(0.5, 0.5, 5) for k, v in base.items()})])
    plain = compare(a, b)
    holm = compare(a, b, correction="holm")
    assert all(h.p_adjusted >= p.p_value for h, p in zip(holm.rows, plain.rows))
    assert min(h.p_adjusted for h in holm.rows) == pytest.approx(5 * min(p.p_value for p in plain.rows))
    for kw, msg in (({"alpha": 1.5}, "--alpha"), ({"n_boot": 10}, "--bootstrap"), ({"correction": "bh"}, "--correction")):
        with pytest.raises(BenchError, match=msg):
            compare(a, b, **kw)
    other = Side("B", [make_record(name="b", sha=SHA_B, pid="places_lowshot@mopro", task="places_lowshot")])
    with pytest.raises(BenchError, match="no task@protocol in common"):
        compare(a, other)
    changed = Side("B", [make_record(name="b", sha=SHA_B, params={"cost": 2.0})])
    with pytest.raises(BenchError, match="different protocol definitions"):
        compare(a, changed)


def test_resolving_sides(tmp_path):
    root = tmp_path / "r"
    pa = put(root, make_record(name="mopro", sha=SHA_A))
    put(root, make_record(name="mopro", sha=SHA_A, seed=1))
    put(root, make_record(name="moco", sha=SHA_B))
    put(root, make_record(name="twin", sha="c3" * 32))
    put(root, make_record(name="twin", sha="d4" * 32))
    assert len(resolve_side("mopro", root).records) == 2
    assert {r["checkpoint"]["name"] for r in resolve_side("b2b2b2", root).records} == {"moco"}
    assert resolve_side(str(pa), root).records[0]["seed"] == 0
    with pytest.raises(BenchError, match="'twin' matches 2 different checkpoints"):
        resolve_side("twin", root)
    with pytest.raises(BenchError, match=r"no results for checkpoint 'nope'.*moco, mopro, twin"):
        resolve_side("nope", root)
    with pytest.raises(BenchError, match="result file .*missing.json does not exist"):
        resolve_side(str(tmp_path / "missing.json"), root)


def test_cli_compare(tmp_path, cli):
    rng = np.random.default_rng(4)
    base = {k: 50 + rng.normal(0, 2, 5) for k in KS}
    root = tmp_path / "r"
    put(root, lowshot("mopro", SHA_A, {k: v + 4 + rng.normal(0, 0.2, 5) for k, v in base.items()}))
    put(root, lowshot("moco", SHA_B, base))
    code, out, err = cli("compare", "moco", "mopro", "--results-dir", root)
    assert code == 0, err
    assert "A: moco = moco [b2b2b2b2] (1 record)" in out and "significant = two-sided p < 0.05" in out
    lines = [ln for ln in out.splitlines() if ln.startswith("voc_lowshot@mopro")]
    assert len(lines) == 5 and all(ln.endswith("yes (B better)") for ln in lines)
    code, out, _ = cli("--seed", "1", "compare", "moco", "mopro", "--results-dir", root, "--format", "json",
                       "--out", tmp_path / "c.json")
    assert code == 0 and (tmp_path / "c.json").read_text() == out and '"difference": "B - A"' in out
    code, out, _ = cli("compare", "moco", "mopro", "--results-dir", root, "--format", "csv", "--metric", "mAP_k1")
    assert code == 0 and len(out.strip().splitlines()) == 2
    code, _, err = cli("compare", "moco", "nobody", "--results-dir", root)
    assert code == 2 and err.startswith("error: no results for checkpoint 'nobody'") and err.count("\n") == 1
