"""The training engine: schedules against their formulas, hook order, state round trip, seeding determinism."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from mopro_bench.engine import loop, schedule, seeding
from mopro_bench.engine.precision import autocast, check_precision, exact_fp32, precision_autocast
from mopro_bench.engine.state import CheckpointSeries, save_state
from mopro_bench.errors import BenchError


def test_step_schedule_matches_the_formula():
    for e in range(0, 50):
        assert schedule.step_lr(0.1, e, (20, 30), 0.2) == 0.1 * 0.2 ** ((e >= 20) + (e >= 30))
    assert schedule.step_lr(0.5, 7, (), 0.1) == 0.5


def test_cosine_schedule_matches_the_formula():
    for e in range(0, 11):
        assert schedule.cosine_lr(0.3, e, 10) == 0.3 * 0.5 * (1.0 + math.cos(math.pi * e / 10))
    assert schedule.cosine_lr(1.0, 10, 10) == pytest.approx(0.0, abs=1e-15)


def test_epoch_lr_dispatch_and_warmup():
    assert schedule.epoch_lr("cos", 0.2, 3, epochs=8) == schedule.cosine_lr(0.2, 3, 8)
    assert schedule.epoch_lr("step", 0.2, 3, epochs=8, milestones=(2,), gamma=0.5) == 0.1
    assert schedule.epoch_lr("const", 0.2, 3, epochs=8, milestones=(2,)) == 0.2
    assert schedule.warmup_factor(0, 100, 0.001) == 0.001
    assert schedule.warmup_factor(50, 100, 0.001) == pytest.approx(0.001 * 0.5 + 0.5)
    assert schedule.warmup_factor(100, 100, 0.001) == 1.0
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule.set_lr(opt, 0.25)
    assert opt.param_groups[0]["lr"] == 0.25


def test_precision_contexts():
    check_precision("fp32")
    with pytest.raises(BenchError):
        check_precision("fp16x")
    cpu = torch.device("cpu")
    with autocast(cpu, None):
        assert not torch.is_autocast_enabled("cpu")
    with precision_autocast(cpu, "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with exact_fp32(cpu, "fp32"):
        pass


class _Rec(loop.HookBase):
    def __init__(self, name, log):
        self.name, self.log = name, log

    def __getattribute__(self, attr):
        if attr in ("before_train", "after_train", "before_epoch", "after_epoch", "before_step", "after_step"):
            return lambda: self.log.append((self.name, attr))
        return object.__getattribute__(self, attr)


class _Toy(loop.TrainerBase):
    def __init__(self, losses):
        super().__init__()
        self.losses = losses
        self.seen = []

    def epoch_batches(self):
        return [0, 1]

    def run_step(self, batch):
        self.seen.append((self.epoch, batch))
        return self.losses.pop(0) if self.losses else 0.0


def test_hook_order():
    log = []
    t = _Toy([])
    t.register_hooks([_Rec("a", log), None, _Rec("b", log)])
    t.train(1, 3)
    assert t.seen == [(1, 0), (1, 1), (2, 0), (2, 1)] and t.iter == 4
    events = [e for n, e in log if n == "a"]
    step = ["before_step", "after_step"]
    assert events == ["before_train", "before_epoch", *step, *step, "after_epoch", "before_epoch", *step, *step,
                      "after_epoch", "after_train"]
    assert log[:2] == [("a", "before_train"), ("b", "before_train")]


def test_lr_hook_divergence_guard_and_after_train_on_error():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p, ], lr=1.0)
    log = []
    t = _Toy([1.0, float("nan")])
    t.register_hooks([loop.LRSchedule(opt, lambda e: 0.1 * (e + 1)), _Rec("r", log),
                      loop.DivergenceGuard(lambda tr: BenchError(f"diverged at epoch {tr.epoch}", "lower lr"))])
    with pytest.raises(BenchError, match="diverged at epoch 0"):
        t.train(0, 2)
    assert opt.param_groups[0]["lr"] == 0.1 and t.lr == 0.1
    assert log[-1] == ("r", "after_train")


def test_stop_requested_and_epoch_callback():
    done = []
    t = _Toy([])

    class Stop(loop.HookBase):
        def after_step(self):
            self.trainer.stop_requested = self.trainer.iter == 3

    t.register_hooks([Stop(), loop.EpochCallback(lambda tr: done.append(tr.epoch))])
    t.train(0, 5)
    assert t.iter == 3 and done == [0, 1]


def test_checkpoint_series_round_trip_keep_last_and_resume_lookup(tmp_path):
    s = CheckpointSeries()
    for step in (1, 2, 3):
        s.save(tmp_path, {"step": step, "w": torch.full((2,), float(step))}, step, keep_last=2)
    assert [p.name for p in s.list(tmp_path)] == [s.name(2), s.name(3)]
    assert (tmp_path / "last.pth.tar").resolve().name == s.name(3)
    (tmp_path / s.name(3)).write_bytes(b"damaged")

    def load(p):
        return torch.load(p, weights_only=True)

    latest = s.find_latest(tmp_path, load)
    assert latest.name == s.name(2) and torch.equal(load(latest)["w"], torch.full((2,), 2.0))
    save_state(tmp_path / "st.pt", {"a": torch.arange(3)})
    assert torch.equal(torch.load(tmp_path / "st.pt", weights_only=True)["a"], torch.arange(3))
    assert s.find_latest(tmp_path / "nothing", load) is None


def test_rng_capture_restore_round_trip_through_a_weights_only_file(tmp_path):
    seeding.seed_everything(5)
    state = seeding.capture_rng()
    torch.save(state, tmp_path / "rng.pt")
    a = (torch.rand(3), np.random.rand(3), random.random())
    seeding.restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True))
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_seeding_is_deterministic_and_rank_dependent():
    assert seeding.epoch_seed(0, 3, 1) == seeding.epoch_seed(0, 3, 1)
    assert len({seeding.epoch_seed(0, e, r) for e in range(4) for r in range(4)}) == 16
    seeding.seed_everything(11)
    x = torch.randn(4)
    seeding.seed_everything(11)
    assert torch.equal(x, torch.randn(4))


def test_tensorboard_and_progress_hooks(tmp_path):
    class Rec(loop.HookBase):
        def after_epoch(self):
            self.trainer.epoch_record.update({"epoch": self.trainer.epoch, "loss": 0.5, "flag": True})

    t = _Toy([])
    bar = loop.Progress(lambda e: f"epoch {e}", enabled=False)
    t.epoch_batches = lambda: bar.wrap([0, 1], total=2)
    tb = loop.TensorBoardEpoch(tmp_path / "tb")
    t.register_hooks([bar, Rec(), tb])
    t.train(0, 2)
    assert t.seen == [(0, 0), (0, 1), (1, 0), (1, 1)] and bar.bar is None and tb.writer is None
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
