"""Issue 14 acceptance: a mixed sequence -- eval A on data X, change X in place, eval again, eval on a copy Y, swap the
checkpoint file during an eval -- never yields a record whose number does not belong to its (checkpoint bytes, data
content, protocol, seed), and no experiment's record replaces another's (reliability cases 22, 61, 63).

Ground truth for every (checkpoint bytes, data content) pair is a separate evaluation with a fresh cache."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from mopro_bench.evaluate import evaluate
from mopro_bench.io import sha256_file
from mopro_bench.results import read_record

SMALL = {"image_size": 32, "resize": 36, "ks": [1], "num_samples": 1}
METRIC = "mAP_k1"


def _resnet18_file(path: Path, seed: int) -> Path:
    import torchvision

    torch.manual_seed(seed)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def _invert_in_place(root: Path) -> None:
    from PIL import Image, ImageOps

    for f in sorted(root.rglob("*.jpg")):
        ImageOps.invert(Image.open(f).convert("RGB")).rotate(90).save(f)


@pytest.mark.slow
def test_mixed_sequence_never_mislabels_a_number(synth_root, tmp_path, monkeypatch):
    X = tmp_path / "X"
    shutil.copytree(synth_root("voc07"), X)
    ck_a = _resnet18_file(tmp_path / "a.pth", 0)
    ck_b = _resnet18_file(tmp_path / "b_src.pth", 1)
    sha_a, sha_b = sha256_file(ck_a), sha256_file(ck_b)
    res, cache = tmp_path / "res", tmp_path / "cache"
    kw = dict(overrides=SMALL, device="cpu", workers=0, progress=False)
    fresh = iter(range(100))

    def run(ck, data, **more):
        return evaluate(str(ck), "voc_lowshot", data, cache_dir=cache, results_dir=res, **kw, **more)

    def truth(ck, data) -> float:  # the number that belongs to these bytes: no shared cache, no shared results
        i = next(fresh)
        out = evaluate(str(ck), "voc_lowshot", data, cache_dir=tmp_path / f"fresh{i}", results_dir=tmp_path / f"t{i}", **kw)
        return out.record["metrics"][METRIC]

    # 1. A on X
    r1 = run(ck_a, X)
    v1 = r1.record["metrics"][METRIC]
    # 2. X changed in place (same names, other pixels): another experiment, the first record stays
    _invert_in_place(X)
    r2 = run(ck_a, X)
    v2 = r2.record["metrics"][METRIC]
    assert v2 == pytest.approx(truth(ck_a, X)) and v2 != pytest.approx(v1)
    assert r2.path != r1.path and r2.record["experiment"]["key"] != r1.record["experiment"]["key"]
    assert read_record(r1.path)["metrics"][METRIC] == v1  # not overwritten (case 63)
    # 3. a copy Y of the changed X: the same experiment (content, not location), its record replaces its own
    Y = tmp_path / "Y"
    shutil.copytree(X, Y)
    r3 = run(ck_a, Y)
    assert r3.path == r2.path and r3.record["metrics"][METRIC] == pytest.approx(v2)
    assert read_record(r3.path)["data"]["root"] == str(Y.resolve())
    # 4. the checkpoint file is replaced by B's bytes while A is being evaluated
    from mopro_bench.registry import get_task

    task_cls = type(get_task("voc_lowshot").task)
    original = task_cls.run
    swap = tmp_path / "b_copy.pth"
    shutil.copy(ck_b, swap)

    def run_and_swap(self, *a, **k):
        os.replace(swap, ck_a)  # what `pretrain` does to last.pth.tar every epoch
        return original(self, *a, **k)

    monkeypatch.setattr(task_cls, "run", run_and_swap)
    r4 = run(ck_a, Y)
    monkeypatch.setattr(task_cls, "run", original)
    assert sha256_file(ck_a) == sha_b  # the swap happened
    assert r4.record["checkpoint"]["sha256"] == sha_a and r4.record["metrics"][METRIC] == pytest.approx(v2)
    # 5. the path now holds B: its record carries B's hash and B's number, in a file of its own
    r5 = run(ck_a, Y)
    assert r5.record["checkpoint"]["sha256"] == sha_b and r5.path not in (r1.path, r2.path)
    assert r5.record["metrics"][METRIC] == pytest.approx(truth(ck_b, Y))
    # every record on disk: its number is the one of its (checkpoint bytes, data content)
    expected = {(sha_a, r1.record["data"]["fingerprints"]["voc07/test"]["sha256"]): v1,
                (sha_a, r2.record["data"]["fingerprints"]["voc07/test"]["sha256"]): v2,
                (sha_b, r5.record["data"]["fingerprints"]["voc07/test"]["sha256"]): r5.record["metrics"][METRIC]}
    files = sorted(res.rglob("*-seed0.json"))
    assert len(files) == 3
    for f in files:
        rec = read_record(f)
        key = (rec["checkpoint"]["sha256"], rec["data"]["fingerprints"]["voc07/test"]["sha256"])
        assert rec["metrics"][METRIC] == pytest.approx(expected.pop(key)), f
    assert not expected
    # and the leaderboard shows three experiments, none pooled with another
    from mopro_bench import leaderboard as lb
    from mopro_bench.results import load_records

    (t,) = lb.build_tables(load_records(res).records)
    assert sorted(len(r.seeds) for r in t.measured) == [1, 1, 1] and len({r.experiment for r in t.measured}) == 3
