"""MoPro building blocks against slow, obvious re-derivations (CPU, fast)."""

from __future__ import annotations

import copy
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mopro_bench.errors import BenchError
from mopro_bench.pretrain import checkpoint as ckptlib
from mopro_bench.pretrain.cleaning import clean_labels
from mopro_bench.pretrain.config import PretrainConfig, from_dict, make_config
from mopro_bench.pretrain.data import GlobalBatchSampler, derive_seed
from mopro_bench.pretrain.model import MoPro, SplitBatchNorm2d
from mopro_bench.pretrain.prototypes import update_prototypes, update_prototypes_sequential, within_class_rank
from mopro_bench.pretrain.trainer import StepEnv, lr_at, mopro_step, resolve_bn_splits


# --------------------------------------------------------------------------------------------------- prototypes
def _proto_inputs(seed=0, c=7, d=16, n=40, zero_rows=(2,)):
    g = torch.Generator().manual_seed(seed)
    protos = F.normalize(torch.randn(c, d, generator=g), dim=1)
    for r in zero_rows:  # the reference starts from zero prototypes
        protos[r] = 0
    feats = F.normalize(torch.randn(n, d, generator=g), dim=1)
    labels = torch.randint(0, c - 1, (n,), generator=g)  # class c-1 never appears
    labels[:6] = 3  # a class with many samples in a row
    return protos, feats, labels


@pytest.mark.parametrize("norm", ["batch", "sample"])
@pytest.mark.parametrize("m", [0.999, 0.9, 0.5])
def test_vectorised_prototype_update_equals_sequential_loop(norm, m):
    protos, feats, labels = _proto_inputs()
    ref = update_prototypes_sequential(protos, feats, labels, m, norm)
    fast = update_prototypes(protos, feats, labels, m, norm)
    assert torch.allclose(fast, ref, atol=1e-6, rtol=0), (fast - ref).abs().max()
    assert torch.allclose(fast.norm(dim=1)[labels.unique()], torch.ones(len(labels.unique())), atol=1e-6)
    # untouched classes are unchanged (up to renormalisation of a unit vector)
    assert torch.allclose(fast[-1], protos[-1], atol=1e-6)


def test_prototype_update_order_within_class_matters_and_is_respected():
    protos, feats, labels = _proto_inputs(c=3, n=5, zero_rows=())
    labels = torch.tensor([1, 1, 1, 0, 1])
    for norm in ("batch", "sample"):
        a = update_prototypes(protos, feats, labels, 0.5, norm)
        perm = torch.tensor([4, 1, 2, 3, 0])  # same multiset, other order within class 1
        b = update_prototypes(protos, feats[perm], labels[perm], 0.5, norm)
        assert not torch.allclose(a[1], b[1], atol=1e-4)
        assert torch.allclose(b, update_prototypes_sequential(protos, feats[perm], labels[perm], 0.5, norm), atol=1e-6)


def test_prototype_closed_form_by_hand():
    p0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z = torch.tensor([[0.0, 1.0], [0.6, 0.8]])
    m = 0.5
    out = update_prototypes(p0, z, torch.tensor([0, 0]), m, "batch")
    expect = m * m * p0[0] + (1 - m) * m * z[0] + (1 - m) * z[1]  # (0.4, 0.65)
    assert torch.allclose(out[0], expect / expect.norm(), atol=1e-7)
    assert torch.allclose(out[1], p0[1])
    rank, counts = within_class_rank(torch.tensor([2, 0, 2, 2, 0]), 3)
    assert rank.tolist() == [0, 0, 1, 2, 1] and counts.tolist() == [2, 0, 3]


def test_prototype_update_empty_batch():
    protos, _, _ = _proto_inputs()
    out = update_prototypes(protos, torch.zeros(0, 16), torch.zeros(0, dtype=torch.long), 0.9, "batch")
    assert torch.allclose(out, F.normalize(protos, dim=1))


