"""Low-shot linear SVMs on frozen features: VOC07 (``voc_lowshot``) and Places205 (``places_lowshot``).

The family's home, one concern per module (protocol prose: ``tasks/lowshot/README.md``):

* :mod:`.protocols` -- the frozen protocol dataclasses, the protocol tables and ``check_protocol``;
* :mod:`.engine` -- :class:`~.engine.LowShotDataset` (what a dataset supplies: draw a sample, check a sample, training
  features for k, binary problems of a sample, score) and :class:`~.engine.LowShotEngine` (splits, batched solve, cost
  selection, aggregation, record pieces), the same loop for every dataset;
* :mod:`.voc`, :mod:`.places` -- the per-dataset objects of VOC07 (mAP) and Places205 (top-1);
* :mod:`.features` -- frozen features (pooled output or VISSL-pooled ResNet stages), checked and L2-normalised;
* :mod:`.solve` -- groups of binary problems fitted in batches, convergence checks, cross-validated cost selection;
* :mod:`.svm` -- the batched exact liblinear-primal solver (and sklearn's LinearSVC as the reference);
* :mod:`.splits` -- the seeded split drawing and splits files; :mod:`.plots` -- the curve figure;
* :mod:`.task` -- the two Task objects wiring each dataset object to the engine.
"""

from mopro_bench.tasks.lowshot.task import PLACES_LOWSHOT, VOC_LOWSHOT

__all__ = ["PLACES_LOWSHOT", "VOC_LOWSHOT"]
