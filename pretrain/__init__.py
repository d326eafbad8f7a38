"""MoPro pretraining (imported as ``mopro_bench.pretrain``): model, losses, noise cleaning, trainer, cRT."""