# -------------------------------------------------------------------------------------------------------- queue
def test_queue_pointer_arithmetic():
    model = MoPro("resnet18", 1, num_class=5, low_dim=4, queue_size=12)
    q0 = model.queue.clone()
    assert torch.allclose(q0.norm(dim=0), torch.ones(12), atol=1e-6) and int(model.queue_ptr) == 0
    batches = [torch.full((4, 4), float(i + 1)) for i in range(4)]
    model.enqueue(batches[0])
    assert int(model.queue_ptr) == 4
    assert torch.all(model.queue[:, :4] == 1) and torch.equal(model.queue[:, 4:], q0[:, 4:])
    model.enqueue(batches[1])
    model.enqueue(batches[2])
    assert int(model.queue_ptr) == 0  # wrapped
    model.enqueue(batches[3])  # overwrites the oldest batch
    assert int(model.queue_ptr) == 4
    assert torch.all(model.queue[:, :4] == 4) and torch.all(model.queue[:, 4:8] == 2) and torch.all(model.queue[:, 8:] == 3)
    with pytest.raises(ValueError):
        model.enqueue(torch.zeros(5, 4))


def test_queue_must_be_multiple_of_global_batch(tmp_path):
    from mopro_bench.pretrain.trainer import Trainer

    with pytest.raises(BenchError, match="queue_size=100 is not a multiple of the global batch 16"):
        Trainer({"mopro.queue_size": 100, "data.batch_size": 16}, tmp_path, tmp_path / "out", device="cpu")


# ----------------------------------------------------------------------------------------------------- cleaning
def test_cleaning_rule_on_crafted_logits():
    c = 4
    big = 20.0
    cls = torch.tensor([
        [big, 0, 0, 0],  # confident class 0, given 0: kept, not relabelled
        [0, big, 0, 0],  # confident class 1, given 2: relabelled to 1
        [0, 0, 0, 0],  # uniform: score of given label 0.25 > 1/4? no (equal) -> removed (OOD)
        [1.0, 1.0, 0, -big],  # not confident; given label 3 has ~0 score -> OOD
        [1.0, 0.5, 0, 0],  # not confident; given 0 has score > 1/4 -> kept with its label
    ])
    proto = cls.clone()
    target = torch.tensor([0, 2, 0, 3, 0])
    r = clean_labels(cls, proto, target, alpha=0.5, threshold=0.8, num_class=c)
    assert r.target.tolist() == [0, 1, 0, 3, 0]
    assert r.kept.tolist() == [True, True, False, False, True]
    assert r.relabelled.tolist() == [False, True, False, False, False]
    assert r.confident.tolist() == [True, True, False, False, False]
    # alpha mixes the two sources: classifier confident, prototypes uniform -> max score 0.5 + 0.125 < 0.8
    r2 = clean_labels(cls[1:2], torch.zeros(1, c), torch.tensor([2]), alpha=0.5, threshold=0.8, num_class=c)
    assert r2.target.tolist() == [2] and not r2.confident.item()
    s = r2.soft[0]
    expect = 0.5 * F.softmax(cls[1], 0) + 0.5 * torch.full((c,), 0.25)
    assert torch.allclose(s, expect)
    # the 1/num_class bar uses num_class, not the soft label's width
    r3 = clean_labels(torch.zeros(1, c), torch.zeros(1, c), torch.tensor([1]), alpha=0.5, threshold=0.8, num_class=1000)
    assert r3.kept.item()


# ------------------------------------------------------------------------------------------------------- config
def test_config_defaults_are_the_papers():
    c = PretrainConfig()
    assert (c.model.arch, c.model.width, c.model.num_class, c.model.low_dim) == ("resnet50", 1, 1000, 128)
    m = c.mopro
    assert (m.moco_m, m.queue_size, m.temperature, m.proto_m, m.alpha, m.pseudo_th) == (0.999, 8192, 0.1, 0.999, 0.5, 0.8)
    assert (m.start_clean_epoch, m.w_inst, m.w_proto) == (11, 1.0, 1.0)
    o = c.optim
    assert (o.lr, o.momentum, o.weight_decay, o.epochs, o.milestones) == (0.1, 0.9, 1e-4, 90, (40, 80))
    assert c.data.batch_size == 256 and c.aug.image_size == 224 and c.aug.crop_scale == (0.2, 1.0)


def test_config_overrides_and_errors():
    c = make_config({"optim.lr": 0.05, "optim.milestones": [20, 30], "model.arch": "resnet18", "aug.image_size": 64})
    assert c.optim.lr == 0.05 and c.optim.milestones == (20, 30) and c.aug.image_size == 64
    assert from_dict(c.to_dict()) == c
    with pytest.raises(BenchError, match="unknown setting"):
        make_config({"optim.learning_rate": 1})
    with pytest.raises(BenchError, match="proto_norm"):
        make_config({"mopro.proto_norm": "never"})
    with pytest.raises(BenchError, match="expected a number"):
        make_config({"optim.lr": "fast"})


