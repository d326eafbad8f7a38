"""coco_maskrcnn is defined for ResNet backbones only: a ViT or ConvNeXt checkpoint stops with one line (exit 2) before
any detectron2 work, and its backbone cannot be exported as a detectron2 file. No detectron2 needed."""

from __future__ import annotations

import pytest

from mopro_bench.errors import BenchError
from mopro_bench.registry import get_task
from mopro_bench.tasks.detection.task import CocoMaskRCNN

PROTOCOLS = ("coco_maskrcnn@mopro", "coco_maskrcnn@mopro-short", "coco_maskrcnn@moco_c4")


def test_every_detection_protocol_is_resnet_only():
    task = get_task("coco_maskrcnn").task
    assert set(task.protocols) == {p.split("@")[1] for p in PROTOCOLS}
    for pid in PROTOCOLS:
        assert get_task(pid).protocol.families == ("resnet",), pid


@pytest.fixture
def no_run(monkeypatch):
    """Replace the task's run: reaching it means the family check let the checkpoint through."""

    def run(self, model, data_root, protocol, ctx):
        raise BenchError(f"reached coco_maskrcnn run with a {model.family}", "(test sentinel)")

    monkeypatch.setattr(CocoMaskRCNN, "run", run)


@pytest.mark.parametrize("ckpt,family,arch,task", [
    ("random:vit_small_patch16_224", "vit", "vit_small_patch16_224", "coco_maskrcnn"),
    ("random:convnext_tiny", "convnext", "convnext_tiny", "coco_maskrcnn@moco_c4"),
    ("random:vit_small_patch16_224", "vit", "vit_small_patch16_224", "coco_maskrcnn@mopro-short"),
])
def test_non_resnet_is_refused_before_detectron2(cli, no_run, tmp_path, ckpt, family, arch, task):
    (tmp_path / "coco").mkdir()  # an empty root: the refusal comes before the data are read
    code, out, err = cli("eval", "--ckpt", ckpt, "--task", task, "--data", tmp_path / "coco", "--device", "cpu",
                         "--results-dir", tmp_path / "res", "--work-dir", tmp_path / "work", "--cache-dir", tmp_path / "cache",
                         "--no-progress")
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    pid = task if "@" in task else f"{task}@mopro"
    assert lines == [f"error: {pid} is defined for resnet backbones; {ckpt} is a {family} ({arch}) -- fix: coco_maskrcnn "
                     f"has no protocol for {family} backbones (`mopro-bench tasks` lists the families each accepts)"], err
    assert "reached coco_maskrcnn run" not in err + out and "Traceback" not in err
    assert not (tmp_path / "res").exists() or not any((tmp_path / "res").rglob("*.json"))
    assert not (tmp_path / "work").exists()


def test_a_resnet_passes_the_family_check(cli, no_run, tmp_path):
    (tmp_path / "coco").mkdir()
    code, _, err = cli("eval", "--ckpt", "random:resnet18", "--task", "coco_maskrcnn", "--data", tmp_path / "coco",
                       "--device", "cpu", "--results-dir", tmp_path / "res", "--cache-dir", tmp_path / "cache", "--no-progress")
    assert code == 2 and "reached coco_maskrcnn run with a resnet" in err, err


@pytest.mark.parametrize("fmt", ["detectron2", "torchvision"])
def test_non_resnet_backbone_is_not_exported_for_detectron2(cli, tmp_path, fmt):
    out_file = tmp_path / "backbone.pkl"
    code, out, err = cli("export", "--ckpt", "random:vit_small_patch16_224", "--format", fmt, "--out", out_file)
    assert code == 2 and not out_file.exists()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"--format {fmt} holds ResNets" in lines[0] and "is a vit" in lines[0], err
    assert "fix: use --format timm" in lines[0]
