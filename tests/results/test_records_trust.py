"""Records that must not be trusted are refused, naming the file and the field (issue 14 items 4, 7, 8; reliability
cases 55, 56, 58, 59, 63): NaN/Infinity metrics, a metric edited away from its own per-run values, edited identity,
schema-v1 records; folders or broken links named *.json are skipped with a warning; unverified published rows and
partial-data rows are marked apart."""

from __future__ import annotations

import json
import math

import pytest

from mopro_bench import leaderboard as lb
from mopro_bench.compare import Side, compare
from mopro_bench.errors import BenchError
from mopro_bench.results import load_records, read_record, record_path, validate_record, write_record
from tests.leaderboard.test_leaderboard_tables import SHA_B, VOC_DATA, _fast_records, make_record, put  # noqa: F401 (fixture)

RUNS = [14.0, 16.0, 17.4]  # mean 15.8, as in reliability case 59


def lowshot_record(**kw):
    return make_record(metrics={"mAP_k1": 15.8}, details={"per_run": {"mAP_k1": RUNS}}, **kw)


def edit(path, fn):
    rec = json.loads(path.read_text())
    fn(rec)
    path.write_text(json.dumps(rec))


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_metric_is_refused_on_write_and_on_read(tmp_path, value):
    with pytest.raises(BenchError, match=r"produced mAP_k1 = .*not a finite number"):
        make_record(metrics={"mAP_k1": value})
    path = put(tmp_path, lowshot_record())
    # Python's json writes and reads NaN/Infinity tokens: an edited file must still be refused, naming the field
    edit(path, lambda r: r["metrics"].update(mAP_k1=value))
    assert ("NaN" in path.read_text()) or ("Infinity" in path.read_text())
    with pytest.raises(BenchError, match=rf"{path.name}: invalid result record at metrics/mAP_k1: not a finite number"):
        read_record(path)
    code_msg = pytest.raises(BenchError, match="metrics/mAP_k1")
    with code_msg:
        load_records(tmp_path)


def test_non_finite_details_become_null_not_nan_tokens(tmp_path):
    rec = make_record(details={"curve": [1.0, math.nan], "x": math.inf})
    assert rec["details"] == {"curve": [1.0, None], "x": None}
    text = write_record(rec, tmp_path / "r.json").read_text()
    assert "NaN" not in text and "Infinity" not in text


def test_metric_edited_away_from_its_runs_is_refused_and_views_agree(tmp_path, cli):
    """Case 59: mAP_k1 edited to 99 with per_run left: before, leaderboard showed 99.00 and compare 15.80."""
    a = put(tmp_path, lowshot_record())
    b = put(tmp_path, make_record(name="b", sha=SHA_B, metrics={"mAP_k1": 20.0}, details={"per_run": {"mAP_k1": [19, 21]}}))
    t = lb.build_tables(load_records(tmp_path).records)[0]
    rep = compare(Side("A", [read_record(a)]), Side("B", [read_record(b)]))
    row = {r.name: r for r in t.measured}["mopro-r50"]
    assert row.cells["mAP_k1"].mean == pytest.approx(rep.rows[0].a) == pytest.approx(15.8)  # one number, two views
    edit(a, lambda r: r["metrics"].update(mAP_k1=99.0))
    with pytest.raises(BenchError) as e:
        load_records(tmp_path)
    assert f"{a}: metrics/mAP_k1 = 99 contradicts details/per_run/mAP_k1 (mean 15.8 over 3 runs)" in e.value.message
    code, out, err = cli("leaderboard", "--results-dir", tmp_path, "--no-write", "--no-published")
    assert code == 2 and out == "" and "contradicts details/per_run/mAP_k1" in err and "Traceback" not in err
    code, out, err = cli("compare", a, b)
    assert code == 2 and a.name in err and "metrics/mAP_k1" in err
    # rounding to 4 decimals (what the tasks do) is not a contradiction
    validate_record(make_record(metrics={"mAP_k1": 15.8001}, details={"per_run": {"mAP_k1": RUNS}}))


@pytest.mark.parametrize("field, change", [
    ("experiment/key", lambda r: r["checkpoint"].update(sha256="cd" * 32)),  # someone else's weights
    ("experiment/key", lambda r: r["data"]["lists"].update(test="77" * 32)),  # other test list
    ("experiment/key", lambda r: r["experiment"]["options"].update(solver="sklearn")),
    ("experiment/run_key", lambda r: r.update(seed=5)),
])
def test_edited_identity_is_refused(tmp_path, field, change):
    path = put(tmp_path, lowshot_record())
    edit(path, change)
    with pytest.raises(BenchError, match=rf"{path.name}: {field} [0-9a-f]{{16}} does not match the record's contents"):
        read_record(path)


def test_schema_v1_record_is_refused_with_the_fix(tmp_path):
    path = put(tmp_path, lowshot_record())
    edit(path, lambda r: (r.update(schema_version=1), r.pop("experiment")))
    with pytest.raises(BenchError) as e:
        read_record(path)
    assert "result schema version 1 (written before records had experiment keys" in e.value.message
    assert "re-run that evaluation" in e.value.fix and "--skip-invalid" in e.value.fix