def test_lr_schedule():
    c = make_config({"optim.epochs": 90})
    assert [lr_at(c, e) for e in (0, 39, 40, 79, 80)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])
    c = make_config({"optim.schedule": "cos", "optim.epochs": 10, "optim.scale_lr": True, "data.batch_size": 512})
    assert lr_at(c, 0) == pytest.approx(0.2) and lr_at(c, 5) == pytest.approx(0.1)


def test_bn_splits_resolution():
    c = make_config({})
    assert resolve_bn_splits(c, 1, 256) == 8 and resolve_bn_splits(c, 2, 128) == 4 and resolve_bn_splits(c, 16, 16) == 1
    assert resolve_bn_splits(c, 1, 16) == 2 and resolve_bn_splits(c, 1, 24) == 3  # auto: >= 8 images per BN group
    assert resolve_bn_splits(c, 1, 6) == 1
    with pytest.raises(BenchError, match="does not divide"):
        resolve_bn_splits(make_config({"model.bn_splits": 3}), 1, 16)


# ------------------------------------------------------------------------------------------------- split BN
def test_split_batchnorm_equals_separate_batchnorms():
    torch.manual_seed(0)
    x = torch.randn(12, 5, 3, 3) * 2 + 1
    bn = SplitBatchNorm2d(5)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    ref = nn.BatchNorm2d(5)
    ref.load_state_dict(bn.state_dict())
    bn.num_splits = 3
    out = bn(x)
    refs, means, vars_ = [], [], []
    for chunk in x.chunk(3):
        r = copy.deepcopy(ref)
        refs.append(r(chunk))
        means.append(r.running_mean)
        vars_.append(r.running_var)
    assert torch.allclose(out, torch.cat(refs), atol=1e-5)
    assert torch.allclose(bn.running_mean, torch.stack(means).mean(0), atol=1e-6)
    assert torch.allclose(bn.running_var, torch.stack(vars_).mean(0), atol=1e-6)
    assert int(bn.num_batches_tracked) == 1
    bn.eval()
    ref.load_state_dict(bn.state_dict())
    ref.eval()
    assert torch.allclose(bn(x), ref(x))
    assert set(bn.state_dict()) == set(nn.BatchNorm2d(5).state_dict())


def test_state_dict_keys_follow_the_contract():
    model = MoPro("resnet18", 1, num_class=10, low_dim=8, queue_size=16)
    keys = set(model.state_dict())
    for k in ("encoder_q.conv1.weight", "encoder_q.bn1.running_mean", "encoder_q.layer1.0.conv1.weight",
              "encoder_q.layer4.1.bn2.weight", "encoder_q.classifier.weight", "encoder_q.classifier.bias",
              "encoder_q.fc1.weight", "encoder_q.fc2.bias", "encoder_k.conv1.weight", "encoder_k.fc2.weight",
              "queue", "queue_ptr", "prototypes"):
        assert k in keys, k
    from mopro_bench.backbones import build_backbone

    trunk = {f"encoder_q.{k}" for k in build_backbone("resnet18").state_dict()}
    assert trunk <= keys
    extra = {k for k in keys if k.startswith("encoder_q.")} - trunk
    assert extra == {f"encoder_q.{a}.{b}" for a in ("classifier", "fc1", "fc2") for b in ("weight", "bias")}
    assert model.queue.shape == (8, 16) and model.prototypes.shape == (10, 8)


