"""Robustness and calibration of a 1000-way classifier: ImageNet-R, ImageNet-A, ImageNet val calibration.

The family's home: protocols and tasks (:mod:`.task`) and the reliability diagrams (:mod:`.plots`). Protocol prose:
``tasks/robustness/README.md``.
"""

from mopro_bench.tasks.robustness.task import IMAGENET_A, IMAGENET_R, IMAGENET_VAL_CALIBRATION

__all__ = ["IMAGENET_A", "IMAGENET_R", "IMAGENET_VAL_CALIBRATION"]
