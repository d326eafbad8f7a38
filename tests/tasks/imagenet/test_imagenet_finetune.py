"""The supervised train loop: step schedule, exact resume, refusal to overwrite, and the linear solver on features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from mopro_bench.engine.schedule import step_lr as lr_at
from mopro_bench.errors import BenchError
from mopro_bench.registry import RunContext
from mopro_bench.tasks.imagenet.finetune import (
    STATE_FILE,
    ParamGroup,
    SupervisedTrainer,
    TrainConfig,
    fit_linear_on_features,
)


class Blobs(Dataset):
    """4 classes of 3x8x8 'images' (class-dependent mean) with random augmentation noise drawn at load time."""

    def __init__(self, n: int = 48, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 4
        self.x = torch.randn(n, 3, 8, 8, generator=g) * 0.5 + self.y.view(-1, 1, 1, 1).float().sub(1.5)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i] + 0.1 * torch.randn(3, 8, 8), int(self.y[i]), i  # global-RNG 'augmentation'


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 4))


def trainer(net, tmp_path, *, epochs=4, resume=False, key=None, hook=None, eval_every=0):
    ctx = RunContext(device=torch.device("cpu"), seed=3, work_dir=tmp_path, progress=False)
    cfg = TrainConfig(epochs=epochs, batch_size=10, milestones=(2,), gamma=0.1, momentum=0.9, eval_every=eval_every)
    groups = [ParamGroup("body", list(net[:2].parameters()), 0.05), ParamGroup("head", list(net[5].parameters()), 0.2)]
    return SupervisedTrainer(net, groups, Blobs(), Blobs(seed=1), cfg, ctx, run_key=key or {"run": 1}, resume=resume,
                             on_epoch_end=hook)


def test_step_schedule():
    assert [lr_at(0.005, e, (20, 30), 0.2) for e in (0, 19, 20, 29, 30, 39)] == pytest.approx(
        [0.005, 0.005, 0.001, 0.001, 0.0002, 0.0002])


class Interrupt(Exception):
    pass


def test_resume_gives_the_uninterrupted_weights(tmp_path):
    ref_net = small_net()
    ref = trainer(ref_net, tmp_path / "a").fit()
    assert [h["lr"]["head"] for h in ref.history] == pytest.approx([0.2, 0.2, 0.02, 0.02])
    assert ref.evaluated_epochs == [4] and ref.final["epoch"] == 4

    def stop_after_2(epoch):
        if epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        trainer(small_net(), tmp_path / "b", hook=stop_after_2).fit()
    # without --resume an interrupted run is never overwritten
    with pytest.raises(BenchError, match=r"interrupted run \(2/4 epochs done\).*--resume"):
        trainer(small_net(), tmp_path / "b").fit()
    # another run in the same directory is refused
    with pytest.raises(BenchError, match="different run"):
        trainer(small_net(), tmp_path / "b", resume=True, key={"run": 2}).fit()
    res_net = small_net(seed=99)  # initial weights do not matter: they come from the state file
    res = trainer(res_net, tmp_path / "b", resume=True).fit()
    assert res.resumed_from_epoch == 2
    for (k, a), (_, b) in zip(ref_net.state_dict().items(), res_net.state_dict().items()):
        assert torch.equal(a, b), k
    assert res.final == ref.final and [h["loss"] for h in res.history] == [h["loss"] for h in ref.history]
    # a finished run resumed again trains nothing and reports the stored numbers
    again = trainer(small_net(seed=5), tmp_path / "b", resume=True).fit()
    assert again.final == ref.final and again.resumed_from_epoch == 4
    # the state file is complete and loadable with weights_only
    state = torch.load(tmp_path / "b" / STATE_FILE, weights_only=True)
    assert state["finished"] and state["epoch"] == 4


def test_training_learns_and_eval_every(tmp_path):
    net = small_net()
    fit = trainer(net, tmp_path, epochs=4, eval_every=2).fit()
    assert fit.evaluated_epochs == [2, 4]
    assert fit.final["top1"] > 60  # 4 separable classes, chance 25%
    assert fit.best["top1"] == max(h["top1"] for h in fit.history if "top1" in h)


def test_frozen_module_stays_in_eval_mode_and_unchanged(tmp_path):
    net = small_net()
    body = net[:2]
    for p in body.parameters():
        p.requires_grad_(False)
    before = {k: v.clone() for k, v in body.state_dict().items()}
    ctx = RunContext(seed=0, work_dir=tmp_path, progress=False)
    cfg = TrainConfig(epochs=2, batch_size=8)
    SupervisedTrainer(net, [ParamGroup("head", list(net[5].parameters()), 0.1)], Blobs(), Blobs(seed=1), cfg, ctx,
                      run_key={}, frozen=[body]).fit()
    for k, v in body.state_dict().items():  # BN running stats too: BN was in eval mode
        assert torch.equal(v, before[k]), k
    state = torch.load(tmp_path / STATE_FILE, weights_only=True)
    assert set(state["model"]) == {"5.weight", "5.bias"}  # the frozen part is not written every epoch


def test_linear_on_features_learns_and_folds_the_normalisation():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 16)) * 3
    y = rng.integers(0, 5, size=400)
    x = centers[y] + rng.normal(size=(400, 16))
    x = x * np.linspace(0.1, 10, 16) + 50  # badly scaled raw features
    fit = fit_linear_on_features(x[:300], y[:300] + 10, x[300:], y[300:] + 10, num_classes=20, epochs=20, batch_size=64,
                                 lr=1e-2, eval_every=5, progress=False)
    assert fit.evaluated_epochs == [5, 10, 15, 20]
    assert fit.final["top1"] > 90  # chance 20%
    # the returned head applies to raw features and reproduces the reported accuracy
    logits = torch.from_numpy(x[300:]).float() @ fit.weight.T + fit.bias
    assert 100 * float((logits.argmax(1).numpy() == y[300:] + 10).mean()) == pytest.approx(fit.final["top1"], abs=1.01)
    assert fit.weight.shape == (20, 16)
