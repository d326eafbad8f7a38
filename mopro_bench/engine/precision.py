"""Numerical precision: autocast contexts and the TF32 switches, as each training loop uses them.

* :func:`autocast` -- autocast to ``dtype`` on the device's type, or nothing for ``None`` (pretraining: bf16 on CUDA
  for ``run.precision`` auto/bf16, or on the CPU for bf16; cRT: the pretraining run's precision);
* :func:`precision_autocast` -- the finetuning spelling: ``"bf16"`` -> bf16 autocast, ``"fp32"`` -> nothing;
* :func:`exact_fp32` -- ``fp32`` on CUDA means TF32 off for cuDNN convolutions and matmuls while inside.
"""

from __future__ import annotations

import contextlib

import torch

from mopro_bench.errors import BenchError

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise BenchError(f"precision={precision!r} is unknown", "use --set precision=fp32 (the sources' setting) or bf16")


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast(device.type, dtype)``, or a null context for ``dtype=None``."""
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def precision_autocast(device: torch.device, precision: str = "fp32"):
    """bf16 autocast on ``device`` for ``precision="bf16"``; nothing for fp32."""
    check_precision(precision)
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def exact_fp32(device: torch.device, precision: str):
    """For ``precision="fp32"`` on CUDA: TF32 off for cuDNN convolutions and matmuls (restored afterwards), so fp32 means
    fp32 as on the pre-Ampere GPUs the published protocols ran on."""
    if precision != "fp32" or device.type != "cuda":
        yield
        return
    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old
