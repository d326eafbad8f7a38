"""coco_maskrcnn end to end on CPU: a few iterations on generated COCO, COCOEvaluator, a valid result record, resume."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from mopro_bench.results import read_record
from mopro_bench.tasks.detection.scoring import METRICS, score_detections

# pycocotools/detectron2 call np.array(copy=False) on numpy 2: harmless, and hundreds of lines of noise
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# ResNet-18 (the R50 export is checked in test_detection_conversion), a tiny FPN and schedule: the pipeline, not the
# protocol's numbers (these --set values give a +hash protocol id)
TINY = {
    "min_size_train": "[64]", "max_size_train": 128, "min_size_test": 64, "max_size_test": 128, "ims_per_batch": 2,
    "max_iter": 3, "steps": "[2]", "warmup_iters": 1, "precise_bn_iters": 2, "fpn_out_channels": 64,
    "rpn_pre_nms_topk_train": 200, "rpn_post_nms_topk_train": 100, "rpn_pre_nms_topk_test": 200,
    "rpn_post_nms_topk_test": 50, "roi_batch_size_per_image": 32, "detections_per_image": 20,
    "score_thresh_test": 0.0,  # keep the (untrained) detections so that AP is computed on real output
}


def _skip_without_detectron2():
    try:
        import detectron2  # noqa: F401
        from detectron2.engine import launch  # noqa: F401
    except Exception as e:  # not installed, or a broken install
        pytest.skip(f"detectron2 cannot be imported ({type(e).__name__}: {e}); install it with `make setup-detection`")


def _argv(root: Path, tmp: Path, *extra: str) -> list[str]:
    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    return ["eval", "--ckpt", "random:resnet18", "--task", "coco_maskrcnn", "--data", str(root), "--device", "cpu",
            "--workers", "0", "--results-dir", str(tmp / "results"), "--work-dir", str(tmp / "work"), "--no-progress",
            *sets, *extra]


@pytest.mark.slow
def test_maskrcnn_trains_evaluates_and_resumes_on_generated_coco(synth_root, tmp_path, cli):
    _skip_without_detectron2()
    root = synth_root("coco")
    code, out, err = cli(*_argv(root, tmp_path))
    assert code == 0, err[-3000:]
    path = Path(out.strip().splitlines()[-1].split("result: ", 1)[1])
    rec = read_record(path)  # validates against the schema
    assert rec["protocol"]["id"].startswith("coco_maskrcnn@mopro+") and rec["protocol"]["params"]["max_iter"] == 3
    m, d = rec["metrics"], rec["details"]
    # every box and mask metric is either a number in [0, 100] or declared undefined (no such objects in the data)
    assert set(m) | set(d["undefined_metrics"]) == set(METRICS) and not set(m) & set(d["undefined_metrics"])
    assert {"bbox_AP", "bbox_AP50", "bbox_AP75", "segm_AP", "segm_AP50", "segm_AP75"} <= set(m)
    assert all(0.0 <= v <= 100.0 for v in m.values()) and rec["metric_units"]["bbox_AP"] == "%"
    # the evaluator's numbers are pycocotools' on the detections it wrote
    preds = Path(d["predictions"])
    dets = json.loads(preds.read_text())
    assert d["num_detections"] == len(dets) > 0 and {"bbox", "segmentation", "score"} <= set(dets[0])
    rescored = score_detections(root / "annotations" / "instances_val2017.json", preds)
    assert rescored.metrics == pytest.approx(m, abs=1e-6)
    assert set(rescored.undefined) == set(d["undefined_metrics"])
    # what ran: the exported backbone filled every trunk tensor; CPU -> BN; the schedule asked for
    assert d["backbone_load"]["backbone_loaded"] == d["backbone_load"]["backbone_tensors"] == 100  # ResNet-18
    assert d["norm"]["backbone"] == "BN" and "SyncBN" in d["norm"]["note"]
    assert d["iterations"] == 3 and d["resumed_from_iter"] is None and d["world_size"] == 1
    assert rec["data"]["val_images"] == 8 and rec["data"]["categories"] == 5
    yaml = Path(rec["artifacts"][0]).read_text()  # the exact detectron2 config, next to the result
    assert "MAX_ITER: 3" in yaml and "STRIDE_IN_1X1: false" in yaml and "FREEZE_AT: 0" in yaml

    # the work dir holds a run: starting over needs a decision
    code, _, err = cli(*_argv(root, tmp_path))
    assert code == 2 and "already holds a run" in err and "--resume" in err
    # another protocol on the same work dir is refused even with --resume
    code, _, err = cli(*_argv(root, tmp_path, "--resume", "--set", "base_lr=0.01"))
    assert code == 2 and "another checkpoint, protocol" in err
    # a last_checkpoint naming a file the suite did not write (here: a pickle that would create a marker file) or a
    # file outside the work dir is refused before any process starts; nothing is unpickled
    work = tmp_path / "work"
    tag = (work / "last_checkpoint").read_text()
    marker = tmp_path / "PWNED"
    def payload(path):  # protocol-0 pickle of open(path, "w")
        return b"cbuiltins\nopen\n(S" + repr(str(path)).encode() + b"\nS'w'\ntR."

    pickle.loads(payload(tmp_path / "probe"))  # with the plain unpickler it does run
    assert (tmp_path / "probe").exists()
    (work / "evil.pkl").write_bytes(payload(marker))
    for name in ("evil.pkl", "../outside.pth", str(tmp_path / "results")):
        (work / "last_checkpoint").write_text(name)
        code, _, err = cli(*_argv(root, tmp_path, "--resume"))
        assert code == 2 and err.count("\n") == 1 and "-- fix: delete the work dir" in err, err
    assert not marker.exists()
    (work / "last_checkpoint").write_text(tag)
    # --resume continues from the last checkpoint (here: the finished run, so it only evaluates again)
    code, out, err = cli(*_argv(root, tmp_path, "--resume"))
    assert code == 0, err[-3000:]
    again = read_record(Path(out.strip().splitlines()[-1].split("result: ", 1)[1]))
    assert again["details"]["resumed_from_iter"] == 3
    assert again["metrics"] == pytest.approx(m, abs=1e-6)


def test_missing_coco_layout_is_a_one_line_error(tmp_path, cli):
    (tmp_path / "coco").mkdir()
    code, _, err = cli("eval", "--ckpt", "random:resnet18", "--task", "coco_maskrcnn", "--data", str(tmp_path / "coco"),
                       "--device", "cpu", "--results-dir", str(tmp_path / "r"))
    assert code == 2 and "instances_train2017.json" in err and "Traceback" not in err


def test_without_detectron2_the_task_says_how_to_install_it(synth_root, tmp_path, monkeypatch):
    import importlib.util

    from mopro_bench.errors import BenchError
    from mopro_bench.evaluate import evaluate

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "detectron2" else real(name, *a))
    with pytest.raises(BenchError, match="needs detectron2.*make setup-detection"):
        evaluate("random:resnet18", "coco_maskrcnn", synth_root("coco"), device="cpu", results_dir=tmp_path)


def test_other_modules_do_not_import_detectron2():
    import subprocess
    import sys

    code = ("import sys, mopro_bench.tasks.detection, mopro_bench.tasks.detection, mopro_bench.registry as r; r.registry(); "
            "assert 'detectron2' not in sys.modules, 'detectron2 imported'")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0