def test_identity_ignores_locations(tmp_path):
    a = lowshot_record()
    b = lowshot_record(data={**VOC_DATA, "root": "/mnt/elsewhere/voc"})
    assert a["experiment"] == b["experiment"] and record_path(tmp_path, a) == record_path(tmp_path, b)
    c = lowshot_record(seed=1)
    assert c["experiment"]["key"] == a["experiment"]["key"] and c["experiment"]["run_key"] != a["experiment"]["run_key"]
    d = make_record(metrics={"mAP_k1": 15.8}, details={"per_run": {"mAP_k1": RUNS}}, data={**VOC_DATA, "fingerprints": {
        "voc07/test": {"sha256": "ee" * 32, "n": 120}}, "counts": {"test": {"found": 120, "official": 4952}}})
    assert d["experiment"]["key"] != a["experiment"]["key"]  # the content of a whole split read is identity
    # a task whose splits cannot be counted: every list read is identity (never two contents pooled as seeds)
    e1, e2 = (make_record(data={"kind": "x", "complete": False, "fingerprints": {"x/all": {"sha256": h, "n": 5}}})
              for h in ("e1", "e2"))
    assert e1["experiment"]["key"] != e2["experiment"]["key"]


def test_folders_and_broken_links_named_json_are_skipped(tmp_path, cli):
    """Cases 55/56: before, IsADirectoryError / FileNotFoundError tracebacks (also with --skip-invalid)."""
    good = put(tmp_path, lowshot_record())
    (tmp_path / "voc_lowshot@mopro" / "x-seed0.json").mkdir()
    (tmp_path / "voc_lowshot@mopro" / "y-seed0.json").symlink_to(tmp_path / "nowhere.json")
    loaded = load_records(tmp_path)
    assert [p for p, _ in loaded.records] == [good] and len(loaded.unreadable) == 2
    code, out, err = cli("leaderboard", "--results-dir", tmp_path, "--no-write", "--no-published")
    assert code == 0 and "| mopro-r50 |" in out
    assert "warning: skipped" in err and "x-seed0.json is a folder" in err and "y-seed0.json is a broken symlink" in err
    code, out, err = cli("compare", "mopro-r50", "mopro-r50", "--results-dir", tmp_path)
    assert code == 0 and "Traceback" not in err and "x-seed0.json is a folder" in err
    code, _, err = cli("compare", tmp_path / "voc_lowshot@mopro" / "x-seed0.json", good)
    assert code == 2 and "is not a file" in err


def test_partial_rows_apart_and_unverified_published_marked(tmp_path):
    put(tmp_path, make_record(metrics={"mAP_k1": 60.0}))  # complete
    put(tmp_path, make_record(name="moco", sha="c3" * 32, metrics={"mAP_k1": 50.0}))  # complete
    partial = {**VOC_DATA, "complete": False, "lists": {"trainval": "99" * 32, "test": "22" * 32},
               "complete_note": "trainval: 240 of the official 5011 images"}
    put(tmp_path, make_record(name="small-voc", sha=SHA_B, metrics={"mAP_k1": 90.0}, data=partial))
    pub = tmp_path / "published.csv"
    pub.write_text(",".join(lb.PUBLISHED_COLUMNS) + ",status\n"
                   "published,Paper,ResNet-50,WebVision V1,voc_lowshot@mopro,mAP_k1,59.5,Paper Table 2,,verified\n"
                   "published,Other,ResNet-50,ImageNet,voc_lowshot@mopro,mAP_k1,47.9,Other Table 1,,unverified\n")
    tables = lb.build_tables(load_records(tmp_path).records, lb.load_published(pub))
    (t,) = tables
    assert [r.name for r in t.partial] == ["small-voc"] and t.best("mAP_k1") == 60.0  # 90 is not "best"
    md = lb.render_markdown(tables)
    main, rest = md.split(lb.PARTIAL_TITLE)
    assert "| measured | mopro-r50 |" in main and "**60.00**" in main and "Paper" in main and "small-voc" not in main
    assert "| measured | small-voc |" in rest and "240 of the official 5011" in rest and "*published*" not in rest
    assert "| *published*†‡ | *Other (ResNet-50, ImageNet)*" in main and "| *published*† | *Paper" in main
    assert "‡ Other (ResNet-50, ImageNet): copied from the source but not yet verified" in md
    html = lb.render_html(tables)
    assert "<tr class='published unverified'" in html and "<tr class='partial'>" in html
    rows = {(r["checkpoint"], r["complete"], r["status"]) for r in __import__("csv").DictReader(
        lb.render_csv(tables).splitlines())}
    assert ("small-voc", "0", "") in rows and ("Other (ResNet-50, ImageNet)", "1", "unverified") in rows
    # the shipped file reads with or without the column
    assert all(p.status in lb.PUBLISHED_STATUS for p in lb.load_published(lb.DEFAULT_PUBLISHED))
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(lb.PUBLISHED_COLUMNS) + ",status\npublished,P,R,D,voc_lowshot@mopro,mAP_k1,1,S,,maybe\n")
    with pytest.raises(BenchError, match="status 'maybe'"):
        lb.load_published(bad)


def test_compare_never_pools_two_datasets_as_seeds(tmp_path):
    """A checkpoint evaluated on two datasets: two comparisons, not one pooled one (case 63's second half)."""
    other = {**VOC_DATA, "lists": {"trainval": "88" * 32, "test": "22" * 32}}
    a = [make_record(metrics={"mAP_k1": 10.0}), make_record(metrics={"mAP_k1": 30.0}, data=other)]
    b = [make_record(name="b", sha=SHA_B, metrics={"mAP_k1": 12.0}),
         make_record(name="b", sha=SHA_B, metrics={"mAP_k1": 29.0}, data=other)]
    rep = compare(Side("A", a), Side("B", b))
    diffs = sorted(round(r.diff, 6) for r in rep.rows)
    assert diffs == [-1.0, 2.0] and len({r.protocol_id for r in rep.rows}) == 2
    rep = compare(Side("A", a[:1]), Side("B", b[:1]))
    assert [r.diff for r in rep.rows] == [2.0]
    with pytest.raises(BenchError, match="no experiment"):
        compare(Side("A", a[:1]), Side("B", b[1:]))
