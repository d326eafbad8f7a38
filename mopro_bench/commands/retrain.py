"""`mopro-bench retrain`: classifier retraining (cRT) on cleaned labels, backbone frozen."""

from __future__ import annotations

from mopro_bench.config import parse_set_args

HELP = "classifier retraining (cRT) on cleaned labels, backbone frozen"
DESCRIPTION = """Retrain the classifier of a MoPro checkpoint on noise-cleaned labels (cRT): backbone frozen,
classifier initialised from the checkpoint's, square-root class-balanced sampling. Defaults are the authors'
classifier_retrain.py: 16 epochs, lr 0.01 x0.1 at epochs 5 and 10, momentum 0.9, weight decay 0, batch 256, crops of
scale 0.2-1. Writes OUT/checkpoint_crt.pth.tar in the pretraining checkpoint format (usable by eval/inspect/export)
and OUT/crt_log.json. Settings (--set FIELD=VALUE): epochs, lr, schedule (step|cos|const), milestones, gamma,
momentum, weight_decay, batch_size (global; at most the number of images in --annotation), sampling (sqrt|class),
crop_scale, image_size, seed, eval_every."""


def add_parser(sub, parents):
    p = sub.add_parser("retrain", parents=parents, help=HELP, description=DESCRIPTION)
    p.add_argument("--data", required=True, help="WebVision root")
    p.add_argument("--ckpt", required=True, help="checkpoint written by `mopro-bench pretrain`")
    p.add_argument("--annotation", required=True, help="pseudo-label JSON written by `mopro-bench noise-clean`")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="e.g. lr=0.01, epochs=10 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from mopro_bench.pretrain.crt import retrain

    overrides = parse_set_args(args.set)
    overrides.setdefault("seed", args.seed)
    r = retrain(args.data, args.ckpt, args.annotation, args.out, overrides=overrides, device=args.device,
                workers=args.workers, progress=not args.no_progress)
    print(f"cRT checkpoint: {r.checkpoint}")
    return 0