# ------------------------------------------------------------------------------------------------ one full step
def _slow_step(model: MoPro, x_q, x_k, target, *, cfg, epoch, step, lr, wd, momentum):
    """An obvious re-derivation of one MoPro step (one process, bn_splits groups), on a deep copy."""
    m = cfg.mopro
    g = model.encoder_q.layer1[0].bn1.num_splits
    enc_q = model.encoder_q
    cls, q = enc_q(x_q)
    # EMA of the key encoder, parameter by parameter
    with torch.no_grad():
        for pk, pq in zip(model.encoder_k.parameters(), enc_q.parameters()):
            pk.copy_(m.moco_m * pk + (1 - m.moco_m) * pq)
        perm = torch.randperm(len(x_k), generator=torch.Generator().manual_seed(derive_seed("shuffle", cfg.run.seed, step)))
        # shuffled BN: each group of the permuted batch through plain BatchNorm
        enc_k = copy.deepcopy(model.encoder_k)
        for mod in enc_k.modules():
            if isinstance(mod, SplitBatchNorm2d):
                mod.num_splits = 1
        xs = x_k[perm]
        ks = torch.cat([enc_k(chunk)[1] for chunk in xs.chunk(g)])
        k = torch.empty_like(ks)
        for j, i in enumerate(perm.tolist()):
            k[i] = ks[j]
    n = len(target)
    queue = model.queue.clone()
    protos = model.prototypes.clone()
    # instance loss, sample by sample
    inst = []
    for i in range(n):
        qi = q[i].detach()
        logits = [float(qi @ k[i]) / m.temperature] + [float(qi @ queue[:, j]) / m.temperature for j in range(queue.shape[1])]
        inst.append(-logits[0] + math.log(sum(math.exp(v) for v in logits)))  # plain Python floats
    # cleaning, sample by sample
    tgt, keep = [], []
    for i in range(n):
        y = int(target[i])
        if epoch >= m.start_clean_epoch:
            pc = torch.softmax(cls[i].detach(), 0)
            pp = torch.softmax(q[i].detach() @ protos.t() / m.temperature, 0)
            s = m.alpha * pc + (1 - m.alpha) * pp
            conf = float(s.max()) > m.pseudo_th
            kept = float(s[y]) > 1 / cfg.model.num_class or conf
            tgt.append(int(s.argmax()) if conf else y)
            keep.append(kept)
        else:
            tgt.append(y)
            keep.append(True)
    idx = [i for i in range(n) if keep[i]]
    tgt_t = torch.tensor(tgt)
    loss_cls = sum(F.cross_entropy(cls[i:i + 1], tgt_t[i:i + 1]) for i in idx) / max(1, len(idx))
    if epoch >= m.proto_start_epoch:
        loss_proto = sum(F.cross_entropy(q[i:i + 1] @ protos.t() / m.temperature, tgt_t[i:i + 1]) for i in idx) / max(1, len(idx))
    else:
        loss_proto = torch.zeros(())
    loss_inst_t = sum(F.cross_entropy(torch.cat([(q[i] @ k[i]).view(1), q[i] @ queue]).view(1, -1) / m.temperature,
                                      torch.zeros(1, dtype=torch.long)) for i in range(n)) / n
    assert abs(float(loss_inst_t.detach()) - sum(inst) / n) < 1e-4
    loss = loss_cls + m.w_inst * loss_inst_t + m.w_proto * loss_proto
    enc_q.zero_grad()
    loss.backward()
    with torch.no_grad():
        new_params = [p - lr * (p.grad + wd * p) for p in enc_q.parameters()]  # first SGD step: buffer = grad + wd*p
    # queue and prototypes
    new_queue = queue.clone()
    new_queue[:, :n] = k.t()
    new_protos = update_prototypes_sequential(protos, q.detach()[idx], tgt_t[idx], m.proto_m, m.proto_norm)
    return {"loss": float(loss.detach()), "loss_inst": sum(inst) / n, "loss_cls": float(loss_cls.detach()),
            "loss_proto": float(loss_proto.detach()),
            "kept": len(idx), "relabelled": sum(tgt[i] != int(target[i]) for i in range(n)), "params": new_params,
            "queue": new_queue, "protos": new_protos, "k_params": [p.clone() for p in model.encoder_k.parameters()]}


