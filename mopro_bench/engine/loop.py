"""The training loop with hooks, in detectron2's shape (``engine/train_loop.py`` + ``hooks.py``), by epochs.

:class:`TrainerBase` owns the loop; a subclass supplies ``epoch_batches()`` (the data of the current epoch) and
``run_step(batch)`` (the method's step -- the only per-method code). Hooks see the trainer and run, in
registration order, at ``before_train``, ``before_epoch``, ``before_step``, ``after_step``, ``after_epoch`` and
(always, also after an exception) ``after_train``; ``after_*`` hooks of one event run in registration order too
(as detectron2's). A hook may set ``trainer.stop_requested`` to end the loop after the current step.

Provided hooks: :class:`LRSchedule` (the epoch's LR into the optimizer), :class:`DivergenceGuard` (a non-finite
step loss stops the run with the caller's error), :class:`EpochCallback` (checkpointing, logging: a function of the
trainer after every epoch), :class:`TensorBoardEpoch` (scalars of ``trainer.epoch_record``) and
:class:`Progress` (a tqdm bar over the epoch's batches, main process only).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

__all__ = ["DivergenceGuard", "EpochCallback", "HookBase", "LRSchedule", "Progress", "TensorBoardEpoch", "TrainerBase"]


class HookBase:
    """Base class of hooks; ``self.trainer`` is set by :meth:`TrainerBase.register_hooks`."""

    trainer: TrainerBase

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_epoch(self) -> None:
        pass

    def after_epoch(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass


class TrainerBase:
    """An epoch loop with hooks. State visible to hooks: ``epoch`` (0-based, the current one), ``start_epoch``,
    ``max_epochs``, ``iter`` (steps done in this run), ``step_loss`` (what ``run_step`` returned, if anything),
    ``epoch_record`` (a dict the subclass or hooks fill for the epoch), ``stop_requested``."""

    def __init__(self) -> None:
        self._hooks: list[HookBase] = []
        self.epoch = 0
        self.start_epoch = 0
        self.max_epochs = 0
        self.iter = 0
        self.step_loss: Any = None
        self.epoch_record: dict[str, Any] = {}
        self.stop_requested = False

    def register_hooks(self, hooks: Iterable[HookBase | None]) -> None:
        for h in hooks:
            if h is None:
                continue
            h.trainer = self
            self._hooks.append(h)

    @property
    def hooks(self) -> list[HookBase]:
        return list(self._hooks)

    # ---- the loop ----------------------------------------------------------------------------------------
    def train(self, start_epoch: int, max_epochs: int) -> None:
        self.start_epoch, self.max_epochs = start_epoch, max_epochs
        self.epoch = start_epoch
        try:
            self._call("before_train")
            for self.epoch in range(start_epoch, max_epochs):
                self.epoch_record = {}
                self._call("before_epoch")
                for batch in self.epoch_batches():
                    self._call("before_step")
                    self.step_loss = self.run_step(batch)
                    self.iter += 1
                    self._call("after_step")
                    if self.stop_requested:
                        break
                self._call("after_epoch")
                if self.stop_requested:
                    break
        finally:
            self._call("after_train")

    def _call(self, event: str) -> None:
        for h in self._hooks:
            getattr(h, event)()

    # ---- per method --------------------------------------------------------------------------------------
    def epoch_batches(self) -> Iterable[Any]:
        raise NotImplementedError

    def run_step(self, batch: Any) -> Any:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------- hooks
class LRSchedule(HookBase):
    """Before every epoch: ``lr_fn(epoch)`` -> one LR for every group, or a sequence with one LR per group.
    The epoch's LR(s) are left in ``trainer.lr`` (a float, or a list)."""

    def __init__(self, optimizer: torch.optim.Optimizer, lr_fn: Callable[[int], float | Sequence[float]]):
        self.optimizer, self.lr_fn = optimizer, lr_fn

    def before_epoch(self) -> None:
        lr = self.lr_fn(self.trainer.epoch)
        if isinstance(lr, (int, float)):
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            self.trainer.lr = lr
        else:
            lrs = list(lr)
            for g, v in zip(self.optimizer.param_groups, lrs):
                g["lr"] = v
            self.trainer.lr = lrs


class DivergenceGuard(HookBase):
    """After every step: a non-finite ``trainer.step_loss`` raises ``make_error(trainer)``."""

    def __init__(self, make_error: Callable[[TrainerBase], BaseException]):
        self.make_error = make_error

    def after_step(self) -> None:
        loss = self.trainer.step_loss
        if loss is None:
            return
        finite = bool(torch.isfinite(loss).all()) if torch.is_tensor(loss) else math.isfinite(float(loss))
        if not finite:
            raise self.make_error(self.trainer)


class EpochCallback(HookBase):
    """After every epoch: ``fn(trainer)`` (checkpointing, printing the epoch line, ...)."""

    def __init__(self, fn: Callable[[TrainerBase], None]):
        self.fn = fn

    def after_epoch(self) -> None:
        self.fn(self.trainer)


class TensorBoardEpoch(HookBase):
    """After every epoch: every number in ``trainer.epoch_record`` (except the epoch) as ``<prefix>/<key>`` at step
    ``record[step_key]``. A logging failure disables logging with a warning; it never ends a run."""

    def __init__(self, log_dir, prefix: str = "epoch", step_key: str = "epoch", enabled: bool = True):
        self.log_dir, self.prefix, self.step_key, self.enabled = log_dir, prefix, step_key, enabled
        self.writer = None

    def before_train(self) -> None:
        if not self.enabled or self.log_dir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.log_dir))
        except Exception as e:  # pragma: no cover - tensorboard missing or broken
            print(f"warning: no TensorBoard log ({type(e).__name__}: {e})", file=sys.stderr)

    def after_epoch(self) -> None:
        if self.writer is None:
            return
        rec = self.trainer.epoch_record
        try:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != self.step_key:
                    self.writer.add_scalar(f"{self.prefix}/{k}", v, rec[self.step_key])
            self.writer.flush()
        except Exception as e:
            print(f"warning: TensorBoard logging stopped ({type(e).__name__}: {e})", file=sys.stderr)
            self.after_train()

    def after_train(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:  # pragma: no cover
                pass
            self.writer = None


class Progress(HookBase):
    """Wraps nothing itself: a trainer's ``epoch_batches`` may pass its loader through :meth:`wrap` (tqdm, disabled
    unless ``enabled``); the bar is closed after the epoch."""

    def __init__(self, desc: Callable[[int], str], enabled: bool):
        self.desc, self.enabled = desc, enabled
        self.bar = None

    def wrap(self, iterable: Iterable[Any], total: int | None = None, **tqdm_kw: Any) -> Iterable[Any]:
        from tqdm import tqdm

        self.bar = tqdm(iterable, total=total, desc=self.desc(self.trainer.epoch), disable=not self.enabled, leave=False,
                        **tqdm_kw)
        return self.bar

    def after_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def after_train(self) -> None:
        self.after_epoch()
