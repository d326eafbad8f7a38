"""`mopro-bench demo`: generated data -> tiny MoPro pretrain -> every task for it and a random baseline -> leaderboard."""

from __future__ import annotations

from mopro_bench.runtime import resolve_device

HELP = "generate data, pretrain a tiny MoPro, evaluate it and a random baseline on every task, print the leaderboard"
DESCRIPTION = """Generate every dataset layout at --scale (default tiny) under OUT/data, pretrain a ResNet-18 MoPro on the
generated WebVision (30% flipped labels, 10% out-of-distribution images) for --epochs, clean its labels against the
kept-aside truth, evaluate it and random:resnet18 on every task (32-pixel crops and short schedules: protocol ids
get a +hash suffix), and print the leaderboard (OUT/leaderboard). CPU: a few minutes on 2 cores; --device cuda uses a
GPU. Re-running reuses OUT's data and checkpoint."""


def add_parser(sub, parents):
    p = sub.add_parser("demo", parents=parents, help=HELP, description=DESCRIPTION)
    p.add_argument("--out", default="demo_out", help="output folder (default: %(default)s)")
    p.add_argument("--scale", choices=["tiny", "small"], default="tiny",
                   help="generated dataset size (default: tiny -- the CPU budget; small gives steadier numbers)")
    p.add_argument("--epochs", type=int, default=12, help="MoPro pretraining epochs (default: %(default)s)")
    p.add_argument("--detection", choices=["auto", "on", "off"], default="auto",
                   help="run coco_maskrcnn (auto: when detectron2 is installed)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from mopro_bench.demo import run_demo

    device = resolve_device(args.device)
    report = run_demo(args.out, scale=args.scale, epochs=args.epochs, device=str(device), seed=args.seed,
                      workers=0 if device.type == "cpu" else args.workers, cache_dir=None, detection=args.detection,
                      progress=not args.no_progress)
    print()
    print(report.leaderboard)
    for s in report.skipped:
        print(f"skipped: {s}")
    for f in report.failures:
        print(f"FAILED: {f}")
    total = next((s["seconds"] for s in report.steps if s["step"] == "total"), None)
    print(f"demo finished in {total:.0f}s; results in {report.out / 'results'}, tables and plots in {report.out / 'leaderboard'}")
    return 1 if report.failures else 0
