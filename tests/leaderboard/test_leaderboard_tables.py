"""Leaderboard: tables from a directory of synthetic records, refusals, published rows kept apart, protocol splits."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from mopro_bench import leaderboard as lb
from mopro_bench.errors import BenchError
from mopro_bench.leaderboard.model import task_info
from mopro_bench.results import build_record, load_records, record_path, write_record

KS = (1, 2, 4, 8, 16)
SHA_A = "a1" * 32
SHA_B = "b2" * 32
VOC_DATA = {"root": "/data/voc", "kind": "voc07", "splits_sha256": "5eed", "complete": True,
            "lists": {"trainval": "11" * 32, "test": "22" * 32}}


@pytest.fixture(autouse=True)
def _fast_records(monkeypatch):
    """build_record asks git and torch for provenance; the tests need neither."""
    import mopro_bench.results.store as results

    monkeypatch.setattr(results, "git_sha", lambda: "test")
    monkeypatch.setattr(results, "environment", lambda: {"python": "3", "torch": "x"})


def make_record(*, task="voc_lowshot", pid="voc_lowshot@mopro", name="mopro-r50", sha=SHA_A, seed=0, metrics=None,
                details=None, params=None, version="1", data=None, selection="last"):
    proto = pid.split("@")[1].split("+")[0]
    return build_record(
        task=task,
        protocol={"id": pid, "name": proto, "version": version, "params": params if params is not None else {"cost": 0.5},
                  "overrides": {}},
        checkpoint={"name": name, "path": f"/ckpt/{name}.pth", "sha256": sha, "format": "mopro", "arch": "resnet50",
                    "width": 1},
        seed=seed, data=dict(VOC_DATA if data is None else data), metrics=metrics or {"mAP_k1": 1.0},
        details=details or {}, selection=selection, timings={"total_s": 1.0},
    )


def put(root: Path, rec: dict) -> Path:
    return write_record(rec, record_path(root, rec))


def lowshot_metrics(base: float, std: float | None = None) -> dict[str, float]:
    m = {f"mAP_k{k}": base + 5 * i for i, k in enumerate(KS)}
    if std is not None:
        m.update({f"mAP_k{k}_std": std for k in KS})
    return m


@pytest.fixture
def results_dir(tmp_path):
    root = tmp_path / "results"
    # A: three seeds, k1 = 58, 60, 62 -> 60.00 ± 2.00 over seeds
    for seed, base in ((0, 58.0), (1, 60.0), (2, 62.0)):
        put(root, make_record(seed=seed, metrics=lowshot_metrics(base, std=9.0)))
    # B: one seed with the task's own spread (k1 = 50.00 ± 1.50 within the run)
    put(root, make_record(name="moco-v2", sha=SHA_B, metrics=lowshot_metrics(50.0, std=1.5)))
    return root


def only_table(tables, pid):
    found = [t for t in tables if t.protocol_id == pid]
    assert len(found) == 1, [t.title for t in tables]
    return found[0]


def test_cells_are_mean_and_std_over_seeds_or_within_run(results_dir):
    loaded = load_records(results_dir)
    assert len(loaded.records) == 4
    t = only_table(lb.build_tables(loaded.records), "voc_lowshot@mopro")
    assert t.metrics == [f"mAP_k{k}" for k in KS]  # natural order, `_std` companions are not columns
    a, b = t.measured  # sorted best first by the first column
    assert (a.name, b.name) == ("mopro-r50", "moco-v2")
    c = a.cells["mAP_k1"]
    assert c.mean == pytest.approx(60.0) and c.std == pytest.approx(2.0) and c.std_kind == "seeds" and c.n == 3
    assert a.cells["mAP_k16"].mean == pytest.approx(80.0)
    c = b.cells["mAP_k1"]
    assert c.mean == 50.0 and c.std == 1.5 and c.std_kind == "within" and c.n == 1
    md = lb.render_markdown([t])
    line_a = next(ln for ln in md.splitlines() if "| mopro-r50 |" in ln)
    assert "`a1a1a1a1`" in line_a and "| 3 |" in line_a and "**60.00 ± 2.00**" in line_a and "**80.00 ± 2.00**" in line_a
    line_b = next(ln for ln in md.splitlines() if "| moco-v2 |" in ln)
    assert "50.00 ± 1.50" in line_b and "**" not in line_b
    assert "mAP_k1 ↑ | mAP_k2 ↑ | mAP_k4 ↑ | mAP_k8 ↑ | mAP_k16 ↑" in md


def test_lower_is_better_metrics_pick_the_smallest_as_best(tmp_path):
    root = tmp_path / "r"
    kw = dict(task="imagenet_r", pid="imagenet_r@hendrycks", data={"kind": "imagenet-r", "complete": True})
    put(root, make_record(metrics={"top1": 50.0, "calib_rms": 9.0}, **kw))
    put(root, make_record(name="other", sha=SHA_B, metrics={"top1": 40.0, "calib_rms": 4.0}, **kw))
    t = lb.build_tables(load_records(root).records)[0]
    assert t.higher_is_better == {"top1": True, "calib_rms": False}
    assert t.best("top1") == 50.0 and t.best("calib_rms") == 4.0
    assert "calib_rms ↓" in lb.render_markdown([t])


def test_stale_schema_record_is_refused_naming_file_and_fix(results_dir, cli, tmp_path):
    stale = results_dir / "voc_lowshot@mopro" / "old-00000000-seed0.json"
    rec = json.loads(next(results_dir.rglob("*.json")).read_text())
    stale.write_text(json.dumps({**rec, "schema_version": 0}))
    with pytest.raises(BenchError, match=r"old-00000000-seed0.json: result schema version 0, this suite reads version 2"):
        load_records(results_dir)
    code, out, err = cli("leaderboard", "--results-dir", results_dir, "--out-dir", tmp_path / "lb")
    lines = [ln for ln in err.splitlines() if not ln.startswith("warning:")]
    assert code == 2 and out == "" and len(lines) == 1
    assert "old-00000000-seed0.json" in lines[0] and "-- fix:" in lines[0] and "--skip-invalid" in lines[0]
    assert not (tmp_path / "lb").exists()  # nothing written on refusal
    # the escape hatch: leave it out, say so, render the rest
    code, out, err = cli("leaderboard", "--results-dir", results_dir, "--out-dir", tmp_path / "lb", "--skip-invalid")
    assert code == 0 and "skipped invalid record" in err and "| mopro-r50 |" in out


def test_invalid_record_and_non_record_json(tmp_path):
    root = tmp_path / "r"
    good = put(root, make_record())
    # artifacts next to a result and files of a run directory are not records
    (good.parent / (good.stem + ".splits.json")).write_text(json.dumps({"k1": [[1, 2]]}))
    (good.parent / (good.stem + ".work")).mkdir()
    (good.parent / (good.stem + ".work") / "state-seed0.json").write_text("{broken")
    loaded = load_records(root)
    assert [p for p, _ in loaded.records] == [good] and len(loaded.skipped) == 1
    bad = json.loads(good.read_text())
    bad["metrics"]["mAP_k1"] = "high"
    (root / "bad-seed0.json").write_text(json.dumps(bad))
    (root / "trunc-seed1.json").write_text("{")
    with pytest.raises(BenchError) as e:
        load_records(root)
    assert "bad-seed0.json: invalid result record at metrics/mAP_k1" in str(e.value)
    assert "(and 1 more invalid record(s))" in str(e.value)


def test_empty_and_missing_directories(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = cli("leaderboard", "--results-dir", tmp_path / "empty", "--no-write")
    assert code == 2 and f"no result records in {tmp_path / 'empty'}" in err and "mopro-bench eval" in err
    code, _, err = cli("leaderboard", "--results-dir", tmp_path / "nope", "--no-write")
    assert code == 2 and "does not exist" in err


def test_published_rows_are_kept_apart(results_dir, tmp_path):
    pub = tmp_path / "published.csv"
    pub.write_text(
        "kind,model,arch,pretrain_data,protocol_id,metric,value,source,note\n"
        "published,Paper model,ResNet-50,WebVision V1,voc_lowshot@mopro,mAP_k1,99.5,Paper (2021) Table 2,five draws\n"
        "published,Paper model,ResNet-50,WebVision V1,voc_lowshot@mopro,mAP_k16,99.9,Paper (2021) Table 2,\n"
        "published,Other,ResNet-50,ImageNet,places_lowshot@mopro,top1_k1,10.0,Other paper,\n"
    )
    put(results_dir, make_record(pid="voc_lowshot@mopro+deadbeef", metrics=lowshot_metrics(1.0)))
    published = lb.load_published(pub)
    tables = lb.build_tables(load_records(results_dir).records, published)
    t = only_table(tables, "voc_lowshot@mopro")
    (p,) = t.published
    assert p.kind == "published" and p.sources == ["Paper (2021) Table 2"] and p.cells["mAP_k1"].mean == 99.5
    assert "mAP_k2" not in p.cells and p.cells["mAP_k1"].std is None
    # best is among measured rows only, although the published number is higher
    assert t.best("mAP_k1") == pytest.approx(60.0)
    # measured rows first, published after; a +hash variant never gets published rows; no table for places
    assert [r.kind for r in t.rows] == ["measured", "measured", "published"]
    assert only_table(tables, "voc_lowshot@mopro+deadbeef").published == []
    assert not any(t.protocol_id == "places_lowshot@mopro" for t in tables)
    md = lb.render_markdown(tables)
    pub_line = next(ln for ln in md.splitlines() if "Paper model" in ln)
    assert pub_line.startswith("| *published*† | *Paper model (ResNet-50, WebVision V1)* [1]")
    assert "*99.5*" in pub_line and "**" not in pub_line and "1. Paper (2021) Table 2" in md
    rows = list(csv.DictReader(io.StringIO(lb.render_csv(tables))))
    kinds = {(r["kind"], r["checkpoint"]) for r in rows}
    assert ("published", "Paper model (ResNet-50, WebVision V1)") in kinds and ("measured", "mopro-r50") in kinds
    assert {r["source"] for r in rows if r["kind"] == "measured"} == {""}
    html = lb.render_html(tables)
    assert "<tr class='published'" in html and "<tr class='measured'" in html
    # --all-published adds tables for protocols without results
    tables = lb.build_tables(load_records(results_dir).records, published, all_published=True)
    assert only_table(tables, "places_lowshot@mopro").measured == []


@pytest.mark.parametrize("line, message", [
    ("measured,M,R,D,voc_lowshot@mopro,mAP_k1,1,S,", "kind must be 'published'"),
    ("published,M,R,D,voc_lowshot@mopro+abc,mAP_k1,1,S,", "is not task@protocol"),
    ("published,M,R,D,voc_lowshot@mopro,mAP_k1,high,S,", "value 'high' is not a number"),
    ("published,M,R,D,voc_lowshot@mopro,mAP_k1,1,,", "no source"),
])
def test_malformed_published_rows_are_refused(tmp_path, line, message):
    pub = tmp_path / "p.csv"
    pub.write_text(",".join(lb.PUBLISHED_COLUMNS) + "\n" + line + "\n")
    with pytest.raises(BenchError, match=message):
        lb.load_published(pub)


def test_protocol_mismatch_gives_separate_tables(tmp_path):
    root = tmp_path / "r"
    put(root, make_record(metrics={"mAP_k1": 60.0}))
    put(root, make_record(name="changed", sha=SHA_B, metrics={"mAP_k1": 70.0}, params={"cost": 1.0}))
    put(root, make_record(name="v2", sha="c3" * 32, metrics={"mAP_k1": 80.0}, version="2"))
    put(root, make_record(name="override", sha="d4" * 32, pid="voc_lowshot@mopro+12345678", metrics={"mAP_k1": 90.0}))
    tables = lb.build_tables(load_records(root).records)
    by_rows = {tuple(r.name for r in t.measured): t for t in tables}
    assert set(by_rows) == {("mopro-r50",), ("changed",), ("v2",), ("override",)}
    assert all(len(t.measured) == 1 for t in tables)
    same_id = [t for t in tables if t.protocol_id == "voc_lowshot@mopro"]
    assert len(same_id) == 3 and all(t.variant for t in same_id)
    assert len({t.title for t in same_id}) == 3 and "protocol v2" in by_rows[("v2",)].title
    assert any("must not be compared" in n for n in same_id[0].notes)
    assert not by_rows[("override",)].variant and by_rows[("override",)].title == "voc_lowshot@mopro+12345678"


def test_different_data_are_different_rows(tmp_path):
    root = tmp_path / "r"
    put(root, make_record(metrics={"mAP_k1": 60.0}))
    put(root, make_record(seed=1, metrics={"mAP_k1": 62.0}, data={**VOC_DATA, "root": "/elsewhere"}))  # same data
    other = {**VOC_DATA, "lists": {"trainval": "33" * 32, "test": "22" * 32}}
    put(root, make_record(seed=2, metrics={"mAP_k1": 40.0}, data=other))  # other trainval list: another experiment
    synth = {**VOC_DATA, "lists": {"trainval": "44" * 32, "test": "55" * 32}, "synthetic": True, "complete": False,
             "complete_note": "generated data"}
    put(root, make_record(seed=3, metrics={"mAP_k1": 5.0}, data=synth))
    t = lb.build_tables(load_records(root).records)[0]
    assert [(r.label, len(r.seeds), r.complete) for r in t.measured] == [
        ("mopro-r50", 2, True), ("mopro-r50", 1, True), ("mopro-r50 (synthetic data)", 1, False)]
    assert t.measured[0].cells["mAP_k1"].mean == pytest.approx(61.0)
    assert len({r.experiment for r in t.measured}) == 3
    md = lb.render_markdown([t])
    assert "| data |" in md and "synthetic data" in md and "| experiment |" in md
    assert any("never pooled as seeds" in n for n in t.notes)


def test_task_filter(results_dir):
    put(results_dir, make_record(task="imagenet_r", pid="imagenet_r@hendrycks", metrics={"top1": 50.0}, data={}))
    recs = load_records(results_dir).records
    assert {t.protocol_id for t in lb.build_tables(recs, task="imagenet_r")} == {"imagenet_r@hendrycks"}
    assert {t.protocol_id for t in lb.build_tables(recs, task="voc_lowshot@mopro")} == {"voc_lowshot@mopro"}
    assert len(load_records(results_dir, task="imagenet_r").records) == 1


def test_cli_writes_markdown_csv_html_and_plots(results_dir, cli, tmp_path):
    out_dir = tmp_path / "lb"
    code, out, err = cli("leaderboard", "--results-dir", results_dir, "--out-dir", out_dir, "--format", "html", "--plots")
    assert code == 0, err
    assert out.startswith("<!doctype html>")
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.html", "lowshot.png"):
        assert (out_dir / name).is_file(), name
        assert f"wrote {out_dir / name}" in err
    assert (out_dir / "lowshot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out_dir / "calibration.png").exists()  # no calibration metrics in these records
    assert not list(out_dir.glob(".*.tmp"))
    md = (out_dir / "leaderboard.md").read_text()
    assert "| mopro-r50 |" in md and "![lowshot](lowshot.png)" in md and "MoPro V1" in md  # the repo's published.csv
    rows = list(csv.DictReader((out_dir / "leaderboard.csv").open()))
    assert set(lb.CSV_COLUMNS) == set(rows[0])
    measured = [r for r in rows if r["kind"] == "measured" and r["checkpoint"] == "mopro-r50" and r["metric"] == "mAP_k1"]
    assert len(measured) == 1 and float(measured[0]["mean"]) == 60.0 and measured[0]["std_kind"] == "seeds"
    code, out, _ = cli("leaderboard", "--results-dir", results_dir, "--no-write", "--format", "csv", "--no-published")
    assert code == 0 and out.startswith(",".join(lb.CSV_COLUMNS)) and "published" not in out


def test_repository_published_csv():
    """The shipped published numbers: every row parses, names a task the suite registers, and holds the values of
    the MoPro paper / README (the ones the issue lists)."""
    from mopro_bench.registry import BUILTIN_TASKS

    rows = lb.load_published(lb.DEFAULT_PUBLISHED)
    tasks = BUILTIN_TASKS  # built-in tasks are listed in code (pyproject no longer lists them)
    assert {r.protocol_id.split("@")[0] for r in rows} <= set(tasks)
    got = {(r.model, r.protocol_id, r.metric): r.value for r in rows}
    assert len(got) == len(rows)  # no duplicates
    voc = [got["MoPro V1", "voc_lowshot@mopro", f"mAP_k{k}"] for k in KS]
    places = [got["MoPro V1", "places_lowshot@mopro", f"top1_k{k}"] for k in KS]
    assert voc == [59.5, 71.3, 76.5, 81.4, 83.7] and places == [16.9, 23.2, 29.2, 34.5, 38.7]
    assert [got["PCL v2", "voc_lowshot@mopro", f"mAP_k{k}"] for k in KS] == [47.9, 59.6, 66.2, 74.5, 78.3]
    assert got["MoPro V1", "imagenet_1pct@mopro-as-released", "top1"] == 71.2
    assert got["MoPro V1", "imagenet_10pct@mopro-as-released", "top1"] == 74.8
    status = {(r.model, r.protocol_id, r.metric): r.status for r in rows}
    assert status["MoPro V1", "voc_lowshot@mopro", "mAP_k1"] == "verified"
    assert status["MoPro V1", "imagenet_r@hendrycks", "top1"] == "unverified"  # secondary summaries only
    rob = {(m, pid.split("@")[0], metric): v for (m, pid, metric), v in got.items() if pid.endswith("@hendrycks")}
    assert (rob["MoPro V1", "imagenet_r", "top1"], rob["MoPro V1", "imagenet_r", "calib_rms"]) == (54.87, 5.73)
    assert (rob["MoPro V1", "imagenet_a", "top1"], rob["MoPro V1", "imagenet_a", "calib_rms"]) == (11.93, 35.85)
    sup = "ImageNet supervised"
    assert (rob[sup, "imagenet_r", "top1"], rob[sup, "imagenet_r", "calib_rms"]) == (36.14, 19.66)
    assert (rob[sup, "imagenet_a", "top1"], rob[sup, "imagenet_a", "calib_rms"]) == (0.03, 62.5)
    assert got["MoPro V1", "coco_maskrcnn@mopro", "bbox_AP"] == 39.7
    # metric names must be ones the registered task reports, where the task is importable here
    for r in rows:
        metrics, _ = task_info(r.protocol_id.split("@")[0])
        if metrics:
            assert r.metric in metrics, (r.protocol_id, r.metric)


def test_data_fingerprint_ignores_locations_but_not_content():
    from mopro_bench.results import data_fingerprint

    fp = {"imagenet/val": {"sha256": "f1", "n": 2}}
    counts = {"val": {"found": 2, "official": 50000}}
    a = {"data": {"root": "/a", "kind": "imagenet", "lists": {"val": "l1"}, "counts": counts, "fingerprints": fp}}
    b = {"data": {"root": "/b", "kind": "imagenet", "lists": {"val": "l1"}, "counts": counts, "fingerprints": fp}}
    c = {"data": {**a["data"], "fingerprints": {"imagenet/val": {"sha256": "f2", "n": 2}}}}  # same names, other pixels
    d = {"data": {**a["data"], "lists": {"val": "l2"}}}
    assert data_fingerprint(a) == data_fingerprint(b)
    assert len({data_fingerprint(x) for x in (a, c, d)}) == 3
