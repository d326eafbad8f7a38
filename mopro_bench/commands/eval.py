"""`mopro-bench eval`: score a checkpoint on a task@protocol and write one result record."""

from __future__ import annotations

from mopro_bench.config import parse_set_args
from mopro_bench.evaluate import DEFAULT_RESULTS_DIR, evaluate
from mopro_bench.runtime import resolve_device

DESCRIPTION = """Score a checkpoint on one task@protocol and write a result record (JSON, with full provenance) to
RESULTS_DIR/<task@protocol>/<name>-<sha8>-seed<N>.json. `--task voc_lowshot` runs the task's default protocol,
`--task voc_lowshot@goyal19` a named one (`mopro-bench tasks` lists them). `--set field=value` changes a protocol
constant; the result's protocol id then gets a +hash suffix so it never shares a leaderboard table with the
unmodified protocol."""


def add_parser(sub, parents):
    p = sub.add_parser("eval", parents=parents, help="score a checkpoint on a task@protocol", description=DESCRIPTION)
    p.add_argument("--ckpt", required=True, help="checkpoint file (MoPro, MoCo, PCL, SwAV, DINO, torchvision, timm, "
                                                  "detectron2 .pkl, ...) or random:ARCH (e.g. random:resnet50)")
    p.add_argument("--task", required=True, help="TASK or TASK@PROTOCOL")
    p.add_argument("--data", required=True, help="dataset root in its official layout")
    p.add_argument("--select", help="network to take from a file that holds several (encoder_q/encoder_k, teacher/student, "
                                    "...); same as --ckpt FILE#NETWORK")
    p.add_argument("--name", help="display name of the checkpoint on leaderboards (default: file name)")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a protocol constant (repeatable)")
    p.add_argument("--results-dir", default=str(DEFAULT_RESULTS_DIR), help="where result records go (default: %(default)s)")
    p.add_argument("--out", help="also write the result record to this file")
    p.add_argument("--batch-size", type=int, help="feature-extraction batch size (not a protocol constant)")
    p.add_argument("--work-dir", help="directory for a long run's own checkpoints (finetuning, detection)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a checkpoint that needs arbitrary pickled code (only for files you trust)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = p.add_argument_group("task options (each task accepts some of these)")
    g.add_argument("--splits", help="low-shot: use this splits JSON instead of drawing from --seed")
    g.add_argument("--save-splits", help="low-shot: write the drawn splits JSON here")
    g.add_argument("--solver", choices=["torch", "sklearn"], help="low-shot SVM solver (default torch)")
    g.add_argument("--head", help="robustness/ImageNet: a 1000-way head file written by imagenet_linear")
    g.add_argument("--subset-file", help="ImageNet semi-supervised: SimCLR-format subset list")
    g.add_argument("--save-head", help="imagenet_linear: write the trained head here")
    g.add_argument("--resume", action="store_true", help="continue an interrupted run from --work-dir")
    g.add_argument("--num-gpus", type=int, help="detection: processes (GPUs) per machine (default: all visible GPUs)")
    g.add_argument("--num-machines", type=int, help="detection: machines in a multi-machine run (default 1)")
    g.add_argument("--machine-rank", type=int, help="detection: this machine's rank, 0..num-machines-1")
    g.add_argument("--dist-url", help="detection: rendezvous of a multi-machine run, e.g. tcp://HOST0:PORT")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    options = {
        "splits": args.splits, "save_splits": args.save_splits, "solver": args.solver, "head": args.head,
        "subset_file": args.subset_file, "save_head": args.save_head, "resume": args.resume,
        "num_gpus": args.num_gpus, "num_machines": args.num_machines, "machine_rank": args.machine_rank,
        "dist_url": args.dist_url,
    }
    outcome = evaluate(
        args.ckpt, args.task, args.data, overrides=parse_set_args(args.set), device=resolve_device(args.device),
        seed=args.seed, workers=args.workers, cache_dir=args.cache_dir, results_dir=args.results_dir, out=args.out,
        options=options, name=args.name, batch_size=args.batch_size, work_dir=args.work_dir,
        progress=not args.no_progress, trust=args.trust_checkpoint, select=args.select,
    )
    rec = outcome.record
    from mopro_bench.runtime import rank

    if rank() != 0:
        return 0
    print(f"{rec['protocol']['id']}  {rec['checkpoint']['name']}  seed {rec['seed']}  ({rec['selection']})")
    for k, v in rec["metrics"].items():
        unit = rec.get("metric_units", {}).get(k, "")
        print(f"  {k:<20} {v:10.3f} {unit}")
    print(f"result: {outcome.path}")
    return 0
