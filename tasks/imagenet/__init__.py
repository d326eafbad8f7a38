"""ImageNet tasks: 1%/10% semi-supervised finetuning, linear probe, and scoring a classifier on ImageNet/WebVision val.

The family's home: protocols and tasks (:mod:`.task`), the finetuning loop (:mod:`.finetune`) and the labelled subsets
(:mod:`.subsets`). Protocol prose: ``tasks/imagenet/README.md``.
"""

from mopro_bench.tasks.imagenet.task import IMAGENET_1PCT, IMAGENET_10PCT, IMAGENET_LINEAR, IMAGENET_VAL, WEBVISION_VAL

__all__ = ["IMAGENET_1PCT", "IMAGENET_10PCT", "IMAGENET_LINEAR", "IMAGENET_VAL", "WEBVISION_VAL"]
