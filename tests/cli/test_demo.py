"""The demo's pieces: its plan covers every task with valid overrides, and the glue runs end to end (shortened)."""

from __future__ import annotations

import pytest

from mopro_bench import demo
from mopro_bench.registry import get_task, registry


def test_plan_covers_every_registered_task_with_valid_overrides():
    planned = {spec.split("@")[0] for spec, _, _ in demo.EVAL_PLAN} | {"coco_maskrcnn"}
    assert planned == set(registry()), "a task is missing from the demo plan (or the plan names an unknown one)"
    for spec, overrides, options in demo.EVAL_PLAN:
        resolved = get_task(spec, overrides)  # raises on an unknown or ill-typed constant
        assert resolved.protocol_id.startswith(spec.split("@")[0]) and "+" in resolved.protocol_id
        assert set(options) <= set(resolved.task.options)
        assert demo.DATA_FOR[resolved.task.name] == resolved.task.data_kind
    for spec, overrides, options in demo.VIT_PLAN:  # the ViT baseline's plan: valid, and every protocol takes a ViT
        resolved = get_task(spec, overrides)
        assert "vit" in resolved.protocol.families and "+" in resolved.protocol_id and not options
        assert demo.DATA_FOR[resolved.task.name] == resolved.task.data_kind
    det = get_task("coco_maskrcnn@mopro-short", demo.DETECTION_OVERRIDES)
    assert det.protocol.max_iter == demo.DETECTION_OVERRIDES["max_iter"]


def test_pretrain_recipe_is_a_valid_config():
    from mopro_bench.pretrain.config import make_config

    cfg = make_config(demo.pretrain_overrides(12))
    assert cfg.model.arch == "resnet18" and cfg.aug.image_size == demo.IMG and cfg.model.num_class == 1000
    assert cfg.mopro.queue_size % cfg.data.batch_size == 0 and 0 < cfg.mopro.start_clean_epoch < 12


@pytest.mark.slow
def test_shortened_demo_runs_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "DEMO_KINDS", ("webvision", "imagenet"))
    monkeypatch.setattr(demo, "EVAL_PLAN", tuple(p for p in demo.EVAL_PLAN if p[0] in ("imagenet_linear@fast", "imagenet_val")))
    monkeypatch.setattr(demo, "VIT_PLAN", tuple(p for p in demo.VIT_PLAN if p[0] == "imagenet_linear@fast"))
    monkeypatch.setattr(demo, "TINY_EXTRA", {"webvision": {"train_per_class": 8}})
    report = demo.run_demo(tmp_path / "out", epochs=1, detection="off", progress=False)
    assert not report.failures, report.failures
    evals = [s for s in report.steps if s["step"].startswith("eval")]
    assert len(evals) == 5  # 2 tasks x (pretrained, random baseline) + the ViT baseline's linear probe
    assert "imagenet_val@mopro+" in report.leaderboard and "mopro-demo" in report.leaderboard
    assert "random:resnet18" in report.leaderboard and demo.VIT_BASELINE in report.leaderboard
    assert (tmp_path / "out" / "leaderboard" / "leaderboard.md").is_file()
    assert (tmp_path / "out" / "pseudo_label.json").is_file()
    assert any("coco_maskrcnn" in s for s in report.skipped)
