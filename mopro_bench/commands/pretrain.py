"""`mopro-bench pretrain`: train MoPro on WebVision-format data (CPU, one GPU, torchrun, Slurm)."""

from __future__ import annotations

import json

from mopro_bench.config import field_names, parse_set_args
from mopro_bench.errors import BenchError

HELP = "train MoPro on WebVision-format data (CPU, one GPU, torchrun)"
DESCRIPTION = """Train MoPro (Li, Xiong & Hoi, ICLR 2021) on a WebVision-layout dataset. Defaults are the paper's
(ResNet-50, batch 256, lr 0.1, 90 epochs, queue 8192, ...) and, where it is silent, the authors' code's (fp32,
strong view grayscale -> colour jitter -> flip, 64-channel stem on wide ResNets); change any setting with
--set section.field=value (`--print-config` shows them all). Runs on CPU, one GPU, or many GPUs/nodes under
`torchrun --nproc-per-node N -m mopro_bench pretrain ...` (data.batch_size is the global batch). Checkpoints go to
--out every epoch (and every ckpt.every_steps steps); --resume auto continues the newest one (same train list
only); SIGTERM/SIGUSR1 save and exit cleanly. A non-finite loss stops the run with exit 2 and keeps the last good
checkpoint; a collapse of noise cleaning is reported as a warning."""


def add_parser(sub, parents):
    p = sub.add_parser("pretrain", parents=parents, help=HELP, description=DESCRIPTION)
    p.add_argument("--data", help="WebVision root (info/, google/, flickr/, val_images_256/)")
    p.add_argument("--out", help="run directory: checkpoints, config.json, log.json, train_log.jsonl, tb/")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="override a config field, e.g. optim.lr=0.05 (repeatable)")
    p.add_argument("--arch", help="shorthand for model.arch/model.width, e.g. resnet18, resnet50x2")
    p.add_argument("--epochs", type=int, help="shorthand for optim.epochs")
    p.add_argument("--batch-size", type=int, help="shorthand for data.batch_size (the global batch)")
    p.add_argument("--image-size", type=int, help="shorthand for aug.image_size (default 224; 32-64 for quick CPU runs)")
    p.add_argument("--annotation", help="train on this pseudo-label JSON instead of the layout's train lists")
    p.add_argument("--imagenet", metavar="ROOT", help="also report ImageNet val top-1/top-5 every epoch")
    p.add_argument("--resume", metavar="auto|FILE", help="continue from the newest checkpoint in --out (auto) or a file")
    p.add_argument("--compile", action="store_true", help="torch.compile the query encoder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--print-config", action="store_true", help="print the resolved config (every --set field) and exit")
    s = p.add_argument_group("Slurm (needs the `slurm` extra: pip install 'mopro-bench[slurm]')")
    s.add_argument("--slurm", action="store_true", help="submit the run to Slurm through submitit instead of running it")
    s.add_argument("--slurm-nodes", type=int, default=1)
    s.add_argument("--slurm-gpus-per-node", type=int, default=8)
    s.add_argument("--slurm-cpus-per-task", type=int, default=10)
    s.add_argument("--slurm-partition")
    s.add_argument("--slurm-time", type=int, default=72 * 60, help="minutes per job (requeued on timeout/preemption)")
    s.add_argument("--slurm-mem-gb", type=int, default=0, help="0 = the partition's default")
    s.add_argument("--slurm-account")
    s.add_argument("--slurm-constraint")
    p.set_defaults(func=run)
    return p


def build_overrides(args) -> dict:
    from mopro_bench.backbones import parse_arch

    ov = parse_set_args(args.set)
    if args.arch:
        arch, width = parse_arch(args.arch)
        ov.setdefault("model.arch", arch)
        ov.setdefault("model.width", width)
    for flag, key in (("epochs", "optim.epochs"), ("batch_size", "data.batch_size"), ("image_size", "aug.image_size"),
                      ("annotation", "data.annotation")):
        if getattr(args, flag) is not None:
            ov.setdefault(key, getattr(args, flag))
    if args.compile:
        ov.setdefault("run.compile", True)
    return ov


def run(args) -> int:
    """The config is resolved once, here: the overrides over the defaults, or -- with ``--resume`` and an ``--out``
    holding the run -- over the resumed run's saved config (``--print-config`` prints exactly what would train)."""
    from mopro_bench.pretrain.config import PretrainConfig, RunConfig, make_config

    overrides = build_overrides(args)
    base = PretrainConfig(run=RunConfig(seed=args.seed))
    if args.print_config:
        if args.out and args.resume:
            from mopro_bench.pretrain.trainer import resolve_run

            cfg = resolve_run(overrides, args.out, args.resume, base).cfg
        else:
            cfg = make_config(overrides, base)
        print(json.dumps(cfg.to_dict(), indent=2))
        print("# fields: " + " ".join(field_names(cfg)))
        return 0
    if not args.data or not args.out:
        raise BenchError("pretrain needs --data ROOT and --out DIR",
                         "e.g. mopro-bench pretrain --data webvision/ --out runs/mopro")
    if args.slurm:  # the job resolves its config when it starts (it resumes whatever the queue left in --out)
        make_config(overrides, base)  # fail fast on a bad --set before submitting
        from mopro_bench.pretrain.slurm import submit

        job = submit(args, overrides)
        print(f"submitted Slurm job {job.job_id}; logs in {args.out}/slurm")
        return 0
    from mopro_bench.pretrain.trainer import resolve_run, run_pretrain

    resolved = resolve_run(overrides, args.out, args.resume, base)  # fails fast on a bad --set, before devices or data
    result = run_pretrain(overrides, args.data, args.out, device=args.device, workers=args.workers, resume=args.resume,
                          imagenet=args.imagenet, progress=not args.no_progress, base_config=base, run=resolved)
    if result.status == "done" and result.is_main:
        print(f"done: {result.step} steps; checkpoint {result.checkpoint}")
        if result.warnings:
            epochs = [r["epoch"] for r in result.history if r.get("warning")]
            print(f"warning: noise cleaning looked collapsed in {len(epochs)} epoch(s) ({', '.join(map(str, epochs))}); "
                  f"see the first warning above and {args.out}/log.json before using this checkpoint or its noise-clean")
    return 0