@pytest.mark.parametrize("epoch", [0, 2])
def test_one_step_equals_slow_rederivation(epoch):
    torch.manual_seed(0)
    overrides = {"model.arch": "resnet18", "model.num_class": 6, "model.low_dim": 8, "mopro.queue_size": 16,
                 "data.batch_size": 8, "aug.image_size": 32, "mopro.start_clean_epoch": 1, "mopro.moco_m": 0.9,
                 "mopro.proto_m": 0.7, "optim.weight_decay": 1e-3}
    model = MoPro("resnet18", 1, 6, 8, 16).double()  # float64: equality up to rounding, not float32 noise
    model.set_bn_splits(2)
    with torch.no_grad():
        model.prototypes.copy_(F.normalize(torch.randn(6, 8, dtype=torch.float64), dim=1))
        model.encoder_q.classifier.weight.zero_()
        model.encoder_q.classifier.bias.copy_(torch.tensor([5.0, 0, 0, 0, 0, 0]))  # the classifier favours class 0
        for p in model.encoder_q.parameters():  # the key encoder must differ from the query one for the EMA to show
            p.add_(0.01 * torch.randn_like(p))
    x_q, x_k = torch.randn(8, 3, 32, 32, dtype=torch.float64), torch.randn(8, 3, 32, 32, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1])
    # a threshold between the batch's max soft-label scores, so the rule has confident and unconfident samples
    with torch.no_grad():
        cls, q = copy.deepcopy(model.encoder_q)(x_q)
        soft = 0.5 * torch.softmax(cls, 1) + 0.5 * torch.softmax(q @ model.prototypes.t() / 0.1, 1)
        top = sorted(soft.max(1).values.tolist())
    cfg = make_config({**overrides, "mopro.pseudo_th": (top[3] + top[4]) / 2})
    slow_model = copy.deepcopy(model)
    lr, wd = 0.05, cfg.optim.weight_decay
    slow = _slow_step(slow_model, x_q, x_k, target, cfg=cfg, epoch=epoch, step=3, lr=lr, wd=wd, momentum=0.9)
    opt = torch.optim.SGD(model.encoder_q.parameters(), lr=lr, momentum=0.9, weight_decay=wd, foreach=True)
    stats = mopro_step(model, model.encoder_q, opt, x_q, x_k, target, epoch=epoch, step=3, env=StepEnv(cfg))
    s = dict(zip(("loss", "loss_inst", "loss_cls", "loss_proto", "acc_inst", "samples", "kept", "relabelled"), stats.tolist()))
    for k in ("loss", "loss_inst", "loss_cls", "loss_proto"):
        assert s[k] == pytest.approx(slow[k], rel=1e-6, abs=1e-6), k  # stats are float32
    assert s["kept"] == slow["kept"] and s["relabelled"] == slow["relabelled"]
    if epoch == 2:  # cleaning is on: this batch must exercise both branches of the rule
        assert 0 < slow["kept"] < 8 and slow["relabelled"] > 0
    else:
        assert slow["kept"] == 8 and s["loss_proto"] == 0.0
    assert torch.allclose(model.queue, slow["queue"], atol=1e-10) and int(model.queue_ptr) == 8
    assert torch.allclose(model.prototypes, slow["protos"], atol=1e-10)
    for a, b in zip(model.encoder_q.parameters(), slow["params"]):
        assert torch.allclose(a, b, atol=1e-10)
    for a, b in zip(model.encoder_k.parameters(), slow["k_params"]):
        assert torch.allclose(a, b, atol=1e-10)


# -------------------------------------------------------------------------------------------- sampler and RNG
def test_global_batch_sampler_shards_and_resumes():
    single = GlobalBatchSampler(50, 8, seed=3)
    single.set_epoch(2)
    full = list(single)
    assert len(full) == 6 and all(len(b) == 8 for b in full)
    assert len({i for b in full for _, i in b}) == 48 and all(e == 2 for b in full for e, _ in b)
    shards = [GlobalBatchSampler(50, 8, rank=r, world=2, seed=3) for r in range(2)]
    for s in shards:
        s.set_epoch(2)
    parts = [list(s) for s in shards]
    assert [parts[0][b] + parts[1][b] for b in range(6)] == full  # all_gather order = the one-process batch
    single.set_epoch(2, start=4)
    assert list(single) == full[4:] and len(single) == 2
    other = GlobalBatchSampler(50, 8, seed=3)
    other.set_epoch(3)
    assert list(other) != full


def test_rng_state_roundtrip_weights_only(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.normal()  # leave a cached gaussian around
    state = ckptlib.capture_rng()
    torch.save({"rng": state}, tmp_path / "r.pt")
    loaded = torch.load(tmp_path / "r.pt", weights_only=True)["rng"]
    expect = (random.random(), np.random.random(), torch.rand(1).item())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    ckptlib.restore_rng(loaded)
    assert (random.random(), np.random.random(), torch.rand(1).item()) == expect


def test_proto_logits_leave_out_unseen_classes_but_not_the_own_label():
    from mopro_bench.pretrain.losses import proto_logits

    protos = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])  # class 1 has no prototype yet
    q = torch.tensor([[0.6, 0.8], [0.6, 0.8]])
    ref = proto_logits(q, protos, 0.1)
    assert torch.allclose(ref, torch.tensor([[6.0, 0.0, 8.0]] * 2))  # the reference: logit 0 for the unseen class
    masked = proto_logits(q, protos, 0.1, torch.tensor([0, 1]))
    assert masked[0, 1] == float("-inf") and masked[1, 1] == 0.0
    assert torch.equal(masked[:, [0, 2]], ref[:, [0, 2]])
    assert torch.isfinite(F.cross_entropy(masked, torch.tensor([0, 1])))
