"""Reliability diagram and calibration comparison: PNGs of the right size, atomic, and checks on their input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mopro_bench.errors import BenchError
from mopro_bench.metrics import calibration as cal
from mopro_bench.results import build_record, write_record
from mopro_bench.tasks.robustness import plots


def fake_scores(n=600, seed=0, temp=1.0):
    rng = np.random.default_rng(seed)
    conf = np.clip(rng.beta(5, 2, n) ** temp, 0.01, 1.0)
    correct = rng.uniform(size=n) < conf - 0.15
    return conf, correct


def record(name, conf, correct, task="imagenet_r"):
    rel = cal.reliability_bins(conf, correct, 15)
    metrics = {"top1": 100 * correct.mean(), "calib_rms": 100 * cal.rms_calibration_error(conf, correct),
               "ece15": 100 * cal.expected_calibration_error(conf, correct), "nll": 1.0, "brier": 0.5}
    return build_record(
        task=task, protocol={"id": f"{task}@hendrycks", "name": "hendrycks", "version": "1", "params": {}, "overrides": {}},
        checkpoint={"name": name, "path": name, "sha256": None, "format": "random", "arch": "resnet50"}, seed=0,
        data={}, metrics=metrics, details={"reliability": rel}, selection="single pass", timings={},
        metric_units=cal.units(True))


def png_size(path):
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        return im.size


def test_reliability_diagram_writes_a_png_without_temporaries(tmp_path):
    conf, correct = fake_scores()
    rel = cal.reliability_bins(conf, correct, 15)
    adaptive = cal.adaptive_bin_stats(conf, correct, 100, True)
    out = plots.reliability_diagram(rel, tmp_path / "r.reliability.png", title="test", adaptive=adaptive,
                                    metrics={"top1": 50.0, "calib_rms": 12.3, "nll": 1.2}, units=cal.units())
    w, h = png_size(out)
    assert w > 400 and h > 500
    assert [p.name for p in tmp_path.iterdir()] == ["r.reliability.png"]  # no temporary file left behind
    # empty bins (None) and a single non-empty bin are drawn without error
    one = cal.reliability_bins(np.array([0.99, 0.98]), np.array([1, 0]), 15)
    assert one["accuracy"][0] is None
    png_size(plots.reliability_diagram(one, tmp_path / "one.png"))
    with pytest.raises(ValueError):
        plots.reliability_diagram({**rel, "edges": rel["edges"][:-1]}, tmp_path / "bad.png")


def test_calibration_comparison_of_records_and_files(tmp_path):
    recs = [record("over-confident", *fake_scores(seed=1, temp=0.5)), record("calibrated", *fake_scores(seed=2)),
            record("in-dist", *fake_scores(seed=3), task="imagenet_val_calibration")]
    path = write_record(recs[1], tmp_path / "res" / "b.json")
    out = plots.calibration_comparison([recs[0], path, recs[2]], tmp_path / "cmp.png")
    w, h = png_size(out)
    assert w > 1000 and h > 400
    # many records grow the figure
    many = plots.calibration_comparison([record(f"m{i}", *fake_scores(seed=i)) for i in range(14)], tmp_path / "many.png")
    assert png_size(many)[1] > h


def test_calibration_comparison_refuses_other_results(tmp_path):
    other = record("x", *fake_scores())
    other["details"] = {}
    with pytest.raises(BenchError, match="no calibration data"):
        plots.calibration_comparison([other], tmp_path / "x.png")
    with pytest.raises(BenchError, match="no result records"):
        plots.calibration_comparison([], tmp_path / "x.png")
