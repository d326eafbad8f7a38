"""imagenet_r / imagenet_a / imagenet_val_calibration end to end on generated data.

The checkpoint is ``random:resnet18`` (seed 0) with a 1000-way classifier fitted on generated ImageNet train features:
multinomial logistic regression on the 8 generated classes, folded back to raw features, put at those classes' rows
of a 1000-row matrix; every other row has weight 0 and bias -30 (a probe that never saw those classes). The images are
64 px, so the tests run the protocol with ``resize=64, crop=64`` and bins of 20 samples (``--set`` overrides).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mopro_bench.checkpoints import Head, load_checkpoint
from mopro_bench.checkpoints.heads import save_head
from mopro_bench.data.imagenet import ImageNetFolder
from mopro_bench.data.imagenet_ra import ImageNetRA
from mopro_bench.errors import BenchError
from mopro_bench.evaluate import evaluate
from mopro_bench.features import extract_features
from mopro_bench.registry import RunContext, get_task
from mopro_bench.resources import imagenet1k_wnids, imagenet_a_wnids, imagenet_r_wnids

SMALL = {"resize": 64, "crop": 64, "calib_bin_size": 20}
SET_ARGS = ["--set", "resize=64", "--set", "crop=64", "--set", "calib_bin_size=20"]
PER_CLASS = 20  # generated ImageNet-R/-A images per class (8 classes -> 160 images)


@pytest.fixture(scope="module")
def env(synth_root, tmp_path_factory):
    torch.set_num_threads(1)
    from sklearn.linear_model import LogisticRegression

    cache = tmp_path_factory.mktemp("robustness_cache")
    roots = {
        "imagenet": synth_root("imagenet", train_per_class=40),
        "imagenet-r": synth_root("imagenet-r", per_class=PER_CLASS),
        "imagenet-a": synth_root("imagenet-a", per_class=PER_CLASS),
    }
    ck = load_checkpoint("random:resnet18", seed=0)
    ctx = RunContext(cache_dir=cache, progress=False)
    train = ImageNetFolder(roots["imagenet"]).samples("train")
    x = extract_features(ck, [p for p, _ in train], ctx, dataset_id="imagenet/train", image_size=64, resize=64)
    y = np.array([label for _, label in train])
    mu, sd = x.mean(0), x.std(0) + 1e-6
    lr = LogisticRegression(C=1.0, max_iter=2000).fit((x - mu) / sd, y)
    w_cls = lr.coef_ / sd
    b_cls = lr.intercept_ - w_cls @ mu
    weight = torch.zeros(1000, x.shape[1])
    bias = torch.full((1000,), -30.0)
    weight[torch.as_tensor(lr.classes_)] = torch.as_tensor(w_cls, dtype=torch.float32)
    bias[torch.as_tensor(lr.classes_)] = torch.as_tensor(b_cls, dtype=torch.float32)
    g = torch.Generator().manual_seed(1)
    # a random classifier whose logits have about unit scale
    random_w = torch.randn(1000, x.shape[1], generator=g) / float(np.sqrt(x.shape[1] * (x**2).mean()))
    return {"roots": roots, "cache": cache, "weight": weight, "bias": bias, "random_w": random_w,
            "classes": lr.classes_.tolist()}


def checkpoint(weight=None, bias=None, class_space="imagenet1k"):
    ck = load_checkpoint("random:resnet18", seed=0)
    if weight is not None:
        ck.heads["classifier"] = Head("classifier", {"weight": weight, "bias": bias if bias is not None else torch.zeros(1000)},
                                      num_classes=weight.shape[0], class_space=class_space)
    return ck


def run(env, ck, task, tmp_path, overrides=SMALL, **kw):
    kind = {"imagenet_r": "imagenet-r", "imagenet_a": "imagenet-a", "imagenet_val_calibration": "imagenet"}[task.split("@")[0]]
    return evaluate(ck, task, env["roots"][kind], overrides=overrides, cache_dir=env["cache"], results_dir=tmp_path / "res",
                    progress=False, **kw)


def top1_by_name(env, ck, task):
    """Independent top-1: arg-max over the 1000 logits restricted by wnid *name*, compared with the folder name."""
    kind = {"imagenet_r": "imagenet-r", "imagenet_a": "imagenet-a"}[task]
    allowed = set(imagenet_r_wnids() if kind == "imagenet-r" else imagenet_a_wnids())
    names = imagenet1k_wnids()
    cols = [i for i, w in enumerate(names) if w in allowed]
    root = env["roots"][kind]
    samples = ImageNetRA(root, kind).samples()
    ctx = RunContext(cache_dir=env["cache"], progress=False)
    # the same cache entry as the task's (features are not what this checks)
    feats = extract_features(ck, [p for p, _ in samples], ctx, dataset_id=f"{kind}/all",
                             rel_paths=[str(p.relative_to(root)) for p, _ in samples], image_size=64, resize=64)
    logits = torch.from_numpy(feats) @ ck.heads["classifier"].state_dict["weight"].T + ck.heads["classifier"].state_dict["bias"]
    pred = [names[cols[j]] for j in logits[:, cols].argmax(1).tolist()]
    return 100.0 * np.mean([pw == p.parent.name for pw, (p, _) in zip(pred, samples)])


@pytest.mark.slow
@pytest.mark.parametrize("task", ["imagenet_r", "imagenet_a"])
def test_fitted_classifier_beats_random_classifier(env, task, tmp_path):
    trained = run(env, checkpoint(env["weight"], env["bias"]), task, tmp_path).record
    rand = run(env, checkpoint(env["random_w"]), task, tmp_path / "rand").record
    m, r = trained["metrics"], rand["metrics"]
    # 8 generated classes of 200 kept: chance is 0.5% (12.5% even when guessing among the 8 present classes)
    assert m["top1"] >= 18.0, m
    assert r["top1"] <= 5.0, r
    assert m["nll"] < r["nll"] and r["nll"] > np.log(200) - 0.5  # the random one is near uniform over 200
    assert m["top1"] == pytest.approx(top1_by_name(env, checkpoint(env["weight"], env["bias"]), task))
    assert set(m) == {"top1", "calib_rms", "ece15", "nll", "brier"}
    for k in ("top1", "calib_rms", "ece15"):
        assert 0.0 <= m[k] <= 100.0 and trained["metric_units"][k] == "%"
    assert trained["metric_units"]["nll"] == "nats" and 0.0 <= m["brier"] <= 2.0
    assert "beta=20" in trained["metric_definitions"]["calib_rms"]
    d = trained["details"]
    n = 8 * PER_CLASS
    assert d["n_images"] == n and d["n_classes_kept"] == 200 and trained["data"]["n_classes_present"] == 8
    # n = 160, bins of 20: 8 bins, the last (20 most confident samples) dropped, 7 summed
    assert d["calib_rms_bins"]["bins_summed"] == 7 and d["calib_rms_bins"]["dropped"]["samples"] == 20
    assert d["adaptive_bins"]["kept"] == [True] * 7 + [False]
    assert sum(d["reliability"]["count"]) == n
    assert d["classifier"]["source"] == "checkpoint" and "partial_dataset" in d
    # a calibration error is recomputable from the stored adaptive bins (the bins the metric summed)
    ab = d["adaptive_bins"]
    rms = np.sqrt(sum(c / n * (conf - acc) ** 2 for c, conf, acc, k in
                      zip(ab["count"], ab["confidence"], ab["accuracy"], ab["kept"]) if k)) * 100
    assert m["calib_rms"] == pytest.approx(rms, abs=1e-3)
    png = Path(trained["artifacts"][0])
    assert png.name.endswith(".reliability.png") and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert trained["protocol"]["id"].startswith(f"{task}@hendrycks+")


def test_head_file_through_the_cli(env, cli, tmp_path):
    ck = checkpoint()
    head = save_head(tmp_path / "head.pt", env["weight"], env["bias"], ck=ck, class_space="imagenet1k",
                     protocol="imagenet_linear@fast")
    code, out, err = cli("eval", "--ckpt", "random:resnet18", "--task", "imagenet_a", "--data", env["roots"]["imagenet-a"],
                         "--head", head, *SET_ARGS, "--results-dir", tmp_path / "res", "--cache-dir", env["cache"],
                         "--device", "cpu", "--workers", "0", "--no-progress", "--out", tmp_path / "r.json")
    assert code == 0, err
    rec = json.loads((tmp_path / "r.json").read_text())
    assert rec["details"]["classifier"]["source"].startswith("head file")
    assert rec["details"]["classifier"]["class_space"] == "imagenet1k"  # the head file's 1000-way ImageNet classifier
    assert rec["metrics"]["top1"] >= 18.0 and "calib_rms" in out
    assert Path(rec["artifacts"][0]).is_file()


def test_no_classifier_is_a_one_line_error(env, cli, tmp_path):
    code, out, err = cli("eval", "--ckpt", "random:resnet18", "--task", "imagenet_r", "--data", env["roots"]["imagenet-r"],
                         "--results-dir", tmp_path, "--cache-dir", env["cache"], "--device", "cpu")
    assert code == 2
    line = err.strip().splitlines()[-1]
    assert "no classifier" in line
    assert "--ckpt random:resnet18 --task imagenet_linear@fast --data IMAGENET --save-head head.pt" in line
    assert "--head head.pt" in line and "Traceback" not in err


def test_classifier_in_another_class_space_is_refused(env, tmp_path):
    ck = checkpoint(torch.zeros(5000, 512), torch.zeros(5000), class_space="webvision5k")
    with pytest.raises(BenchError, match="class space 'webvision5k'"):
        run(env, ck, "imagenet_r", tmp_path)


def test_published_protocol_refuses_too_few_images(env, tmp_path):
    with pytest.raises(BenchError, match="calib_bin_size"):  # 160 images < 2 bins of 100
        run(env, checkpoint(env["weight"], env["bias"]), "imagenet_r", tmp_path, overrides={"resize": 64, "crop": 64})


def test_imagenet_val_calibration_in1k_keeps_all_1000_classes(env, tmp_path):
    rec = run(env, checkpoint(env["weight"], env["bias"]), "imagenet_val_calibration@in1k", tmp_path,
              overrides={**SMALL, "calib_bin_size": 10}).record
    assert rec["details"]["n_classes_kept"] == 1000 and rec["data"]["split"] == "val"
    assert rec["details"]["n_images"] == 32 and rec["details"]["calib_rms_bins"]["bins_summed"] == 2
    assert rec["metrics"]["top1"] >= 40.0  # in-distribution: higher than on the renditions


@pytest.fixture(scope="module")
def imagenet_with_other_class(env, tmp_path_factory):
    """The generated ImageNet plus 12 val images of n01440764 (index 0), a class outside the 200 ImageNet-R classes."""
    root = tmp_path_factory.mktemp("in200") / "root"
    shutil.copytree(env["roots"]["imagenet"], root)
    other = imagenet1k_wnids()[0]
    assert other not in set(imagenet_r_wnids())
    src = sorted((root / "val").rglob("*.JPEG"))[:12]
    (root / "val" / other).mkdir()
    for i, f in enumerate(src):
        shutil.copy(f, root / "val" / other / f"ILSVRC2012_val_9{i:07d}.JPEG")
    return root, other


def test_imagenet200_scores_only_the_200_classes_and_masks_the_logits(env, imagenet_with_other_class, tmp_path):
    root, other = imagenet_with_other_class
    # the fitted classifier plus a huge logit for class 0 (outside ImageNet-R): over 1000 classes it wins everywhere
    bias = env["bias"].clone()
    bias[0] = 1e4
    ck = checkpoint(env["weight"], bias)
    kw = dict(cache_dir=env["cache"], progress=False)
    in200 = evaluate(ck, "imagenet_val_calibration", root, overrides={**SMALL, "calib_bin_size": 10},
                     results_dir=tmp_path / "a", **kw).record
    in1k = evaluate(checkpoint(env["weight"], bias), "imagenet_val_calibration@in1k", root,
                    overrides={**SMALL, "calib_bin_size": 10}, results_dir=tmp_path / "b", **kw).record
    assert in200["protocol"]["version"] == "2" and in200["protocol"]["params"]["class_subset"] == "imagenet-r-200"
    assert in200["details"]["n_images"] == 32 and in200["data"]["images_outside_classes"] == 12  # class 0 not scored
    assert in200["details"]["n_classes_kept"] == 200 and in1k["details"]["n_images"] == 44
    assert in1k["metrics"]["top1"] == pytest.approx(100 * 12 / 44)  # only the 12 class-0 images are right
    # the masked logits: the 200-class top-1 is the fitted classifier's, unaffected by class 0's logit
    plain = evaluate(checkpoint(env["weight"], env["bias"]), "imagenet_val_calibration", root,
                     overrides={**SMALL, "calib_bin_size": 10}, results_dir=tmp_path / "c", **kw).record
    assert in200["metrics"] == plain["metrics"] and in200["metrics"]["top1"] >= 40.0


def test_published_protocol_constants_are_in_the_record():
    for name, n_cls in (("imagenet_r", 200), ("imagenet_a", 200), ("imagenet_val_calibration", 200),
                        ("imagenet_val_calibration@in1k", 1000)):
        rt = get_task(name)
        params = rt.protocol.params()
        assert rt.protocol_id == (name if "@" in name else f"{name}@hendrycks")
        assert f"softmax over {n_cls} logits" in rt.protocol.description
        assert params["resize"] == 256 and params["crop"] == 224
        assert tuple(params["mean"]) == (0.485, 0.456, 0.406) and tuple(params["std"]) == (0.229, 0.224, 0.225)
        assert params["calib_bin_size"] == 100 and params["calib_drop_last_bin"] is True
        assert params["ece_bins"] == 15 and params["percent"] is True
        assert params["class_subset"] == {"imagenet_r": "dataset-wnids", "imagenet_a": "dataset-wnids",
                                          "imagenet_val_calibration": "imagenet-r-200"}.get(name, "all-1000")
        assert rt.task.options == ("head",) and rt.task.needs_classifier
        assert rt.task.higher_is_better["calib_rms"] is False and rt.task.higher_is_better["top1"] is True
