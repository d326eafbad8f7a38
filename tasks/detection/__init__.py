"""COCO instance detection/segmentation through detectron2 (the ``coco_maskrcnn`` task).

- :mod:`.task` -- the task and its protocols (``@mopro``, ``@mopro-short``, ``@moco_c4``).

- :mod:`.scoring` -- COCO box/mask AP of a detections file with pycocotools (no detectron2 needed), and the mapping
  of detectron2's ``COCOEvaluator`` output to the suite's metric names (``bbox_AP`` ... ``segm_APl``).
- :mod:`.config` -- the detectron2 config built from a protocol dataclass (nothing hand-edited).
- :mod:`.runner` -- dataset registration, the trainer, the process launch (one GPU, many GPUs, many machines; CPU),
  resume, and the evaluation; imports detectron2, so only the task's ``run`` imports it.
"""

from mopro_bench.tasks.detection.scoring import AP_KEYS, IOU_TYPES, METRICS, metrics_from_evaluator, score_detections
from mopro_bench.tasks.detection.task import COCO_MASKRCNN  # noqa: E402  (after scoring: task imports it lazily)

__all__ = ["COCO_MASKRCNN", "AP_KEYS", "IOU_TYPES", "METRICS", "metrics_from_evaluator", "score_detections"]
