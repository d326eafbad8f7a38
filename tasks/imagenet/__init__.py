"""ImageNet tasks: 1%/10% semi-supervised finetuning, linear probe, and scoring a classifier on ImageNet/WebVision val.

The family's home, one concern per module (protocol prose: ``tasks/imagenet/README.md``):

* :mod:`.protocols` -- the frozen protocol dataclasses, the protocol tables and the checks of their values;
* :mod:`.task` -- the five Task objects and the helpers they share;
* :mod:`.vit` -- the ViT machinery: linear-probe features and schedule, iBOT's semi-supervised recipe;
* :mod:`.scoring` -- per-image top-1/top-5 hits (evaluation, the trainer that keeps them, the record format);
* :mod:`.finetune` -- the supervised training loop (finetuning, linear probes) and the linear head on cached features;
* :mod:`.subsets` -- the labelled subsets (SimCLR lists, seeded class-balanced draws, the as-released draws).
"""

from mopro_bench.tasks.imagenet.task import IMAGENET_1PCT, IMAGENET_10PCT, IMAGENET_LINEAR, IMAGENET_VAL, WEBVISION_VAL

__all__ = ["IMAGENET_1PCT", "IMAGENET_10PCT", "IMAGENET_LINEAR", "IMAGENET_VAL", "WEBVISION_VAL"]
