"""The one training engine: LR schedules, precision, distributed helpers, seeding, resumable state and a loop with
hooks (detectron2's ``TrainerBase`` + ``HookBase`` shape). Pretraining (:mod:`mopro_bench.pretrain.trainer`),
finetuning / linear probes (:mod:`mopro_bench.tasks.imagenet.finetune`) and cRT (:mod:`mopro_bench.pretrain.crt`) use
these pieces; what stays in each of them is its step.

Layering: the engine sits above the base (errors, io, config, runtime) and below tasks and pretrain; it imports
nothing from them.
"""

from mopro_bench.engine.loop import HookBase, TrainerBase
from mopro_bench.engine.precision import PRECISIONS, autocast, check_precision, exact_fp32
from mopro_bench.engine.schedule import constant_lr, cosine_lr, epoch_lr, set_lr, step_lr, warmup_factor

__all__ = ["PRECISIONS", "HookBase", "TrainerBase", "autocast", "check_precision", "constant_lr", "cosine_lr", "epoch_lr",
           "exact_fp32", "set_lr", "step_lr", "warmup_factor"]
