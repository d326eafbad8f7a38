"""ViT and ConvNeXt checkpoints in their published layouts: every layout loads with 100% coverage to the network a
plain timm model computes with the same weights; heads, ignored groups and the number of attention heads are what
each project's code says; DINO's linear-probe feature against a hand-run forward; DINOv2's position grid."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import timm
import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer

from mopro_bench.checkpoints import load_checkpoint
from mopro_bench.checkpoints.synth import CONVNEXT_LAYOUTS, FAMILY_LAYOUTS, random_family, write_layout
from mopro_bench.errors import BenchError
from tests.test_contracts_formats import MOCO_V3_HEADS, SUFFIX, timm_reference

torch.set_num_threads(1)

# layout -> (format, family, heads, selectable networks, ignored groups (group -> count, or None = any count))
EXPECT = {
    "dino-vit": ("dino", "vit", {"projection"}, ["teacher", "student"], {"student": None}),
    "dino-vit-backbone": ("timm", "vit", set(), [], {}),
    "moco-v3-vit": ("moco", "vit", {"projection", "predictor"}, ["base_encoder", "momentum_encoder"],
                    {"momentum_encoder": None}),
    "mae": ("mae", "vit", set(), [], {"mask_token": 1, "decoder": 31}),
    "dinov2": ("dinov2", "vit", set(), [], {"mask_token": 1}),
    "timm-vit": ("timm", "vit", {"classifier"}, [], {}),
    "timm-train-vit": ("timm", "vit", {"classifier"}, ["state_dict", "state_dict_ema"], {"state_dict_ema": None}),
    "convnext-fb": ("convnext", "convnext", {"classifier"}, [], {}),
    "timm-convnext": ("timm", "convnext", {"classifier"}, [], {}),
    "timm-train-convnext": ("timm", "convnext", {"classifier"}, ["state_dict", "state_dict_ema"],
                            {"state_dict_ema": None}),
}
SECOND = {"dino-vit": "student", "moco-v3-vit": "momentum_encoder", "timm-train-vit": "state_dict_ema",
          "timm-train-convnext": "state_dict_ema"}


def _out(ck, x):
    with torch.no_grad():
        return ck.backbone.eval()(x)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Each layout written from a small random trunk, with a different second network where the layout has one."""
    vit = random_family("vit_small_patch16_224", seed=11, depth=2, img_size=32)
    vit2 = random_family("vit_small_patch16_224", seed=12, depth=2, img_size=32)
    dv2 = random_family("vit_small_patch16_224", seed=13, depth=2, img_size=42, patch_size=14, init_values=1e-5)
    cnx = random_family("convnext_tiny", seed=14, depths=[1, 1, 2, 1])
    cnx2 = random_family("convnext_tiny", seed=15, depths=[1, 1, 2, 1])
    root = tmp_path_factory.mktemp("families")
    fc_vit = {"weight": torch.randn(1000, 384) * 0.02, "bias": torch.randn(1000) * 0.02}
    fc_cnx = {"weight": torch.randn(1000, 768) * 0.02, "bias": torch.randn(1000) * 0.02}
    files, models = {}, {}
    for layout in FAMILY_LAYOUTS:
        convnext = layout in CONVNEXT_LAYOUTS
        first, second = (dv2, None) if layout == "dinov2" else (cnx, cnx2) if convnext else (vit, vit2)
        files[layout] = write_layout(layout, first.state_dict(), root / f"{layout}{SUFFIX.get(layout, '.pth')}",
                                     second=second.state_dict() if second is not None else None,
                                     fc=fc_cnx if convnext else fc_vit)
        models[layout] = (first, second)
    return SimpleNamespace(files=files, models=models, fc_vit=fc_vit, fc_cnx=fc_cnx)


