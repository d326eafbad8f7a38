"""coco_maskrcnn --resume never unpickles a file it did not write: detectron2's checkpointer follows
``<work_dir>/last_checkpoint`` and ``pickle.load``s a ``.pkl``; the suite's guard allows only files directly inside the
work dir that its own trainer recorded, read with the restricted loader."""

from __future__ import annotations

import contextlib
import os
import pickle
from pathlib import Path

import pytest

from mopro_bench.errors import BenchError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class _Payload:
    """Unpickling this runs ``open(marker, 'w')`` (what a crafted checkpoint would do with os.system)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps({"model": {"w": _Payload(marker)}, "__author__": "x"}))
    # the payload really runs with the plain unpickler detectron2 uses
    probe = marker.with_name("probe")
    pickle.loads(pickle.dumps(_Payload(probe)))
    assert probe.exists()
    probe.unlink()
    return path


def _checkpointer(work: Path):
    pytest.importorskip("detectron2")
    import torch
    from detectron2.checkpoint import DetectionCheckpointer

    from mopro_bench.tasks.detection.runner import guard_checkpointer

    model = torch.nn.Linear(3, 2)
    ck = DetectionCheckpointer(model, save_dir=str(work))
    guard_checkpointer(ck, work)
    return model, ck


def test_resume_refuses_a_malicious_pickle_named_by_last_checkpoint(tmp_path):
    from mopro_bench.tasks.detection.runner import resume_checkpoint

    work = tmp_path / "work"
    work.mkdir()
    marker = tmp_path / "PWNED"
    _evil(work / "evil.pkl", marker)
    (work / "last_checkpoint").write_text("evil.pkl")
    with pytest.raises(BenchError, match="names evil.pkl, which this suite's trainer did not write"):
        resume_checkpoint(work)
    # the workers' own load path refuses it too, before anything is called
    model, ck = _checkpointer(work)
    with pytest.raises(BenchError, match=r"evil.pkl was refused: loading it would call [\w.]*open") as info:
        ck.resume_or_load("", resume=True)
    assert "--trust-checkpoint" not in info.value.line()
    assert not marker.exists()
    # unguarded detectron2 would have run it (what the guard prevents)
    from detectron2.checkpoint import DetectionCheckpointer

    with contextlib.suppress(Exception):  # (loading fails afterwards: the "weights" are a file object)
        DetectionCheckpointer(model, save_dir=str(work)).resume_or_load("", resume=True)
    assert marker.exists()


@pytest.mark.parametrize("name", ["../outside.pth", "/ABS/outside.pth", "sub/x.pth", "link.pth"])
def test_last_checkpoint_pointing_outside_the_work_dir_is_refused(tmp_path, name):
    import torch

    from mopro_bench.tasks.detection.runner import resume_checkpoint

    work = tmp_path / "work"
    work.mkdir()
    outside = tmp_path / "outside.pth"
    torch.save({"model": {}}, outside)
    (work / "link.pth").symlink_to(outside)
    name = name.replace("/ABS/", f"{tmp_path}/")
    (work / "last_checkpoint").write_text(name)
    with pytest.raises(BenchError) as info:
        resume_checkpoint(work)
    assert any(s in info.value.message for s in ("not a checkpoint file in the work dir", "is not a file in the work dir"))
    if name == "link.pth":
        _, ck = _checkpointer(work)
        with pytest.raises(BenchError, match="is not a file in the work dir"):
            ck.resume_or_load("", resume=True)


def test_a_checkpoint_the_trainer_wrote_resumes_and_a_changed_one_does_not(tmp_path):
    import torch

    from mopro_bench.tasks.detection.runner import SAVED_FILE, resume_checkpoint

    work = tmp_path / "work"
    work.mkdir()
    model, ck = _checkpointer(work)
    with torch.no_grad():
        model.weight.fill_(0.25)
    ck.save("model_0000004", iteration=4)
    assert (work / "last_checkpoint").read_text() == "model_0000004.pth"
    assert "model_0000004.pth" in (work / SAVED_FILE).read_text()
    assert resume_checkpoint(work) == (work / "model_0000004.pth").resolve()
    other, ck2 = _checkpointer(work)
    extra = ck2.resume_or_load("", resume=True)
    assert extra["iteration"] == 4 and torch.equal(other.weight, torch.full((2, 3), 0.25))
    # replaced after the trainer wrote it (same name): refused
    torch.save({"model": {"weight": torch.zeros(2, 3), "bias": torch.zeros(2)}, "iteration": 9}, work / "model_0000004.pth")
    with pytest.raises(BenchError, match="changed after the trainer wrote it"):
        resume_checkpoint(work)
    os.unlink(work / SAVED_FILE)
    with pytest.raises(BenchError, match="did not write"):
        resume_checkpoint(work)


def test_resume_with_a_corrupt_run_file_is_one_line(synth_root, tmp_path, cli):
    pytest.importorskip("detectron2")
    work = tmp_path / "work"
    work.mkdir()
    (work / "last_checkpoint").write_bytes(b"model_\xff.pth")
    (work / "mopro_bench_run.json").write_text("{not json")
    argv = ["eval", "--ckpt", "random:resnet18", "--task", "coco_maskrcnn", "--data", synth_root("coco"), "--device", "cpu",
            "--workers", "0", "--results-dir", tmp_path / "r", "--work-dir", work, "--no-progress"]
    code, _, err = cli(*argv)  # without --resume: refused, naming what is there (was: UnicodeDecodeError traceback)
    assert code == 2 and err.count("\n") == 1 and "already holds a run (a checkpoint)" in err, err
    code, _, err = cli(*argv, "--resume")  # was: JSONDecodeError traceback
    assert code == 2 and err.count("\n") == 1 and "mopro_bench_run.json cannot be read (JSONDecodeError)" in err, err


def test_a_relative_work_dir_resumes_and_loads_its_backbone(tmp_path, monkeypatch):
    """detectron2 opens checkpoints at paths relative to the current directory (`make demo` writes under demo_out/):
    the guard must resolve them from there, not a second time under the work dir (was: every load refused)."""
    import torch

    monkeypatch.chdir(tmp_path)
    work = Path("demo_out") / "run.work"  # relative, as the demo's results dir
    work.mkdir(parents=True)
    model, ck = _checkpointer(work)
    with torch.no_grad():
        model.weight.fill_(0.5)
    ck.save("model_0000002", iteration=2)
    other, ck2 = _checkpointer(work)
    extra = ck2.resume_or_load("", resume=True)  # detectron2 joins save_dir (relative) and the name
    assert extra["iteration"] == 2 and torch.equal(other.weight, torch.full((2, 3), 0.5))
    third, ck3 = _checkpointer(work)
    ck3.load(str(work / "model_0000002.pth"))  # MODEL.WEIGHTS given relative to the current directory
    assert torch.equal(third.weight, torch.full((2, 3), 0.5))
    outside = Path("demo_out") / "model_0000002.pth"  # the same bytes one folder up: outside the work dir
    outside.write_bytes((work / "model_0000002.pth").read_bytes())
    with pytest.raises(BenchError, match="not a file in the work dir"):
        ck3.load(str(outside))
