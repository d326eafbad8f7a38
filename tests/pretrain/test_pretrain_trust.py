"""Numbers the pretrainer must not fake: divergence stops the run (the last good checkpoint stays newest), resume
refuses another train list of the same size, and a noise-cleaning collapse is reported."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from mopro_bench.pretrain import trainer as trainer_mod
from mopro_bench.pretrain.checkpoint import LAST, list_checkpoints
from mopro_bench.pretrain.trainer import detect_collapse, train_list_sha256

QUICK = ["--arch", "resnet18", "--image-size", "32", "--batch-size", "16", "--set", "mopro.queue_size=32",
         "--set", "model.num_class=100", "--set", "model.low_dim=16", "--set", "model.bn_splits=2", "--set",
         "run.eval_every=0", "--device", "cpu", "--workers", "0", "--no-progress"]


def _epoch(e, cleaning, ood, top1=None, samples=1000, relabelled=0):
    r = {"epoch": e, "cleaning": cleaning, "samples": samples, "ood": ood, "relabelled": relabelled}
    if top1 is not None:
        r["webvision_val/top1"] = top1
    return r


def test_collapse_detector_on_synthetic_traces():
    warm = [_epoch(e, False, 0, 20.0 + 3 * e) for e in range(6)]  # val top-1 20 -> 35 over the warm-up
    # the observed collapse: ~60% OOD per epoch from the first cleaning epoch, val top-1 38% -> 20%
    collapsed = warm + [_epoch(6, True, 600, 20.0)]
    msg = detect_collapse(collapsed)
    assert msg is not None and "epoch 6" in msg and "60% of its samples" in msg and "to 20.0% from 35.0%" in msg
    # only one sign is enough
    assert "60%" in detect_collapse(warm + [_epoch(6, True, 600, 34.0)])
    only_val = detect_collapse(warm + [_epoch(6, True, 150, 24.0)])
    assert only_val is not None and "out-of-distribution" not in only_val and "fell to 24.0%" in only_val
    # healthy cleaning: 15% OOD (data with 10% OOD), val a bit lower or higher
    assert detect_collapse(warm + [_epoch(6, True, 150, 33.0)]) is None
    assert detect_collapse(warm + [_epoch(6, True, 150, 40.0)]) is None
    assert detect_collapse(warm + [_epoch(6, True, 150, 36.0, relabelled=400)]) is None  # 40% noise: 40% relabelled
    # relabelling collapse (generated data, 40% flips, default crops: 60-78% relabelled per epoch, mostly to one class)
    relab = detect_collapse(warm + [_epoch(6, True, 80, 36.0, relabelled=610)])
    assert relab is not None and "61% of its samples were relabelled" in relab and "out-of-distribution" not in relab
    # thresholds: just below half OOD is not flagged, half is; a small absolute drop of a low accuracy is not flagged
    assert detect_collapse(warm + [_epoch(6, True, 499)]) is None and detect_collapse(warm + [_epoch(6, True, 500)])
    low = [_epoch(0, False, 0, 6.0), _epoch(1, True, 100, 2.0)]
    assert detect_collapse(low) is None  # -66% but only 4 points
    # warm-up epochs are never flagged; no validation at all still checks the OOD fraction
    assert detect_collapse(warm) is None
    assert detect_collapse([_epoch(0, False, 0), _epoch(1, True, 700)]) is not None
    assert detect_collapse([]) is None


def test_train_list_fingerprint():
    a = [("google/a.jpg", 1), ("google/b.jpg", 2)]
    assert train_list_sha256(a) == train_list_sha256(list(a))
    assert train_list_sha256(a) != train_list_sha256([("google/a.jpg", 2), ("google/b.jpg", 1)])  # labels count
    assert train_list_sha256(a) != train_list_sha256(a[::-1])  # order fixes what each index means
    assert train_list_sha256(a) != train_list_sha256([("google/a.jpg", 1), ("google/c.jpg", 2)])


def _relabelled_copy(root, dest):
    """The same images with every train label shifted by one class: same size, another train list."""
    shutil.copytree(root, dest)
    for name in ("train_filelist_google.txt", "train_filelist_flickr.txt"):
        f = dest / "info" / name
        if f.is_file():
            lines = [ln.split() for ln in f.read_text().splitlines() if ln.strip()]
            f.write_text("".join(f"{p} {(int(y) + 1) % 8}\n" for p, y in lines))
    return dest


def test_divergence_other_data_and_old_checkpoints_on_resume(cli, synth_root, tmp_path):
    root = synth_root("webvision", train_per_class=4)  # 32 images, 8 classes: 2 steps per epoch
    out = tmp_path / "run"
    code, _, err = cli("pretrain", "--data", root, "--out", out, *QUICK, "--epochs", "1")
    assert code == 0, err
    good = list_checkpoints(out)[-1]
    obj = torch.load(good, weights_only=True)
    assert obj["sampler"]["train_list_sha256"] == train_list_sha256(
        [(ln.split()[0], int(ln.split()[1])) for f in ("train_filelist_google.txt", "train_filelist_flickr.txt")
         for ln in (root / "info" / f).read_text().splitlines() if ln.strip()])

    # settings that cannot train are refused before anything runs
    for bad in ("optim.lr=NaN", "optim.lr=-1", "optim.momentum=1.0", "mopro.temperature=0"):
        code, _, err = cli("pretrain", "--data", root, "--out", tmp_path / "bad", *QUICK, "--epochs", "1", "--set", bad)
        assert code == 2 and "is not valid" in err and len(err.strip().splitlines()) == 1, (bad, err)

    # resume on another train list of the same size: refused (was: trained on, silently)
    other = _relabelled_copy(root, tmp_path / "other")
    code, _, err = cli("pretrain", "--data", other, "--out", out, *QUICK, "--epochs", "2", "--resume", "auto")
    assert code == 2 and "another train list" in err and "fix:" in err, err

    # divergence in the resumed epoch: exit 2 naming epoch/step and the fix; no NaN checkpoint, last.pth.tar unchanged
    code, _, err = cli("pretrain", "--data", root, "--out", out, *QUICK, "--epochs", "2", "--resume", "auto",
                       "--set", "optim.lr=1e9")
    assert code == 2, err
    assert "diverged" in err and "at epoch 1" in err and "lower optim.lr" in err and good.name in err
    assert list_checkpoints(out) == [good] and (out / LAST).resolve() == good.resolve()
    assert all(torch.isfinite(v).all() for v in torch.load(out / LAST, weights_only=True)["state_dict"].values()
               if v.is_floating_point())

    # a checkpoint from before fingerprints: a warning, then the run continues
    del obj["sampler"]["train_list_sha256"]
    torch.save(obj, good)
    code, out_text, err = cli("pretrain", "--data", root, "--out", out, *QUICK, "--epochs", "2", "--resume", "auto")
    assert code == 0, err
    assert "predates train-list fingerprints" in err and "done: 4 steps" in out_text


def test_collapse_is_reported_in_log_and_result(cli, synth_root, tmp_path, monkeypatch):
    """Path check with a detector that flags any cleaning epoch: the warning reaches stdout, log.json and the result."""
    real = detect_collapse
    monkeypatch.setattr(trainer_mod, "detect_collapse", lambda h: real(h, ood_fraction=0.0))
    root = synth_root("webvision", train_per_class=4)
    out = tmp_path / "run"
    code, stdout, err = cli("pretrain", "--data", root, "--out", out, *QUICK, "--epochs", "1", "--set",
                            "mopro.start_clean_epoch=0")
    assert code == 0, err
    log = json.loads((out / "log.json").read_text())
    assert log[0]["warning"].startswith("noise cleaning looks collapsed at epoch 0")
    assert "warning: noise cleaning looks collapsed at epoch 0" in stdout
    assert "warm-up too short (mopro.start_clean_epoch=0 of optim.epochs=1" in stdout
    assert "aug.crop_scale=[0.2, 1.0] at aug.image_size=32" in stdout
    assert "warning: noise cleaning looked collapsed in 1 epoch(s) (0)" in stdout.split("done:")[-1]


@pytest.mark.parametrize("removed", [20, 28])
def test_noise_clean_warns_when_it_removes_most_images(removed):
    from mopro_bench.pretrain.noise_clean import CleanSummary, removal_warning

    s = CleanSummary(total=32, kept=32 - removed, relabelled=0, removed=removed, out=None)
    w = removal_warning(s)
    assert w is not None and f"removes {100 * removed / 32:.0f}% of the" in w and "start_clean_epoch" in w
    assert removal_warning(CleanSummary(total=32, kept=20, relabelled=3, removed=12, out=None)) is None


def test_noise_clean_warns_on_relabelling_collapse():
    from mopro_bench.pretrain.noise_clean import CleanSummary, removal_warning

    given = [c for c in range(8) for _ in range(4)]  # 8 classes x 4
    w = removal_warning(CleanSummary(total=32, kept=32, relabelled=17, removed=0, out=None), given, given)
    assert w is not None and "relabels 53%" in w and "label" in w
    one = [3] * 20 + given[:12]  # 20 of the 32 kept labels are class 3 (62.5%); given: 4 of 32 (12.5%)
    w = removal_warning(CleanSummary(total=32, kept=32, relabelled=10, removed=0, out=None), given, one)
    assert w is not None and "gives 62% of the kept images label 3 (given labels: 12%)" in w and "relabels" not in w
    # a dominant class that was already dominant in the given labels is no collapse
    skewed = [0] * 24 + given[:8]
    assert removal_warning(CleanSummary(total=32, kept=32, relabelled=2, removed=0, out=None), skewed, skewed) is None


def test_pretrain_checkpoint_digest_is_of_the_bytes_read(tmp_path, monkeypatch):
    """noise-clean/cRT record the source checkpoint's sha256: it must be the sha of the bytes whose weights were used,
    even when `last.pth.tar` is re-pointed between the read and the hash (was: the path was hashed a second time)."""
    import hashlib

    from mopro_bench.pretrain import checkpoint as ck

    a, b = tmp_path / "a.pth.tar", tmp_path / "b.pth.tar"
    for p, v in ((a, 1.0), (b, 2.0)):
        torch.save({"mopro_bench": {"config": {}}, "state_dict": {"w": torch.full((2,), v)}}, p)
    link = tmp_path / "last.pth.tar"
    link.symlink_to(a.name)
    real_load = torch.load

    def load_then_repoint(*args, **kwargs):
        obj = real_load(*args, **kwargs)
        link.unlink()
        link.symlink_to(b.name)  # the trainer re-points last.pth.tar at the next epoch
        return obj

    monkeypatch.setattr(ck.torch, "load", load_then_repoint)
    obj = ck.load_file(link)
    assert float(obj["state_dict"]["w"][0]) == 1.0
    assert obj[ck.FILE_SHA256] == hashlib.sha256(a.read_bytes()).hexdigest() != hashlib.sha256(b.read_bytes()).hexdigest()