@pytest.mark.parametrize("layout", FAMILY_LAYOUTS)
def test_layout_loads_fully_to_what_timm_computes(layout, small):
    fmt, family, heads, selectable, ignored = EXPECT[layout]
    ck = load_checkpoint(small.files[layout])
    first, second = small.models[layout]
    assert (ck.format, ck.family, ck.meta["selectable"]) == (fmt, family, selectable)
    assert set(ck.heads) == heads
    assert set(ck.coverage["ignored"]) == set(ignored)
    for group, n in ignored.items():
        assert n is None or ck.coverage["ignored"][group] == n, (group, ck.coverage["ignored"])
    assert ck.coverage["percent"] == 100.0 and ck.coverage["loaded"] == ck.coverage["expected"]
    assert not ck.coverage["filled"] and ck.meta["warnings"] == []
    assert ck.record()["config"] == ck.backbone.config and ck.record()["family"] == family
    heads_n = MOCO_V3_HEADS if layout == "moco-v3-vit" else 6
    if family == "vit":
        assert ck.backbone.config["num_heads"] == heads_n == ck.coverage["architecture"]["num_heads"]
        assert ck.arch == ("vit_small2_patch14_42" if layout == "dinov2" else "vit_small2_patch16_32")
        assert ck.preprocess.interpolation == ("bilinear" if layout == "moco-v3-vit" else "bicubic")
    else:
        assert ck.arch == "convnext_d1-1-2-1_w96-192-384-768" and ck.preprocess.interpolation == "bicubic"
    n = first.config.get("img_size", 32)
    x = torch.randn(2, 3, n, n, generator=torch.Generator().manual_seed(1))
    change = {"num_heads": MOCO_V3_HEADS} if layout == "moco-v3-vit" else {}
    torch.testing.assert_close(_out(ck, x), timm_reference(first, x, **change), rtol=0, atol=1e-5)
    if "classifier" in heads:  # the 1000-way head is ImageNet-1k and holds the file's tensors
        fc = small.fc_cnx if family == "convnext" else small.fc_vit
        head = ck.heads["classifier"]
        assert (head.num_classes, head.class_space) == (1000, "imagenet1k")
        assert torch.equal(ck.classifier(("imagenet1k",)).weight, fc["weight"])
    if layout in SECOND:  # the other network is really the other one
        other = load_checkpoint(small.files[layout], select=SECOND[layout])
        assert other.meta["select"] == SECOND[layout] and other.identity != ck.identity
        torch.testing.assert_close(_out(other, x), timm_reference(second, x, **change), rtol=0, atol=1e-5)


def test_moco_v3_vit_small_has_12_heads_and_they_matter(small):
    """moco-v3/vits.py builds vit_small with 12 heads; the same weights with DeiT's 6 heads are another function."""
    ck = load_checkpoint(small.files["moco-v3-vit"])
    first, _ = small.models["moco-v3-vit"]
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    out = _out(ck, x)
    assert "12 heads" in ck.coverage["architecture"]["num_heads_source"]
    torch.testing.assert_close(out, timm_reference(first, x, num_heads=12), rtol=0, atol=1e-5)
    assert (out - timm_reference(first, x, num_heads=6)).abs().max() > 1e-2
    # DINO's vit_small keeps 6 (dino/vision_transformer.py), from the same kind of tensors
    assert load_checkpoint(small.files["dino-vit"]).backbone.config["num_heads"] == 6


