"""voc_lowshot / places_lowshot end to end on generated data: records, splits files, feature cache, errors, signal."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from mopro_bench.errors import BenchError
from mopro_bench.evaluate import evaluate
from mopro_bench.io import sha256_file
from mopro_bench.results import read_record, validate_record

VOC_SET = ["--set", "image_size=64", "--set", "resize=73", "--set", "ks=[1,2]", "--set", "num_samples=2"]
VOC_OVR = {"image_size": 64, "resize": 73, "ks": [1, 2], "num_samples": 2}
PLACES_OVR = {"image_size": 32, "resize": 36, "ks": [1, 2], "num_samples": 2}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One feature cache for the module: each (checkpoint, dataset, transform) is extracted once."""
    return tmp_path_factory.mktemp("featcache")


@pytest.fixture
def no_extraction(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("features were extracted although they are cached")

    monkeypatch.setattr("mopro_bench.features.run_backbone", boom)


def _eval(task, root, tmp_path, cache, overrides, **kw):
    return evaluate("random:resnet18", task, root, overrides=overrides, cache_dir=cache, results_dir=tmp_path / "res",
                    progress=False, **kw)


@pytest.mark.slow
def test_voc_cli_end_to_end_then_cached_sklearn_rerun(cli, synth_root, tmp_path, cache, monkeypatch):
    voc = synth_root("voc07")
    splits = tmp_path / "splits.json"
    code, out, err = cli("eval", "--ckpt", "random:resnet18", "--task", "voc_lowshot", "--data", voc, *VOC_SET,
                         "--cache-dir", cache, "--results-dir", tmp_path / "res", "--save-splits", splits, "--no-progress")
    assert code == 0, err
    path = out.strip().splitlines()[-1].split("result: ")[1]
    rec = read_record(path)
    validate_record(rec)
    assert set(rec["metrics"]) == {"mAP_k1", "mAP_k1_std", "mAP_k2", "mAP_k2_std"}
    assert all(0 < v <= 100 for k, v in rec["metrics"].items() if not k.endswith("_std"))
    assert rec["metric_units"]["mAP_k1"] == "%"
    d = rec["details"]
    assert len(d["per_run"]["mAP_k2"]) == 2 and len(d["lowshot"]["2"]["runs"][0]["per_class"]) == 20
    assert np.mean(d["per_run"]["mAP_k2"]) == pytest.approx(rec["metrics"]["mAP_k2"], abs=1e-3)
    assert d["lowshot"]["1"]["runs"][0]["n_train"] == 20 and d["lowshot"]["2"]["runs"][0]["n_train"] == 40
    assert d["solver"]["name"] == "torch" and all(v["all_converged"] for v in d["solver"]["by_k"].values())
    assert rec["protocol"]["params"]["class_weight_pos"] == 2.0 and rec["protocol"]["params"]["costs"] == [0.5]
    png = rec["artifacts"][0]
    assert png.endswith(".lowshot.png") and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(splits.read_text())
    assert list(saved) == ["task", "protocol", "seed", "k"] and list(saved["k"]) == ["1", "2"]
    assert len(saved["k"]["2"]) == 2 and len(saved["k"]["2"][0]) == 40
    # the same splits from the file, the sklearn reference, and no extraction at all (features are cached)
    monkeypatch.setattr("mopro_bench.features.run_backbone", lambda *a, **k: pytest.fail("features re-extracted"))
    again = _eval("voc_lowshot", voc, tmp_path, cache, {"image_size": 64, "resize": 73},
                  options={"splits": str(splits), "solver": "sklearn"}).record
    assert again["details"]["feature_cache"] == {"hits": 2, "misses": 0}
    assert again["data"]["splits_file_sha256"] == sha256_file(splits)
    assert again["data"]["splits_sha256"] == rec["data"]["splits_sha256"]
    for k in ("mAP_k1", "mAP_k2"):
        assert abs(again["metrics"][k] - rec["metrics"][k]) <= 0.1
    assert again["details"]["solver"]["name"] == "sklearn"


@pytest.mark.slow
def test_places_end_to_end(synth_root, tmp_path, cache):
    places = synth_root("places205")
    out = _eval("places_lowshot", places, tmp_path, cache, PLACES_OVR)
    rec = out.record
    validate_record(rec)
    assert set(rec["metrics"]) == {"top1_k1", "top1_k1_std", "top1_k2", "top1_k2_std"}
    assert rec["metrics"]["top1_k1"] > 100 / 205 * 3  # generated scenes are learnable even from random features
    runs = rec["details"]["lowshot"]["1"]["runs"]
    assert runs[0]["n_train"] == 205 and len(runs[0]["per_class"]) == 205
    assert rec["data"]["test_images"] == 205 and rec["details"]["features"]["train"]["2"] == [410, 512]
    assert 205 < rec["details"]["features"]["train"]["1"][0] < 410  # the union of two k=1 samples
    assert (out.path.parent / (out.path.stem + ".lowshot.png")).exists()
    # same seed -> same k=1 splits -> same number, every feature from the cache (cached per k)
    again = _eval("places_lowshot", places, tmp_path, cache, {**PLACES_OVR, "ks": [1]}).record
    assert again["metrics"]["top1_k1"] == rec["metrics"]["top1_k1"]
    assert again["details"]["feature_cache"] == {"hits": 2, "misses": 0}


@pytest.mark.slow
def test_goyal19_cv_and_published_selection(synth_root, tmp_path, cache):
    voc = synth_root("voc07")
    ovr = {**VOC_OVR, "ks": [2]}
    cv = _eval("voc_lowshot@goyal19", voc, tmp_path, cache, ovr).record
    pub = _eval("voc_lowshot@goyal19-published", voc, tmp_path, cache, ovr).record
    assert cv["selection"].startswith("cost per (k, sample) by 5-fold")
    assert pub["selection"].startswith("test-set (as published)")
    grid = cv["protocol"]["params"]["costs"]
    assert len(grid) == 11 and all(r["cost"] in grid for r in cv["details"]["lowshot"]["2"]["runs"])
    assert "test_by_cost" not in cv["details"]["lowshot"]["2"] and "cv" in cv["details"]["lowshot"]["2"]
    table = pub["details"]["lowshot"]["2"]["test_by_cost"]
    assert pub["metrics"]["mAP_k2"] == pytest.approx(max(table.values()), abs=1e-3)  # best test cost, as published
    # per class: 2 positives + 38 negatives, difficult never used
    assert pub["details"]["lowshot"]["2"]["runs"][0]["n_train"] == 20 * 40


def _one_line_error(run_cli_subprocess_result):
    r = run_cli_subprocess_result
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in r.stderr
    return lines[0]


@pytest.mark.slow
def test_errors_are_one_line(cli, synth_root, tmp_path, cache):
    voc = synth_root("voc07")
    base = ["eval", "--ckpt", "random:resnet18", "--task", "voc_lowshot", "--data", voc, "--cache-dir", cache,
            "--results-dir", tmp_path / "res", "--no-progress", "--set", "image_size=64", "--set", "resize=73"]
    # k larger than the available positives (generated tiny VOC has ~7..15 per class)
    code, _, err = cli(*base, "--set", "ks=[64]")
    assert code == 2 and "k=64 needs 64 positive images for class" in err and "fix:" in err
    # a splits file naming an image the dataset does not have
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"task": "voc_lowshot", "protocol": "voc_lowshot@mopro", "seed": 0,
                               "k": {"1": [["999999"] * 20]}}))
    code, _, err = cli(*base, "--splits", bad)
    assert code == 2 and "names '999999'" in err and len(err.strip().splitlines()) == 1
    # splits drawn for another sampling scheme
    other = tmp_path / "other.json"
    code, _, err = cli(*base, "--set", "ks=[1]", "--set", "num_samples=1", "--save-splits", other)
    assert code == 0, err
    code, _, err = cli(*base.__getitem__(slice(0, 4)), "voc_lowshot@goyal19", *base[5:], "--splits", other)
    assert code == 2 and "was drawn for voc_lowshot@mopro" in err
    # missing VOC files
    broken = tmp_path / "voc"
    shutil.copytree(voc, broken)
    (broken / "VOCdevkit/VOC2007/ImageSets/Main/cow_test.txt").unlink()
    code, _, err = cli(*[broken if a == voc else a for a in base])
    assert code == 2 and "cow_test.txt is missing" in err
    code, _, err = cli(*[tmp_path if a == voc else a for a in base])
    assert code == 2 and "VOCdevkit" in err
    shutil.copy(voc / "VOCdevkit/VOC2007/ImageSets/Main/cow_test.txt", broken / "VOCdevkit/VOC2007/ImageSets/Main/")
    test_id = (broken / "VOCdevkit/VOC2007/ImageSets/Main/trainval.txt").read_text().split()[3]
    (broken / f"VOCdevkit/VOC2007/JPEGImages/{test_id}.jpg").unlink()
    fresh = [tmp_path / "fresh-cache" if a == cache else broken if a == voc else a for a in base]
    code, _, err = cli(*fresh, "--set", "ks=[1]", "--set", "num_samples=1")
    assert code == 2 and f"{test_id}.jpg does not exist" in err
    # an option the task does not take, a bad protocol value
    code, _, err = cli(*base, "--head", "x.pt")
    assert code == 2 and "--head does not apply" in err
    code, _, err = cli(*base, "--set", "cost_selection=best")
    assert code == 2 and "cost_selection" in err


