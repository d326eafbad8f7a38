"""Low-shot linear SVMs on frozen features: VOC07 (``voc_lowshot``) and Places205 (``places_lowshot``).

The family's home: protocols and the task (:mod:`.task`), the batched exact SVM solver (:mod:`.svm`) and the seeded
split drawing (:mod:`.splits`). Protocol prose: ``tasks/lowshot/README.md``.
"""

from mopro_bench.tasks.lowshot.task import PLACES_LOWSHOT, VOC_LOWSHOT

__all__ = ["PLACES_LOWSHOT", "VOC_LOWSHOT"]