def test_real_size_vit_s16_and_convnext_t_equal_timm(tmp_path):
    """ViT-S/16 (DINO training checkpoint, arch vit_small) and ConvNeXt-T (facebookresearch layout with its 1000-way
    head) at 224 px against timm.create_model with the same weights: pre-logits features and the classifier's logits."""
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    vit = random_family("vit_small_patch16_224", seed=21)
    ck = load_checkpoint(write_layout("dino-vit", vit.state_dict(), tmp_path / "dino_vits16.pth"))
    assert (ck.format, ck.arch, ck.backbone.config["num_heads"], ck.backbone.config["depth"]) == \
        ("dino", "vit_small_patch16_224", 6, 12)
    ref = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0).eval()
    ref.load_state_dict(vit.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(_out(ck, x), ref.forward_head(ref.forward_features(x), pre_logits=True),
                                   rtol=0, atol=1e-5)
    # the same tensors as MoCo v3's vit_small (arch recorded in the file): 12 heads, from moco-v3/vits.py
    ck = load_checkpoint(write_layout("moco-v3-vit", vit.state_dict(), tmp_path / "vit-s-300ep.pth.tar", arch="vit_small"))
    assert (ck.backbone.config["num_heads"], ck.backbone.config["depth"]) == (12, 12)
    assert ck.coverage["architecture"]["num_heads_source"] == "moco-v3/vits.py: vit_small has 12 heads"

    cnx = random_family("convnext_tiny", seed=22)
    fc = {"weight": torch.randn(1000, 768) * 0.05, "bias": torch.randn(1000) * 0.05}
    ck = load_checkpoint(write_layout("convnext-fb", cnx.state_dict(), tmp_path / "convnext_tiny_1k_224.pth", fc=fc))
    assert (ck.format, ck.arch) == ("convnext", "convnext_tiny")
    ref = timm.create_model("convnext_tiny", pretrained=False, num_classes=1000).eval()
    ref.load_state_dict({**cnx.state_dict(), "head.fc.weight": fc["weight"], "head.fc.bias": fc["bias"]}, strict=True)
    with torch.no_grad():
        feat = _out(ck, x)
        torch.testing.assert_close(feat, ref.forward_head(ref.forward_features(x), pre_logits=True), rtol=0, atol=1e-5)
        torch.testing.assert_close(ck.classifier()(feat), ref(x), rtol=0, atol=1e-4)


def test_dinov2_release_native_grid_and_224(tmp_path):
    """A DINOv2 release has a 37x37 position grid (518 px at patch 14): at 518 px the output is a plain timm ViT's; a
    224 px input resamples the grid to 16x16 (timm: bicubic, antialiased) -- the same as a plain timm ViT built at 224
    whose pos_embed was resampled that way once."""
    dv2 = random_family("vit_small_patch14_dinov2", seed=31, depth=1)
    ck = load_checkpoint(write_layout("dinov2", dv2.state_dict(), tmp_path / "dinov2_vits14_pretrain.pth"))
    assert ck.format == "dinov2" and ck.backbone.config["img_size"] == 518 and ck.coverage["ignored"] == {"mask_token": 1}
    assert ck.meta["native_grid"] == "37x37 patches of 14 px (518 px)"
    assert tuple(ck.backbone.state_dict()["pos_embed"].shape) == (1, 1 + 37 * 37, 384)
    big = torch.randn(1, 3, 518, 518, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(_out(ck, big), timm_reference(dv2, big), rtol=0, atol=1e-5)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    out = _out(ck, x)
    assert out.shape == (2, 384) and bool(torch.isfinite(out).all())
    ref = VisionTransformer(img_size=224, patch_size=14, embed_dim=384, depth=1, num_heads=6, init_values=1e-5,
                            num_classes=0).eval()
    sd = dict(dv2.state_dict())
    sd["pos_embed"] = resample_abs_pos_embed(sd["pos_embed"], new_size=(16, 16), num_prefix_tokens=1)
    ref.load_state_dict(sd, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(out, ref.forward_head(ref.forward_features(x), pre_logits=True), rtol=0, atol=1e-5)


def test_last_blocks_feature_against_a_hand_run_forward(small):
    """DINO's linear-probe feature (eval_linear.py): CLS tokens of the last n blocks through the final norm,
    concatenated; with avgpool_patchtokens, one CLS interleaved element-wise with the mean patch token."""
    ck = load_checkpoint(small.files["dino-vit-backbone"])
    bb = ck.backbone
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        p = bb.patch_embed.proj
        tokens = torch.nn.functional.conv2d(x, p.weight, p.bias, stride=16).flatten(2).transpose(1, 2)  # [2, 4, 384]
        h = torch.cat([bb.cls_token.expand(2, -1, -1), tokens], dim=1) + bb.pos_embed
        per_block = []
        for blk in bb.blocks:
            h = blk(h)
            per_block.append(torch.nn.functional.layer_norm(h, (384,), bb.norm.weight, bb.norm.bias, eps=1e-6))
        two = torch.cat([per_block[0][:, 0], per_block[1][:, 0]], dim=-1)
        torch.testing.assert_close(bb.last_blocks_feature(x, 2), two, rtol=0, atol=1e-5)
        last = per_block[-1]
        cls, mean = last[:, 0], last[:, 1:].mean(1)
        inter = torch.stack([cls, mean], dim=-1).reshape(2, -1)  # c0, m0, c1, m1, ...
        got = bb.last_blocks_feature(x, 1, avgpool_patchtokens=True)
        torch.testing.assert_close(got, inter, rtol=0, atol=1e-5)
        assert torch.equal(got[:, 0::2], bb.last_blocks_feature(x, 1)) and got.shape == (2, 768)
        torch.testing.assert_close(bb.last_blocks_feature(x, 1), bb(x), rtol=0, atol=1e-6)  # n=1: the pooled feature


def test_timm_convnext_atto_uses_1x1_conv_mlps(tmp_path):
    """timm's atto..nano ConvNeXts have 1x1-convolution MLPs ([out, in, 1, 1] weights): read from the shapes."""
    ref = timm.create_model("convnext_atto", pretrained=False, num_classes=0).eval()
    path = tmp_path / "convnext_atto.pth"
    torch.save(ref.state_dict(), path)
    ck = load_checkpoint(path)
    assert (ck.format, ck.arch, ck.backbone.config["conv_mlp"]) == ("timm", "convnext_atto", True)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        torch.testing.assert_close(_out(ck, x), ref.forward_head(ref.forward_features(x), pre_logits=True),
                                   rtol=0, atol=1e-5)
    assert load_checkpoint("random:convnext_atto").backbone.config["conv_mlp"] is True


def test_hub_config_beside_a_timm_file_sets_the_preprocessing(small, tmp_path):
    """A hub snapshot (model.safetensors + timm's config.json): mean/std/interpolation/crop come from its pretrained_cfg
    and its sha256 is recorded; without one, ImageNet mean/std and bicubic are assumed and said so."""
    plain = load_checkpoint(small.files["timm-convnext"])
    assert plain.preprocess.mean == (0.485, 0.456, 0.406) and "assumed" in plain.meta["preprocess_source"]
    snap = tmp_path / "snapshot"
    snap.mkdir()
    (snap / "model.safetensors").write_bytes(small.files["timm-convnext"].read_bytes())
    cfg = {"architecture": "convnext_tiny", "num_classes": 1000,
           "pretrained_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bilinear",
                              "crop_pct": 0.95, "input_size": [3, 288, 288]}}
    (snap / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BenchError, match="metadata says depths \\[3, 3, 9, 3\\]"):
        load_checkpoint(snap / "model.safetensors")  # the config's convnext_tiny is not these 1-1-2-1 tensors
    cfg["architecture"] = "convnext_d1-1-2-1_w96-192-384-768"
    (snap / "config.json").write_text(json.dumps(cfg))
    ck = load_checkpoint(snap / "model.safetensors")
    assert ck.sha256 == plain.sha256
    assert (ck.preprocess.mean, ck.preprocess.std, ck.preprocess.interpolation, ck.preprocess.crop_pct,
            ck.preprocess.input_size) == ((0.5,) * 3, (0.5,) * 3, "bilinear", 0.95, 288)
    assert ck.meta["hub_config"]["sha256"] and ck.meta["preprocess_source"].startswith("config.json")
    (snap / "config.json").write_text(json.dumps({"model_type": "something else"}))  # another tool's config: unused
    assert load_checkpoint(snap / "model.safetensors").preprocess.mean == (0.485, 0.456, 0.406)


def test_convnext_v2_in_facebooks_layout_maps_grn(tmp_path):
    """ConvNeXt-V2 (fine-tuned, facebookresearch/ConvNeXt-V2 names): GRN's [1, 1, 1, C] gamma / beta become timm's
    mlp.grn weight / bias [C]; no layer scale."""
    v2 = random_family("convnextv2_tiny", seed=41, depths=[1, 1, 1, 1])
    path = write_layout("convnext-fb", v2.state_dict(), tmp_path / "convnextv2.pt")
    raw = torch.load(path, weights_only=True)["model"]
    assert tuple(raw["stages.0.0.grn.gamma"].shape) == (1, 1, 1, 384) and "stages.0.0.gamma" not in raw
    ck = load_checkpoint(path)
    assert ck.format == "convnext" and ck.backbone.config["use_grn"] and ck.backbone.config["ls_init_value"] is None
    assert ck.arch.startswith("convnextv2_")
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(_out(ck, x), timm_reference(v2, x), rtol=0, atol=1e-5)


def test_hub_config_model_args_carry_the_number_of_heads(small, tmp_path):
    """timm's config.json may say what no shape shows: model_args.num_heads (e.g. a MoCo v3 ViT-S exported)."""
    (tmp_path / "pytorch_model.bin").write_bytes(small.files["timm-vit"].read_bytes())
    assert load_checkpoint(tmp_path / "pytorch_model.bin").backbone.config["num_heads"] == 6
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "vit_small2_patch16_32",
                                                      "model_args": {"num_heads": 12}}))
    ck = load_checkpoint(tmp_path / "pytorch_model.bin")
    assert ck.backbone.config["num_heads"] == 12
    assert ck.coverage["architecture"]["num_heads_source"] == "config.json model_args.num_heads"
    assert ck.preprocess.mean == (0.485, 0.456, 0.406)  # no pretrained_cfg: the assumption stays


