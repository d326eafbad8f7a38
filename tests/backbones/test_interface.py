"""The backbone interface every task relies on: one contract for ResNet, ViT and ConvNeXt, timm's numerics for the
timm families, and protocols that refuse the families they are not defined for."""

from __future__ import annotations

import pytest
import timm
import torch

from mopro_bench.backbones import FAMILIES, build_family, parse_any_arch, trunk_family
from mopro_bench.checkpoints import load_checkpoint
from mopro_bench.errors import BenchError

torch.set_num_threads(1)


@pytest.mark.parametrize("spec,family,arch,dim", [
    ("random:resnet50", "resnet", "resnet50", 2048),
    ("random:resnet50x2", "resnet", "resnet50", 4096),
    ("random:vit_small_patch16_224", "vit", "vit_small_patch16_224", 384),
    ("random:convnext_tiny", "convnext", "convnext_tiny", 768),
])
def test_every_family_states_the_interface(spec, family, arch, dim):
    ck = load_checkpoint(spec)
    bb = ck.backbone
    assert (ck.family, ck.arch, bb.feature_dim) == (family, arch, dim)
    assert family in FAMILIES and isinstance(bb.feature, str) and bb.feature
    assert bb.supports_detection == (family == "resnet")
    assert bb.num_parameters == sum(p.numel() for p in bb.parameters())
    rec = ck.record()
    assert rec["family"] == family and rec["feature"] == bb.feature
    assert set(rec["preprocess"]) >= {"mean", "std", "interpolation", "input_size", "crop_pct"}
    # the config rebuilds the same network
    assert trunk_family(bb.state_dict()) == family
    if family != "resnet":
        again = build_family(family, rec["config"])
        assert {k: tuple(v.shape) for k, v in again.state_dict().items()} == \
               {k: tuple(v.shape) for k, v in bb.state_dict().items()}


@pytest.mark.parametrize("name", ["vit_small_patch16_224", "convnext_tiny"])
def test_timm_families_compute_what_timm_computes(name):
    """Same weights in timm's own model: the pooled feature is timm's pre-logits feature (ViT: the final-norm CLS
    token; ConvNeXt: average pool through the head LayerNorm), to float32 rounding."""
    ck = load_checkpoint(f"random:{name}", seed=3)
    ref = timm.create_model(name, pretrained=False, num_classes=0).eval()
    ref.load_state_dict(ck.backbone.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = ck.backbone.eval()(x), ref.forward_head(ref.forward_features(x), pre_logits=True)
    assert ours.shape == theirs.shape == (2, ck.backbone.feature_dim)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    if name.startswith("vit"):  # and it is the CLS token, not the mean of the patch tokens
        with torch.no_grad():
            tokens = ref.forward_features(x)
        torch.testing.assert_close(ours, tokens[:, 0], rtol=0, atol=1e-6)
        assert (ours - tokens[:, 1:].mean(1)).abs().max() > 1e-2


def test_vit_runs_at_other_resolutions_by_resampling_position_embeddings():
    ck = load_checkpoint("random:vit_small_patch16_224")
    with torch.no_grad():
        assert ck.backbone.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 384)


def test_seeded_random_baselines_are_reproducible_and_differ_by_seed():
    a, b, c = (load_checkpoint("random:vit_small_patch16_224", seed=s).backbone.state_dict() for s in (1, 1, 2))
    assert torch.equal(a["blocks.0.attn.qkv.weight"], b["blocks.0.attn.qkv.weight"])
    assert not torch.equal(a["blocks.0.attn.qkv.weight"], c["blocks.0.attn.qkv.weight"])


@pytest.mark.parametrize("spec,fix", [
    ("vit_gigantic_patch16_224", "use one of"),
    ("convnext_enormous", "use one of"),
    ("resnet50x3", "width"),
])
def test_unknown_architectures_are_one_line_errors(spec, fix):
    with pytest.raises(BenchError) as e:
        parse_any_arch(spec)
    assert fix in e.value.line()


def test_random_arch_must_agree():
    with pytest.raises(BenchError, match="disagrees"):
        load_checkpoint("random:vit_small_patch16_224", arch="vit_base_patch16_224")
    assert load_checkpoint("random:convnext_tiny", arch="convnext_tiny").arch == "convnext_tiny"


