"""Slurm launcher through submitit (optional dependency: ``pip install 'mopro-bench[slurm]'``).

``mopro-bench pretrain --data ROOT --out DIR --slurm --slurm-nodes 2 --slurm-gpus-per-node 8`` submits one job with
one task per GPU. Each task exports torch.distributed's env:// variables (submitit's TorchDistributedEnvironment)
and runs the ordinary trainer with ``--resume auto``. Before the time limit, or on preemption, Slurm signals the
tasks (submitit asks for SIGUSR2); the trainer treats it like SIGTERM/SIGUSR1 -- every process stops after the
current step, rank 0 writes a checkpoint -- and rank 0 then requeues the job (``scontrol requeue``), which resumes
from that checkpoint. Not exercised by the test suite (no Slurm cluster); the trainer's signal path it relies on is.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from mopro_bench.errors import BenchError


class SlurmPretrain:
    """The pickled callable a Slurm task runs."""

    def __init__(self, overrides: dict[str, Any], data: str, out: str, imagenet: str | None, workers: int, seed: int):
        self.overrides, self.data, self.out, self.imagenet = overrides, data, out, imagenet
        self.workers, self.seed = workers, seed

    def __call__(self) -> str:
        import submitit

        from mopro_bench.pretrain.config import PretrainConfig, RunConfig
        from mopro_bench.pretrain.trainer import run_pretrain

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=True, overwrite=True)
        result = run_pretrain(self.overrides, self.data, self.out, device="auto", workers=self.workers, resume="auto",
                              imagenet=self.imagenet, progress=False, base_config=PretrainConfig(run=RunConfig(seed=self.seed)),
                              extra_signals=(signal.SIGUSR2,))
        if result.status == "preempted" and int(os.environ.get("SLURM_PROCID", "0")) == 0:
            job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
            if job:
                subprocess.run(["scontrol", "requeue", job], check=False)
        return result.status

    def checkpoint(self, *args, **kwargs):  # submitit's hook; our trainer saves on the signal itself
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def submit(args, overrides: dict[str, Any]):
    try:
        import submitit
    except ImportError:
        raise BenchError("--slurm needs submitit", "pip install 'mopro-bench[slurm]'") from None
    out = Path(args.out).expanduser().resolve()
    executor = submitit.AutoExecutor(folder=str(out / "slurm" / "%j"))
    params: dict[str, Any] = {
        "nodes": args.slurm_nodes, "tasks_per_node": args.slurm_gpus_per_node, "gpus_per_node": args.slurm_gpus_per_node,
        "cpus_per_task": args.slurm_cpus_per_task, "timeout_min": args.slurm_time, "name": "mopro-pretrain",
        "slurm_signal_delay_s": 180,
    }
    if args.slurm_partition:
        params["slurm_partition"] = args.slurm_partition
    if args.slurm_mem_gb:
        params["mem_gb"] = args.slurm_mem_gb
    extra = {}
    if args.slurm_account:
        extra["account"] = args.slurm_account
    if args.slurm_constraint:
        extra["constraint"] = args.slurm_constraint
    if extra:
        params["slurm_additional_parameters"] = extra
    executor.update_parameters(**params)
    workers = args.workers if args.workers is not None else args.slurm_cpus_per_task
    return executor.submit(SlurmPretrain(overrides, str(Path(args.data).expanduser().resolve()), str(out), args.imagenet,
                                         workers, args.seed))
