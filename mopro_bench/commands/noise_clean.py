"""`mopro-bench noise-clean`: write the trained model's cleaned pseudo-labels for the train set."""

from __future__ import annotations

from mopro_bench.config import parse_set_args
from mopro_bench.runtime import resolve_device

HELP = "write the trained model's cleaned pseudo-labels for the train set"
DESCRIPTION = """Apply MoPro's noise-cleaning rule with a trained checkpoint to every training image (center crop):
soft label = alpha*softmax(classifier) + (1-alpha)*softmax(prototype logits); relabel when its max exceeds
pseudo_th; keep a sample if it was relabelled or its label's score exceeds 1/num_class. Writes
{"images": [...], "labels": [...]} with the kept samples only -- the train list of `retrain --annotation` and
`pretrain --annotation`. alpha, pseudo_th and temperature come from the checkpoint (change with --set mopro.alpha=...).
Warns when it would remove more than half of the images (a sign that cleaning collapsed during pretraining)."""


def add_parser(sub, parents):
    p = sub.add_parser("noise-clean", parents=parents, help=HELP, description=DESCRIPTION)
    p.add_argument("--data", required=True, help="WebVision root the checkpoint was trained on")
    p.add_argument("--ckpt", required=True, help="checkpoint written by `mopro-bench pretrain`")
    p.add_argument("--out", required=True, help="pseudo-label JSON to write (e.g. pseudo_label.json)")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="e.g. mopro.alpha=0.5, mopro.pseudo_th=0.8")
    p.add_argument("--batch-size", type=int, help="inference batch size (default data.val_batch_size)")
    p.add_argument("--annotation", help="clean this train list instead of the layout's")
    p.add_argument("--truth", help="generated data only: the .truth.json, to report label accuracy and removal rates")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from mopro_bench.pretrain.noise_clean import noise_clean

    s = noise_clean(args.data, args.ckpt, args.out, overrides=parse_set_args(args.set), device=resolve_device(args.device),
                    batch_size=args.batch_size, workers=args.workers, truth=args.truth, annotation=args.annotation,
                    progress=not args.no_progress)
    print(f"{s.total} images: kept {s.kept} ({100 - s.removed_pct:.2f}%), relabelled {s.relabelled} ({s.relabelled_pct:.2f}%), "
          f"removed {s.removed} ({s.removed_pct:.2f}%)")
    if s.truth:
        t = s.truth
        print(f"label accuracy (in-distribution images): given {t['label_accuracy_before_pct']:.2f}% -> "
              f"cleaned {t['label_accuracy_after_pct']:.2f}% (kept ones)")
        for kind, v in t["by_kind"].items():
            print(f"  {kind:<6} n={v['n']:<6} removed {v['removed_pct']:6.2f}%  "
                  f"correct label after {v['correct_after_pct']:6.2f}%")
    print(f"pseudo-labels: {s.out}")
    if s.warning:
        print(f"warning: {s.warning}", flush=True)
    if s.truth_error is not None:
        raise s.truth_error
    return 0