def test_a_protocol_refuses_a_family_it_is_not_defined_for(cli, synth_root, tmp_path):
    """imagenet_linear@moco (SGD lr 30 on ResNet features) on a ViT: exit 2 before any work, one line that names the
    family and a protocol of the task that accepts it."""
    root = synth_root("imagenet")
    code, out, err = cli("eval", "--ckpt", "random:vit_small_patch16_224", "--task", "imagenet_linear@moco",
                         "--data", str(root), "--results-dir", str(tmp_path / "res"), "--cache-dir", str(tmp_path / "c"),
                         "--no-progress")
    assert code == 2, (out, err)
    line = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and "defined for resnet backbones" in line[0] and "is a vit" in line[0], err
    assert "imagenet_linear@" in line[0].split("use", 1)[-1], line[0]
    assert "Traceback" not in err
    assert not list((tmp_path / "res").rglob("*.json")), "a refused pair wrote a record"


def test_families_are_not_a_setting_and_not_part_of_the_identity():
    from mopro_bench.registry import get_task

    r = get_task("voc_lowshot@mopro")
    assert "families" not in r.protocol.params()
    with pytest.raises(BenchError, match="unknown setting 'families'"):
        get_task("voc_lowshot@mopro", {"families": ["vit"]})


def test_tasks_lists_the_families_of_each_protocol(cli):
    code, out, _ = cli("tasks")
    assert code == 0
    header = out.splitlines()[0]
    assert "families" in header
    row = next(x for x in out.splitlines() if x.startswith("coco_maskrcnn@mopro*"))
    assert " resnet " in row
    code, out, _ = cli("tasks", "--json")
    import json

    rows = {r["id"]: r for r in json.loads(out)}
    assert rows["coco_maskrcnn@mopro"]["families"] == ["resnet"]
    assert all("families" not in r["params"] for r in rows.values())


@pytest.mark.parametrize("name", ["vit_small_patch16_224", "convnext_tiny"])
def test_export_timm_loads_strictly_into_timm_and_resnet_formats_refuse(cli, tmp_path, name):
    out = tmp_path / f"{name}.pth"
    code, text, err = cli("export", "--ckpt", f"random:{name}", "--format", "timm", "--out", str(out))
    assert code == 0, err
    ref = timm.create_model(name, pretrained=False, num_classes=0)
    ref.load_state_dict(torch.load(out, weights_only=True), strict=True)
    ck = load_checkpoint(f"random:{name}")
    torch.testing.assert_close(ref.state_dict()["stem.0.weight" if "convnext" in name else "cls_token"],
                               ck.backbone.state_dict()["stem.0.weight" if "convnext" in name else "cls_token"])
    for fmt in ("torchvision", "detectron2"):
        code, _, err = cli("export", "--ckpt", f"random:{name}", "--format", fmt, "--out", str(tmp_path / "x.pkl"))
        assert code == 2 and "use --format timm" in err and "Traceback" not in err, err
        assert not (tmp_path / "x.pkl").exists()


def test_export_timm_keeps_a_non_standard_head_count_and_the_config_counts_in_the_identity(cli, tmp_path):
    """MoCo v3's ViT-S has 12 heads, which a bare timm file cannot say: export writes timm's config.json beside it, the
    loader reads it back (same function), and the config's hash is part of the checkpoint identity (cache keys and
    records), so editing it can never reuse features of the other network."""
    from mopro_bench.backbones import build_family
    from mopro_bench.checkpoints.export import export

    cfg = dict(parse_any_arch("vit_small_patch16_224")[1], num_heads=12)
    torch.manual_seed(0)
    src = tmp_path / "src"
    src.mkdir()
    torch.save(build_family("vit", cfg).state_dict(), src / "w.pth")
    (src / "config.json").write_text('{"architecture": "vit_small_patch16_224", "model_args": {"num_heads": 12}}')
    ck = load_checkpoint(src / "w.pth")
    assert ck.backbone.config["num_heads"] == 12 and ck.identity.endswith("+config:" + ck.hub_config_sha256)
    assert ck.record()["hub_config"]["sha256"] == ck.hub_config_sha256
    out = tmp_path / "out" / "vit.pth"
    out.parent.mkdir()
    export(ck, "timm", out)
    back = load_checkpoint(out)
    assert back.backbone.config["num_heads"] == 12
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(back.backbone.eval()(x), ck.backbone.eval()(x))
    (out.parent / "config.json").write_text('{"architecture": "vit_small_patch16_224", "model_args": {"num_heads": 6}}')
    six = load_checkpoint(out)
    assert six.backbone.config["num_heads"] == 6 and six.identity != back.identity and six.sha256 == back.sha256
    with pytest.raises(BenchError, match="already exists"):  # never replaces another config.json
        export(ck, "timm", out)
    from mopro_bench.results.identity import identity

    assert identity({"checkpoint": six.record()}, with_seed=False)["checkpoint"] != \
        identity({"checkpoint": back.record()}, with_seed=False)["checkpoint"]

