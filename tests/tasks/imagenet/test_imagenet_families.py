"""ImageNet tasks for ViT and ConvNeXt backbones: the ViT linear probes (@dino, @dino-base, @mocov3), @fast, the iBOT
1% / 10% recipe, imagenet_val, the head-file feature check, and refusals of ResNet-only protocols (CPU, 32-px crops).

The reference computations here are written out plainly (blocks run by hand, timm's own modules, a direct simulation
of DeiT's repeated-augmentation sampler) and compared with what the tasks compute."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from mopro_bench.backbones.vit import VisionTransformerBackbone
from mopro_bench.checkpoints import Head, load_checkpoint
from mopro_bench.data.common import ImageList, eval_transform
from mopro_bench.data.imagenet import ImageNetFolder
from mopro_bench.errors import BenchError
from mopro_bench.evaluate import evaluate
from mopro_bench.registry import get_task

TINY = {"image_size": 32, "resize": 36}
LINEAR_TINY = {**TINY, "batch_size": 32, "epochs": 1}
# the iBOT recipe at test scale: 2 emulated processes of 4 images, the sampler's rounding at 8 instead of 256
IBOT_TINY = {**TINY, "batch_size": 8, "epochs": 2, "ra_ranks": 2, "ra_round": 8}
SMALL_VIT = {"embed_dim": 192, "depth": 4, "num_heads": 3, "patch_size": 16, "img_size": 32, "mlp_ratio": 4.0,
             "qkv_bias": True, "init_values": None, "reg_tokens": 0}


@pytest.fixture(scope="module")
def imagenet(synth_root):
    return synth_root("imagenet")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("imagenet_families_cache")


def small_vit(seed: int = 0, name: str = "small-vit"):
    """A 4-block ViT-Ti whose native grid is 2x2 (32-px input, no position-embedding resampling), as a checkpoint."""
    torch.manual_seed(seed)
    bb = VisionTransformerBackbone(SMALL_VIT).eval()
    ck = load_checkpoint("random:vit_tiny_patch16_224")
    ck.backbone, ck.arch = bb, bb.arch
    ck.path = ck.name = f"random:{name}-{seed}"  # its own feature-cache identity
    return ck


def run(ck, task, root, tmp_path, cache, overrides=None, **options):
    return evaluate(ck, task, root, overrides=overrides or {}, device="cpu", workers=0, cache_dir=cache,
                    results_dir=tmp_path / "results", options=options, progress=False).record


def cli_eval(cli, cache, tmp_path, ckpt, task, root, *extra):
    code, out, err = cli("--device", "cpu", "--workers", "0", "--cache-dir", cache, "eval", "--ckpt", ckpt, "--task", task,
                         "--data", root, "--results-dir", tmp_path, "--no-progress", *extra)
    return code, [ln for ln in err.splitlines() if ln and not ln.startswith("warning:")]


def reference_last_blocks(bb: VisionTransformerBackbone, x: torch.Tensor, n: int, avgpool: bool = False) -> torch.Tensor:
    """DINO's eval_linear.py feature, by hand: patchify with the conv, prepend the class token, add the position
    embedding (native grid), run every block, LayerNorm each of the last ``n`` outputs, take the class tokens."""
    with torch.no_grad():
        t = nn.functional.conv2d(x, bb.patch_embed.proj.weight, bb.patch_embed.proj.bias, stride=16)
        t = t.flatten(2).transpose(1, 2)
        t = torch.cat([bb.cls_token.expand(x.shape[0], -1, -1), t], dim=1) + bb.pos_embed
        outs = []
        for blk in bb.blocks:
            t = blk(t)
            outs.append(nn.functional.layer_norm(t, (t.shape[-1],), bb.norm.weight, bb.norm.bias, bb.norm.eps))
        cls = torch.cat([o[:, 0] for o in outs[-n:]], dim=-1)
        if not avgpool:
            return cls
        mean = outs[-1][:, 1:].mean(dim=1)
        return torch.stack([cls, mean], dim=-1).reshape(x.shape[0], -1)


# --------------------------------------------------------------------------------------------- linear-probe features
def test_probe_features_equal_the_slow_reference_and_timm():
    from timm.models.vision_transformer import VisionTransformer

    from mopro_bench.tasks.imagenet.task import IMAGENET_LINEAR
    from mopro_bench.tasks.imagenet.vit import probe_feature, probe_feature_id

    bb = small_vit().backbone
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    dino, base, mocov3 = (IMAGENET_LINEAR.protocols[k] for k in ("dino", "dino-base", "mocov3"))
    with torch.no_grad():
        f = probe_feature(bb, dino)(x)
        assert f.shape == (3, 4 * 192) and probe_feature(bb, dino).feature_dim == 4 * 192
        torch.testing.assert_close(f, reference_last_blocks(bb, x, 4), rtol=0, atol=1e-5)
        g = probe_feature(bb, base)(x)
        assert g.shape == (3, 2 * 192)
        torch.testing.assert_close(g, reference_last_blocks(bb, x, 1, avgpool=True), rtol=0, atol=1e-5)
        # MoCo v3 reads the backbone's own forward: timm's plain ViT on the same weights, CLS token after the final norm
        plain = VisionTransformer(img_size=32, patch_size=16, embed_dim=192, depth=4, num_heads=3, num_classes=0,
                                  global_pool="token").eval()
        plain.load_state_dict(bb.state_dict())
        h = probe_feature(bb, mocov3)(x)
        torch.testing.assert_close(h, plain.forward_head(plain.forward_features(x), pre_logits=True), rtol=0, atol=1e-6)
        torch.testing.assert_close(h, reference_last_blocks(bb, x, 1), rtol=0, atol=1e-5)
    assert (probe_feature_id(dino), probe_feature_id(base), probe_feature_id(mocov3)) == (
        "dino-last4-cls", "dino-last1-cls-avgpool", "pooled")


def test_dino_probe_end_to_end_trains_on_the_last_four_cls_tokens(imagenet, tmp_path, cache):
    ck = small_vit()
    head = tmp_path / "dino_head.pt"
    rec = run(ck, "imagenet_linear@dino", imagenet, tmp_path, cache, LINEAR_TINY, save_head=str(head))
    assert rec["protocol"]["id"].startswith("imagenet_linear@dino+") and rec["checkpoint"]["family"] == "vit"
    assert rec["protocol"]["families"] == ["vit"]
    assert rec["details"]["feature"]["id"] == "dino-last4-cls" and rec["details"]["feature"]["dim"] == 768
    assert all(math.isfinite(v) for v in rec["metrics"].values())
    obj = torch.load(head, weights_only=True)
    assert obj["feature"] == "dino-last4-cls" and obj["weight"].shape == (1000, 768) and obj["feature_dim"] == 768
    # the saved head on the reference feature of the val images (Resize 36 bicubic + CenterCrop 32) scores what the
    # run recorded: the probe was trained and evaluated on exactly that feature
    val = ImageNetFolder(imagenet).samples("val")
    ds = ImageList([p for p, _ in val], [y for _, y in val], eval_transform(32, 36, ck.preprocess, interpolation="bicubic"))
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    logits = reference_last_blocks(ck.backbone, x, 4) @ obj["weight"].T + obj["bias"]
    top1 = 100.0 * float((logits.argmax(1) == torch.tensor([y for _, y in val])).float().mean())
    assert top1 == pytest.approx(rec["metrics"]["last_top1"], abs=100 / len(val) + 1e-9)
    assert rec["details"]["history"][0]["lr"]["head"] == pytest.approx(0.004)  # 0.001 x 1024 / 256, epoch 0 of cosine


def test_mocov3_and_dino_base_probes_run_with_a_cosine_schedule(imagenet, tmp_path, cache):
    ck = small_vit()
    head = tmp_path / "mocov3_head.pt"
    rec = run(ck, "imagenet_linear@mocov3", imagenet, tmp_path, cache, {**LINEAR_TINY, "epochs": 3}, save_head=str(head))
    lrs = [h["lr"]["head"] for h in rec["details"]["history"]]
    assert lrs == pytest.approx([12 * 0.5 * (1 + math.cos(math.pi * e / 3)) for e in range(3)])  # main_lincls.py
    assert rec["details"]["evaluated_epochs"] == [1, 2, 3]
    assert rec["metrics"]["top1"] == max(h["top1"] for h in rec["details"]["history"])  # best epoch, as MoCo v3
    p = rec["protocol"]["params"]
    assert (p["feature"], p["eval_interpolation"], p["batch_size"], p["epochs"], p["lr"]) == ("cls", "bilinear", 32, 3, 12.0)
    assert torch.load(head, weights_only=True)["feature"] == "pooled"
    rec = run(ck, "imagenet_linear@dino-base", imagenet, tmp_path, cache, LINEAR_TINY)
    assert rec["details"]["feature"] == {"id": "dino-last1-cls-avgpool", "dim": 384,
                                         "text": rec["details"]["feature"]["text"]}
    assert all(math.isfinite(v) for v in rec["metrics"].values())
    # the published constants (dino eval_linear.py defaults x README's 8 GPUs; moco-v3 CONFIG.md --lr=3, batch 1024)
    d, m = get_task("imagenet_linear@dino").protocol, get_task("imagenet_linear@mocov3").protocol
    assert (d.lr, d.batch_size, d.epochs, d.n_last_blocks, d.avgpool_patchtokens, d.head_init_std, d.weight_decay,
            d.momentum, d.eval_interpolation, d.report) == (0.004, 1024, 100, 4, False, 0.01, 0.0, 0.9, "bicubic",
                                                            "best-epoch")
    assert (m.lr, m.batch_size, m.epochs, m.feature, m.weight_decay, m.eval_interpolation) == (12.0, 1024, 90, "cls", 0.0,
                                                                                               "bilinear")


# ------------------------------------------------------------------------------------------------------ head files
def test_a_dino_feature_head_is_refused_where_the_pooled_feature_is_scored(imagenet, tmp_path, cache, cli):
    from mopro_bench.checkpoints.heads import load_head, save_head

    ck = small_vit()
    dino_head = save_head(tmp_path / "dino.pt", torch.zeros(1000, 768), torch.zeros(1000), ck=ck, class_space="imagenet1k",
                          protocol="imagenet_linear@dino", feature="dino-last4-cls")
    with pytest.raises(BenchError) as e:
        load_head(dino_head, ck)
    msg = str(e.value)
    assert "dino-last4-cls" in msg and "768-d" in msg and "192-d" in msg and "imagenet_linear@fast" in msg
    assert "\n" not in msg
    # a head that reads the pooled feature passes; an old file without the key reads the pooled feature
    pooled = save_head(tmp_path / "pooled.pt", torch.zeros(1000, 192), torch.zeros(1000), ck=ck, class_space="imagenet1k",
                       protocol="imagenet_linear@mocov3")
    assert load_head(pooled, ck).num_classes == 1000
    old = torch.load(pooled, weights_only=True)
    del old["feature"], old["feature_dim"]
    torch.save(old, tmp_path / "old.pt")
    assert load_head(tmp_path / "old.pt", ck).state_dict["weight"].shape == (1000, 192)
    # through the CLI: imagenet_val --head with the DINO head is one line, exit 2
    ckpt = "random:vit_tiny_patch16_224"
    real = load_checkpoint(ckpt)
    save_head(tmp_path / "dino_real.pt", torch.zeros(1000, 768), torch.zeros(1000), ck=real, class_space="imagenet1k",
              protocol="imagenet_linear@dino", feature="dino-last4-cls")
    code, lines = cli_eval(cli, cache, tmp_path, ckpt, "imagenet_val", imagenet, "--set", "image_size=32", "--set",
                           "resize=36", "--head", tmp_path / "dino_real.pt")
    assert code == 2 and len(lines) == 1 and "dino-last4-cls" in lines[0] and "fix:" in lines[0]


# ------------------------------------------------------------------------------------------------ @fast and _val
def test_fast_probe_and_imagenet_val_for_vit_and_convnext(imagenet, tmp_path, cache):
    for ck in (small_vit(), load_checkpoint("random:convnext_atto")):
        head = tmp_path / f"{ck.family}_fast.pt"
        rec = run(ck, "imagenet_linear@fast", imagenet, tmp_path, cache, {**TINY, "epochs": 10, "batch_size": 64,
                                                                         "lr": 1e-2}, save_head=str(head))
        dim = ck.backbone.feature_dim
        assert rec["checkpoint"]["family"] == ck.family and rec["details"]["feature_dim"] == dim
        assert rec["protocol"]["id"].startswith("imagenet_linear@fast+")
        assert all(math.isfinite(v) for v in rec["metrics"].values())
        obj = torch.load(head, weights_only=True)
        assert obj["feature"] == "pooled" and obj["weight"].shape == (1000, dim)
        # the same head as the checkpoint's own 1000-way classifier: imagenet_val scores it on the pooled feature
        ck.heads["classifier"] = Head("classifier", {"weight": obj["weight"], "bias": obj["bias"]}, num_classes=1000,
                                      class_space="imagenet1k")
        val = run(ck, "imagenet_val", imagenet, tmp_path, cache, TINY)
        assert val["checkpoint"]["family"] == ck.family and val["protocol"]["families"] == ["resnet", "vit", "convnext"]
        assert val["metrics"]["top1"] == pytest.approx(rec["metrics"]["top1"], abs=100 / 32 + 1e-6)  # one image at most
        # a classifier for another feature size is refused against the backbone's feature_dim
        ck.heads["classifier"] = Head("classifier", {"weight": torch.zeros(1000, dim + 1)}, num_classes=1000,
                                      class_space="imagenet1k")
        with pytest.raises(BenchError, match=f"expects {dim + 1}-d features but the backbone gives {dim}-d"):
            run(ck, "imagenet_val", imagenet, tmp_path, cache, TINY)


# ------------------------------------------------------------------------------------------------- families refused
@pytest.mark.parametrize("task,accepting", [
    ("imagenet_linear@moco", "imagenet_linear@fast or imagenet_linear@dino or imagenet_linear@dino-base or "
                             "imagenet_linear@mocov3"),
    ("imagenet_1pct@mopro", "imagenet_1pct@ibot"),
    ("imagenet_10pct@swav", "imagenet_10pct@ibot"),
])
def test_vit_on_a_resnet_protocol_is_refused_naming_the_accepting_ones(imagenet, tmp_path, cache, cli, task, accepting):
    code, lines = cli_eval(cli, cache, tmp_path, "random:vit_tiny_patch16_224", task, imagenet)
    assert code == 2 and len(lines) == 1
    assert f"{task} is defined for resnet backbones" in lines[0] and f"use {accepting}" in lines[0]


def test_convnext_has_no_semisupervised_protocol(imagenet, tmp_path, cache, cli):
    code, lines = cli_eval(cli, cache, tmp_path, "random:convnext_atto", "imagenet_1pct@ibot", imagenet)
    assert code == 2 and len(lines) == 1 and "imagenet_1pct has no protocol for convnext backbones" in lines[0]


# ------------------------------------------------------------------------------------------------- iBOT 1% / 10%
@pytest.mark.parametrize("task,lst,n", [("imagenet_1pct@ibot", "1percent.txt", 8), ("imagenet_10pct@ibot", "10percent.txt", 16)])
def test_ibot_recipe_end_to_end(imagenet, tmp_path, cache, task, lst, n):
    from pathlib import Path

    ck = small_vit()
    before = {k: v.clone() for k, v in ck.backbone.state_dict().items()}
    rec = run(ck, task, imagenet, tmp_path, cache, IBOT_TINY, subset_file=str(Path(f"{imagenet}.subsets") / lst))
    assert rec["protocol"]["id"].startswith(f"{task}+") and rec["checkpoint"]["family"] == "vit"
    assert all(math.isfinite(v) for v in rec["metrics"].values())
    assert rec["data"]["subset_size"] == n and rec["data"]["subset_source"] == "file"
    d = rec["details"]
    # repeated augmentation x3 over 2 emulated processes, each keeping (n // 8 * 8) / 2 items in full batches of 4
    steps = ((n // 8 * 8) // 2) // 4
    assert d["recipe"]["steps_per_epoch"] == steps and [h["samples"] for h in d["history"]] == [8 * steps] * 2
    assert d["recipe"]["drop_path_rates"] == pytest.approx([0, 0.1 / 3, 0.2 / 3, 0.1], abs=1e-6)
    assert d["classifier_init"]["rule_applied"] == "fresh" and "no projection head" in d["classifier_init"]["text"]
    assert d["history"][0]["lr"]["backbone"] == d["history"][1]["lr"]["backbone"] == pytest.approx(1e-6)  # warm-up, lag 1
    assert d["history"][0]["lr"]["backbone-no-wd"] == pytest.approx(1e-6)
    for k, v in ck.backbone.state_dict().items():  # the run finetuned its own copy
        assert torch.equal(v, before[k]), k
    p = get_task(task).protocol
    assert (p.lr_backbone, p.weight_decay, p.batch_size, p.epochs, p.warmup_epochs, p.drop_path, p.mixup, p.cutmix,
            p.label_smoothing, p.reprob, p.repeated_aug, p.auto_augment, p.families) == (
        1e-5, 0.05, 1024, 1000, 5, 0.1, 0.8, 1.0, 0.1, 0.25, 3, "rand-m9-mstd0.5-inc1", ("vit",))


def test_ibot_head_takes_the_projection_heads_first_layer():
    from mopro_bench.tasks.imagenet.task import IMAGENET_1PCT
    from mopro_bench.tasks.imagenet.vit import vit_semisup_head

    ck = small_vit()
    p = IMAGENET_1PCT.protocols["ibot"]
    w, b = torch.randn(2048, 192), torch.randn(2048)
    ck.heads["projection"] = Head("projection", {"mlp.0.weight": w, "mlp.0.bias": b, "mlp.2.weight": torch.randn(2048, 2048)})
    head, info = vit_semisup_head(p, ck)
    assert info["rule_applied"] == "checkpoint-projection"
    assert torch.equal(head.mlp[0].weight, w) and torch.equal(head.mlp[0].bias, b)
    x = torch.randn(5, 192)
    torch.testing.assert_close(head(x), head.cls_head(nn.functional.gelu(x @ w.T + b)))
    assert head.cls_head.weight.abs().max() <= 2.0 and float(head.cls_head.weight.detach().std()) == pytest.approx(0.02, rel=0.05)
    ck.heads["projection"] = Head("projection", {"mlp.0.weight": torch.randn(2048, 384)})  # another width
    assert vit_semisup_head(p, ck)[1]["rule_applied"] == "fresh"


def test_ibot_parameter_groups_match_timms_weight_decay_split():
    from timm.optim import param_groups_weight_decay

    from mopro_bench.tasks.imagenet.task import ClassifierNet
    from mopro_bench.tasks.imagenet.vit import ProjectionClassifier, vit_param_groups

    bb = small_vit().backbone
    head = ProjectionClassifier(192, 64, 1000)
    ours = vit_param_groups(bb, head, 1e-5, 1e-5, 0.05)
    net = ClassifierNet(bb, head)
    theirs = param_groups_weight_decay(net, 0.05, no_weight_decay_list=())  # iBOT's ViT names no exceptions
    ids = {wd: {id(q) for g in ours if g.weight_decay == wd for q in g.params} for wd in (0.0, 0.05)}
    assert ids == {g["weight_decay"]: {id(q) for q in g["params"]} for g in theirs}
    assert {id(bb.pos_embed), id(bb.cls_token), id(head.mlp[0].weight)} <= ids[0.05]
    assert {id(bb.norm.weight), id(bb.blocks[0].attn.qkv.bias), id(head.cls_head.bias)} <= ids[0.0]
    assert sum(q.numel() for g in ours for q in g.params) == sum(q.numel() for q in net.parameters())


def test_warmup_cosine_matches_timms_scheduler_stepped_after_each_epoch():
    from timm.scheduler import CosineLRScheduler

    from mopro_bench.engine.schedule import warmup_cosine_lr

    epochs, base = 20, 4e-5
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=base)
    sched = CosineLRScheduler(opt, t_initial=epochs, lr_min=1e-5, warmup_t=5, warmup_lr_init=1e-6, cycle_limit=1)
    seen = []
    for epoch in range(epochs):  # eval_cls.py: train the epoch, then lr_scheduler.step(epoch)
        seen.append(opt.param_groups[0]["lr"])
        sched.step(epoch)
    ours = [warmup_cosine_lr(base, max(e - 1, 0), epochs=epochs, warmup_epochs=5, warmup_lr=1e-6, min_lr=1e-5)
            for e in range(epochs)]
    assert ours == pytest.approx(seen, rel=1e-12, abs=0)


def test_repeated_aug_order_matches_a_direct_simulation_of_the_sampler():
    from mopro_bench.engine.seeding import epoch_seed
    from mopro_bench.tasks.imagenet.finetune import repeated_aug_order

    n, ranks, per_rank, repeats, round_to = 45, 4, 3, 3, 8
    got = repeated_aug_order(n, 2, 7, repeats=repeats, ranks=ranks, per_rank_batch=per_rank, round_to=round_to)
    # DeiT's RASampler, one instance per process, then a DataLoader(drop_last=True) per process
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(7, 2))).tolist()
    num_samples = int(math.ceil(n * repeats / ranks))
    batches = []
    for r in range(ranks):
        idx = [i for i in perm for _ in range(repeats)]
        idx += idx[:num_samples * ranks - len(idx)]
        mine = idx[r:num_samples * ranks:ranks][:int(math.floor(n // round_to * round_to / ranks))]
        batches.append([mine[s:s + per_rank] for s in range(0, len(mine) - per_rank + 1, per_rank)])
    steps = len(batches[0])
    assert steps == 10 // per_rank == 3  # 40 kept items over 4 processes, 10 each, batches of 3
    want = [sorted(i for r in range(ranks) for i in batches[r][b]) for b in range(steps)]
    chunks = [sorted(got[b * ranks * per_rank:(b + 1) * ranks * per_rank]) for b in range(steps)]
    assert chunks == want and len(got) == steps * ranks * per_rank
    counts = np.bincount(got, minlength=n)
    assert counts.max() <= repeats + 1  # an image appears about `repeats` times per epoch, on different processes
    assert repeated_aug_order(n, 3, 7, repeats=repeats, ranks=ranks, per_rank_batch=per_rank, round_to=round_to) != got


def test_ibot_mixup_draws_are_a_function_of_seed_epoch_and_step():
    from mopro_bench.tasks.imagenet.task import IMAGENET_1PCT
    from mopro_bench.tasks.imagenet.vit import vit_mixup

    p = IMAGENET_1PCT.protocols["ibot"]
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8)

    def draw(seed, epoch, steps, noise):
        mix = vit_mixup(p, seed)
        mix.start_epoch(epoch)
        np.random.seed(noise)  # whatever the global numpy state is ...
        before = np.random.get_state()[1].copy()
        out = [mix(x.clone(), y.clone()) for _ in range(steps)]
        assert np.array_equal(np.random.get_state()[1], before)  # ... it is left as it was
        return out

    a, b = draw(0, 3, 2, noise=1), draw(0, 3, 2, noise=2)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert ya.shape == (8, 1000) and torch.allclose(ya.sum(1), torch.ones(8))  # soft targets, smoothing 0.1
        assert float(ya.max()) <= 0.9 + 0.1 / 1000 + 1e-6
    assert not torch.equal(a[0][1], a[1][1]) or not torch.equal(a[0][0], a[1][0])  # the next step draws anew
    c = draw(0, 4, 1, noise=1)
    assert not torch.equal(c[0][0], a[0][0])  # another epoch draws anew
    with pytest.raises(BenchError, match="even per-process batch"):
        vit_mixup(p, 0)(x[:7], y[:7])


def test_ibot_run_resumed_after_an_interruption_ends_as_an_uninterrupted_one(imagenet, tmp_path, cache, monkeypatch):
    from pathlib import Path

    from tests.tasks.imagenet.test_imagenet_tasks import interrupted_after_first_epoch

    lst = str(Path(f"{imagenet}.subsets") / "10percent.txt")
    over = {**IBOT_TINY, "warmup_epochs": 0, "lr_backbone": 1e-4, "lr_head": 1e-3, "min_lr": 1e-4}
    ref = run(small_vit(), "imagenet_10pct@ibot", imagenet, tmp_path / "ref", cache, over, subset_file=lst)
    interrupted_after_first_epoch(
        monkeypatch, lambda: run(small_vit(), "imagenet_10pct@ibot", imagenet, tmp_path / "b", cache, over, subset_file=lst))
    rec = run(small_vit(), "imagenet_10pct@ibot", imagenet, tmp_path / "b", cache, over, subset_file=lst, resume=True)
    assert rec["details"]["resumed_from_epoch"] == 1
    assert [h["loss"] for h in rec["details"]["history"]] == [h["loss"] for h in ref["details"]["history"]]
    assert rec["metrics"] == ref["metrics"]
    assert ref["details"]["history"][1]["lr"]["head"] == pytest.approx(1e-3)  # no warm-up: base lr, cosine to min_lr