def test_protocols_hold_the_published_constants():
    from mopro_bench.registry import get_task

    m = get_task("voc_lowshot").protocol
    assert (m.ks, m.num_samples, m.costs, m.class_weight_pos, m.class_weight_neg, m.intercept_scaling, m.tol,
            m.max_iter, m.image_size, m.resize, m.feature_norm_eps) == ((1, 2, 4, 8, 16), 5, (0.5,), 2.0, 1.0, 1.0, 1e-4,
                                                                        2000, 224, 256, 1e-5)
    assert m.difficult_train == m.difficult_test == "negative" and m.sampling == "union-of-positives"
    g = get_task("voc_lowshot@goyal19").protocol
    assert g.costs == (0.01, 0.1, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 50.0, 100.0, 1000.0)
    assert g.cost_selection == "cv" and g.negatives_per_positive == 19 and g.difficult_test == "ignore"
    assert get_task("voc_lowshot@goyal19-published").protocol.cost_selection == "test"
    p = get_task("places_lowshot").protocol
    assert (p.costs, p.class_weight_pos, p.num_classes, p.test_split) == ((0.5,), 1.0, 205, "val")
    with pytest.raises(BenchError, match="unknown setting"):
        get_task("voc_lowshot", {"C": 1})


# --------------------------------------------------------------------------------------------- learned beats random
class TinyCNN(torch.nn.Module):
    feature_dim = 64

    def __init__(self):
        super().__init__()
        c = [3, 16, 32, 64]
        layers = []
        for a, b in zip(c[:-1], c[1:]):
            layers += [torch.nn.Conv2d(a, b, 3, stride=2, padding=1), torch.nn.BatchNorm2d(b), torch.nn.ReLU()]
        self.body = torch.nn.Sequential(*layers)

    def forward(self, x):
        return self.body(x).mean((2, 3))