def test_ibot_training_checkpoint_reads_as_dino_with_masked_embed_ignored(small, tmp_path):
    """iBOT saves DINO's layout plus the backbone's masked_embed (its MIM mask token) and ibot_loss."""
    obj = torch.load(small.files["dino-vit"], weights_only=False)
    obj["teacher"]["backbone.masked_embed"] = torch.zeros(1, 384)
    obj["ibot_loss"] = {"center": torch.zeros(1, 256)}
    path = tmp_path / "ibot.pth"
    torch.save(obj, path)
    ck = load_checkpoint(path)
    assert (ck.format, ck.meta["source"], ck.coverage["ignored"]["masked_embed"]) == ("dino", "iBOT", 1)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(_out(ck, x), timm_reference(small.models["dino-vit"][0], x), rtol=0, atol=1e-5)


def test_convnext_training_checkpoint_selects_model_or_model_ema(small, tmp_path):
    """facebookresearch/ConvNeXt's main.py saves {model, model_ema, optimizer, epoch, args}: model by default."""
    model = torch.load(small.files["convnext-fb"], weights_only=True)["model"]
    ema = {k: v * 0.5 if k.endswith("dwconv.weight") else v for k, v in model.items()}
    path = tmp_path / "checkpoint-best.pth"
    torch.save({"model": model, "model_ema": ema, "epoch": 299, "optimizer": {"state": {}}}, path)
    ck = load_checkpoint(path)
    assert (ck.format, ck.meta["selectable"], ck.meta["select"]) == ("convnext", ["model", "model_ema"], "model")
    assert ck.coverage["ignored"] == {"model_ema": len(ema)}
    other = load_checkpoint(f"{path}#model_ema")
    assert other.name == "checkpoint-best.pth#model_ema"
    assert torch.equal(other.backbone.state_dict()["stages.1.blocks.0.conv_dw.weight"], ema["stages.1.0.dwconv.weight"])
    assert torch.equal(ck.backbone.state_dict()["stages.1.blocks.0.conv_dw.weight"], model["stages.1.0.dwconv.weight"])
