"""The shipped published.csv (package data, mopro_bench/resources/) keeps to its rule: every row names a primary
source it was checked against (or says it was not), a status, a registered protocol id and a metric that protocol's
task reports -- so a published row can be reproduced under its protocol id by construction."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from mopro_bench.errors import BenchError
from mopro_bench.leaderboard import DEFAULT_PUBLISHED
from mopro_bench.registry import get_task, registry

REPO = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
PUBLISHED = DEFAULT_PUBLISHED
COLUMNS = ["kind", "model", "arch", "pretrain_data", "protocol_id", "metric", "value", "source", "note", "status"]
# a repository file at a commit, with the section/table the number is in
REPO_SOURCE = re.compile(r"^github\.com/[\w.-]+/[\w.-]+ [\w./-]+\.md @[0-9a-f]{7,40}, (section|table) '[^']+'")
# the paper, with the table/section named
PAPER_SOURCE = re.compile(r"\(arXiv:\d{4}\.\d{4,5}\), [\w -]*(table|section|sec\.)")


def rows() -> list[dict[str, str]]:
    with PUBLISHED.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        return list(reader)


def check_source_and_status(rs: list[dict[str, str]]) -> None:
    for r in rs:
        where = (r["model"], r["protocol_id"], r["metric"])
        assert r["kind"] == "published" and r["status"] in ("verified", "unverified"), where
        src = r["source"].strip()
        assert REPO_SOURCE.match(src) or PAPER_SOURCE.search(src), where
        if r["status"] == "verified":  # checked here against the repository file it cites
            assert REPO_SOURCE.match(src), where
        else:  # an unverified row says so in its source and in its note
            assert "not checked" in src and r["note"].startswith("unverified"), where
        float(r["value"])


def check_protocol_and_metric(rs: list[dict[str, str]]) -> None:
    reg = registry()
    for r in rs:
        pid = r["protocol_id"]
        assert "+" not in pid and "@" in pid, pid
        assert pid.split("@")[0] in reg, pid
        resolved = get_task(pid)  # the real registry: an unknown protocol raises BenchError
        assert resolved.protocol_id == pid
        assert r["metric"] in resolved.task.metrics, (pid, r["metric"])


def test_every_row_has_an_accepted_source_and_a_status():
    rs = rows()
    assert len(rs) == 35  # + DINO ViT-S/16, ViT-B/16, MoCo v3 ViT-S, ViT-B linear top-1
    check_source_and_status(rs)


def test_rows_name_registered_protocols_and_metrics_their_task_reports():
    check_protocol_and_metric(rows())


def test_published_rows_sit_under_the_protocol_that_reproduces_them():
    by = {(r["model"], r["protocol_id"], r["metric"]): r for r in rows()}
    # MoPro's 1%/10% numbers come from the released script (per-process subsets, best of 40 epochs)
    for task, value in (("imagenet_1pct", "71.2"), ("imagenet_10pct", "74.8")):
        r = by["MoPro V1", f"{task}@mopro-as-released", "top1"]
        assert r["value"] == value and r["status"] == "verified"
        p = get_task(f"{task}@mopro-as-released").protocol
        assert (p.report, p.eval_every, p.epochs, p.subset_source, p.num_ranks) == ("best-epoch", 1, 40, "as-released", 8)
        assert not any(k[1] == f"{task}@mopro" for k in by)  # nothing published under the single-subset protocol
    # the robustness numbers come from secondary summaries only
    rob = [r for r in rows() if r["protocol_id"].endswith("@hendrycks")]
    assert len(rob) == 8 and all(r["status"] == "unverified" for r in rob)
    # PCL v2 cites PCL's own README; the COCO V2 box AP flags the 40.1 / 40.7 conflict and the detector question
    assert all("salesforce/PCL README.md" in r["source"] for k, r in by.items() if k[0] == "PCL v2")
    v2 = by["MoPro V2", "coco_maskrcnn@mopro", "bbox_AP"]
    assert v2["value"] == "40.1" and "40.7" in v2["note"] and "MASK_ON: True" in v2["note"]


@pytest.mark.parametrize("bad,check", [({"status": "maybe"}, check_source_and_status),
                                       ({"source": "some blog, table 2"}, check_source_and_status),
                                       ({"status": "unverified"}, check_source_and_status),  # unverified yet unmarked
                                       ({"protocol_id": "imagenet_1pct@nope"}, check_protocol_and_metric),
                                       ({"protocol_id": "imagenet_1pct@mopro+abc"}, check_protocol_and_metric),
                                       ({"metric": "top7"}, check_protocol_and_metric)])
def test_the_rule_rejects_a_bad_row(bad, check):
    """The checks fail on a row that breaks the rule (so they are not vacuous)."""
    rs = rows()
    rs[0] = {**rs[0], **bad}
    with pytest.raises((AssertionError, BenchError)):
        check(rs)