def _trained_checkpoint(root):
    """A small CNN fitted (multi-label) on a *different* generated VOC (other seed, other images, same class looks)."""
    from mopro_bench.checkpoints import LoadedCheckpoint
    from mopro_bench.data.common import eval_transform, load_rgb
    from mopro_bench.data.voc import VOC07

    torch.manual_seed(0)
    voc = VOC07(root)
    tf = eval_transform(64, 73)
    x = torch.stack([tf(load_rgb(voc.image_path(i))) for s in ("trainval", "test") for i in voc.ids(s)])
    y = torch.tensor(np.concatenate([voc.labels("trainval"), voc.labels("test")]) == 1, dtype=torch.float32)
    net = TinyCNN()
    head = torch.nn.Linear(64, 20)
    opt = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=3e-3)
    for _ in range(25):
        for idx in torch.randperm(len(x)).split(60):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(head(net(x[idx])), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    return LoadedCheckpoint(backbone=net, format="test", arch="tinycnn", width=1, sha256="0" * 63 + "1",
                            path="tinycnn", name="tinycnn-trained")


@pytest.mark.slow
def test_learned_features_beat_random(synth_root, tmp_path, cache):
    torch.set_num_threads(1)
    voc = synth_root("voc07")
    ck = _trained_checkpoint(synth_root("voc07", seed=1))
    ovr = {**VOC_OVR, "ks": [2, 4], "num_samples": 3}
    learned = evaluate(ck, "voc_lowshot", voc, overrides=ovr, cache_dir=cache, results_dir=tmp_path / "r", progress=False)
    rand = _eval("voc_lowshot", voc, tmp_path, cache, ovr)
    lm, rm = learned.record["metrics"], rand.record["metrics"]
    # measured: k=2 28.3 vs 16.8, k=4 33.7 vs 16.0 -- and more shots help the learned features
    assert lm["mAP_k2"] > rm["mAP_k2"] + 5 and lm["mAP_k4"] > rm["mAP_k4"] + 10, (lm, rm)
    assert lm["mAP_k4"] > lm["mAP_k2"]
