"""The demo: generated data -> tiny MoPro pretrain -> noise cleaning -> every task for it and a random baseline ->
a random ViT-S/16 under the ViT protocols -> leaderboard. Everything runs on CPU in a few minutes (``--device cuda`` uses a GPU).

The demo runs each task's published protocol with a few constants scaled down (64-pixel crops, short schedules,
small calibration bins) through ``--set``-style overrides; the results therefore carry protocol ids
``task@proto+<hash>`` and are never put in a table with full-protocol numbers. Re-running the demo reuses the
generated data and the pretrained checkpoint in OUT; evaluation results are overwritten.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mopro_bench.errors import BenchError
from mopro_bench.io import atomic_write_json

# data kinds the demo generates, and the folder each lands in
DEMO_KINDS = ("webvision", "imagenet", "voc07", "places205", "imagenet-r", "imagenet-a", "coco")

# at tiny scale the pretraining set gets more images per class (the rest stays tiny)
TINY_EXTRA: dict[str, dict[str, Any]] = {"webvision": {"train_per_class": 40}}

IMG = 32  # crop size used everywhere in the demo (generated images are 40-128 px); CPU time is the budget
RESIZE = 37  # = round(32 * 256 / 224): the protocols' Resize(256)/CenterCrop(224) ratio


def pretrain_overrides(epochs: int) -> dict[str, Any]:
    """MoPro with the paper's algorithm, scaled to a ResNet-18 on 32 px generated WebVision for a couple of CPU minutes.

    What changes and why is the "short runs" recipe of the pretraining docs: momenta that average tens of steps, not
    a thousand; a queue far smaller than the data set; lr for batch 32; crops of at least 60% of the (40-128 px)
    generated images (measured, 12 epochs: WebVision val top-1 71.9% vs 62.5% with the default scale 0.2); two thirds
    of the run as warm-up before noise cleaning.
    """
    return {
        "model.arch": "resnet18",
        "model.bn_splits": 2,
        "aug.image_size": IMG,
        "aug.crop_scale": [0.6, 1.0],
        "data.batch_size": 32,
        "data.val_batch_size": 128,
        "mopro.queue_size": 32,
        "mopro.moco_m": 0.99,
        "mopro.proto_m": 0.9,
        "mopro.start_clean_epoch": max(1, epochs - epochs // 3),
        "optim.lr": 0.02,
        "optim.epochs": epochs,
        "optim.schedule": "cos",
        "run.log_every": 5,
    }


# (task spec, overrides, options); "{head}" in an option is replaced by the checkpoint's linear-probe head file
EVAL_PLAN: tuple[tuple[str, dict[str, Any], dict[str, Any]], ...] = (
    ("voc_lowshot", {"image_size": IMG, "resize": RESIZE, "ks": [1, 2, 4]}, {}),
    ("places_lowshot", {"image_size": IMG, "resize": RESIZE, "ks": [1, 2]}, {}),
    ("imagenet_linear@fast", {"image_size": IMG, "resize": RESIZE}, {"save_head": "{head}"}),
    ("imagenet_1pct", {"image_size": IMG, "resize": RESIZE, "batch_size": 16, "epochs": 10, "milestones": [6, 8],
                       "lr_head": 0.05, "lr_backbone": 0.005}, {}),
    ("imagenet_10pct", {"image_size": IMG, "resize": RESIZE, "batch_size": 32, "epochs": 4, "milestones": [3],
                        "lr_head": 0.05, "lr_backbone": 0.005}, {}),
    ("imagenet_val", {"image_size": IMG, "resize": RESIZE}, {"head": "{head}"}),
    ("webvision_val", {"image_size": IMG, "resize": RESIZE}, {}),
    ("imagenet_r", {"crop": IMG, "resize": RESIZE, "calib_bin_size": 8}, {"head": "{head}"}),
    ("imagenet_a", {"crop": IMG, "resize": RESIZE, "calib_bin_size": 8}, {"head": "{head}"}),
    ("imagenet_val_calibration", {"crop": IMG, "resize": RESIZE, "calib_bin_size": 8}, {"head": "{head}"}),
)

# a random ViT-S/16 baseline under the ViT protocols (the ResNet protocols refuse a ViT): the families in one table
VIT_BASELINE = "random:vit_small_patch16_224"
VIT_PLAN: tuple[tuple[str, dict[str, Any], dict[str, Any]], ...] = (
    ("voc_lowshot@mopro-vit", {"image_size": IMG, "resize": RESIZE, "ks": [1, 2, 4]}, {}),
    ("places_lowshot@mopro-vit", {"image_size": IMG, "resize": RESIZE, "ks": [1, 2]}, {}),
    ("imagenet_linear@fast", {"image_size": IMG, "resize": RESIZE}, {}),
)

DATA_FOR = {
    "voc_lowshot": "voc07", "places_lowshot": "places205", "imagenet_linear": "imagenet", "imagenet_1pct": "imagenet",
    "imagenet_10pct": "imagenet", "imagenet_val": "imagenet", "webvision_val": "webvision", "imagenet_r": "imagenet-r",
    "imagenet_a": "imagenet-a", "imagenet_val_calibration": "imagenet", "coco_maskrcnn": "coco",
}


@dataclass
class DemoReport:
    out: Path
    steps: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    leaderboard: str = ""


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def generate_data(out: Path, scale: str, seed: int) -> dict[str, Path]:
    from mopro_bench.data.check import check
    from mopro_bench.data.synth import synth

    roots = {}
    for kind in DEMO_KINDS:
        root = out / "data" / kind
        if root.exists() and check(kind, root).ok:
            _say(f"data {kind}: reusing {root}")
        else:
            t0 = time.time()
            if root.exists():
                import shutil

                shutil.rmtree(root)
            synth(kind, root, seed=seed, scale=scale, **(TINY_EXTRA.get(kind, {}) if scale == "tiny" else {}))
            _say(f"data {kind}: generated ({scale}) in {time.time() - t0:.1f}s -> {root}")
        roots[kind] = root
    return roots


def pretrain(out: Path, webvision: Path, epochs: int, device: str, workers: int, progress: bool) -> Path:
    from mopro_bench.pretrain.checkpoint import list_checkpoints
    from mopro_bench.pretrain.trainer import run_pretrain

    run_dir = out / "pretrain"
    existing = list_checkpoints(run_dir) if run_dir.exists() else []
    resume = "auto" if existing else None
    res = run_pretrain(pretrain_overrides(epochs), webvision, run_dir, device=device, workers=workers, resume=resume,
                       progress=progress)
    if res.checkpoint is None:
        raise RuntimeError("pretraining finished without a checkpoint")
    for w in res.warnings:
        _say(f"warning: {w}")
    return Path(res.checkpoint)


def detection_available() -> bool:
    from mopro_bench.envinfo import detectron2_status

    st = detectron2_status()
    return bool(st.get("installed") and st.get("importable", True))


def run_demo(out: str | Path = "demo_out", *, scale: str = "tiny", epochs: int = 12, device: str = "cpu",
             seed: int = 0, workers: int = 0, cache_dir: str | Path | None = None, detection: str = "auto",
             progress: bool = True) -> DemoReport:
    from mopro_bench.evaluate import evaluate
    from mopro_bench.leaderboard import make_leaderboard

    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    report = DemoReport(out)
    cache_dir = Path(cache_dir) if cache_dir else out / "cache"
    results_dir = out / "results"
    if results_dir.exists():  # a re-run replaces the previous demo's results
        import shutil

        shutil.rmtree(results_dir)
    t_all = time.time()
    roots = generate_data(out, scale, seed)

    t0 = time.time()
    _say(f"pretraining MoPro (resnet18, {epochs} epochs, {IMG}px) on generated WebVision with 30% flipped labels, 10% OOD")
    ckpt = pretrain(out, roots["webvision"], epochs, device, workers, progress)
    report.steps.append({"step": "pretrain", "seconds": round(time.time() - t0, 1), "checkpoint": str(ckpt)})

    from mopro_bench.data.synth import truth_path
    from mopro_bench.pretrain.noise_clean import noise_clean

    t0 = time.time()
    summary = noise_clean(roots["webvision"], ckpt, out / "pseudo_label.json", device=torch.device(device),
                          workers=workers, truth=truth_path(roots["webvision"]), progress=progress)
    if summary.warning:
        _say(f"warning: {summary.warning}")
    truth = getattr(summary, "truth", None) or {}
    if truth:
        by = truth["by_kind"]
        _say(f"noise cleaning: label accuracy {truth['label_accuracy_before_pct']:.1f}% given -> "
             f"{truth['label_accuracy_after_pct']:.1f}% after cleaning; removed OOD {by['ood']['removed_pct']:.0f}% vs "
             f"clean {by['clean']['removed_pct']:.0f}%")
    report.steps.append({"step": "noise-clean", "seconds": round(time.time() - t0, 1), "truth": truth})

    plan = list(EVAL_PLAN)
    want_det = detection == "on" or (detection == "auto" and detection_available())
    if want_det:
        plan.append(("coco_maskrcnn@mopro-short", DETECTION_OVERRIDES, {}))
    else:
        report.skipped.append("coco_maskrcnn (detectron2 not installed; `make setup-detection`)")

    checkpoints = [(str(ckpt), "mopro-demo", plan), ("random:resnet18", "random:resnet18", plan),
                   (VIT_BASELINE, VIT_BASELINE, list(VIT_PLAN))]
    for spec, name, plan in checkpoints:
        head = out / "heads" / f"{name.replace(':', '-')}.head.pt"
        for task_spec, overrides, options in plan:
            task_name = task_spec.split("@")[0]
            opts = {k: (str(head) if v == "{head}" else v) for k, v in options.items()}
            if spec.startswith("random:") and task_name == "webvision_val":
                report.skipped.append(f"{task_name} for {name} (no classifier; WebVision val needs the model's own)")
                continue
            if opts.get("head") and not spec.startswith("random:"):
                opts.pop("head")  # the pretrained model uses its own WebVision-1000 (= ImageNet-1k) classifier
            t0 = time.time()
            try:
                res = evaluate(spec, task_spec, roots[DATA_FOR[task_name]], overrides=overrides, device=torch.device(device),
                               seed=seed, workers=workers, cache_dir=cache_dir, results_dir=results_dir, options=opts,
                               # detectron2's console log (model dump, per-iteration lines) stays in its log.txt
                               name=name, progress=progress and task_name != "coco_maskrcnn")
            except BenchError as e:
                report.failures.append(f"{task_spec} / {name}: {e.line()}")
                _say(f"FAILED {task_spec} for {name}: {e.line()}")
                continue
            dt = time.time() - t0
            main = ", ".join(f"{k} {v:.1f}" for k, v in list(res.record["metrics"].items())[:4])
            _say(f"{res.record['protocol']['id']:<40} {name:<16} {main}  ({dt:.0f}s)")
            report.steps.append({"step": f"eval {task_spec}", "checkpoint": name, "seconds": round(dt, 1),
                                 "result": str(res.path)})

    lb = make_leaderboard(results_dir, out_dir=out / "leaderboard", plots=True, published=None)
    report.leaderboard = lb.text
    report.steps.append({"step": "total", "seconds": round(time.time() - t_all, 1)})
    atomic_write_json(out / "demo_report.json", {"steps": report.steps, "failures": report.failures,
                                                 "skipped": report.skipped})
    return report


# Mask R-CNN on 160x120 generated COCO for a few CPU iterations: the pipeline end to end, not a meaningful AP.
DETECTION_OVERRIDES: dict[str, Any] = {
    "max_iter": 6, "steps": [5], "warmup_iters": 5, "ims_per_batch": 2, "base_lr": 0.005, "min_size_train": [96],
    "max_size_train": 200, "min_size_test": 96, "max_size_test": 200, "precise_bn": False, "norm": "BN", "fpn_norm": "",
    "rpn_pre_nms_topk_train": 200, "rpn_post_nms_topk_train": 100, "rpn_pre_nms_topk_test": 200,
    "rpn_post_nms_topk_test": 100, "roi_batch_size_per_image": 64,
}
