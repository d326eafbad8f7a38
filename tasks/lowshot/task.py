"""Low-shot linear SVMs on frozen features: VOC07 (mAP) and Places205 (top-1).

Protocols (every constant is a field of the protocol dataclass and lands in the result record):

* ``voc_lowshot@mopro`` (default): pooled features, each divided by (L2 norm + 1e-5). For k in {1, 2, 4, 8, 16} and
  5 samples per k: for each of the 20 classes draw k trainval images positive for it; the training set is the
  concatenation (an image can appear twice; difficult = negative). One binary SVM per class (squared hinge, L2,
  C = 0.5, class weight {+1: 2, -1: 1}, regularised bias with intercept_scaling 1). AP on the whole VOC07 test set
  (difficult = negative), all-point interpolated; mean over classes, then mean +- std over the samples.
* ``voc_lowshot@goyal19`` (v2): Goyal et al. 2019 / VISSL settings -- res5 maps average-pooled as VISSL does
  (AvgPool2d(6, 1) -> 2x2x2048 = 8192-d; ``--set feature_layer=res4``: AvgPool2d(8, 3) -> 3x3x1024 = 9216-d),
  Resize([224, 224]) (the whole image, aspect ratio not kept, as VISSL), per class k positives and 19k negatives
  (difficult ignored at train and test),
  class weight {+1: 2, -1: 1}, k in {1, 2, 4, 8, 16, 32, 64, 96}; the cost from {0.01, ..., 1000} chosen by
  stratified cross-validation inside each training sample (honest default). A dataset with too few images for a k
  (the generated tiny VOC for k >= 8) is refused up front (exit 2, naming k and the largest k it supports).
* ``voc_lowshot@goyal19-published`` (v2): the same, but the cost with the best mean *test* mAP per k, as the
  original benchmark reported it -- labelled ``test-set (as published)`` in the result.
* ``places_lowshot@mopro`` (default): k images per class of the 205, one-vs-rest SVMs (C = 0.5, no class weights),
  top-1 accuracy on the whole val set.
* ``voc_lowshot@mopro-vit`` / ``places_lowshot@mopro-vit``: the ``@mopro`` constants on a Vision Transformer's CLS
  token after the final LayerNorm (DINO's k-NN / linear evaluation feature, MoCo v3's linear probe), images resized
  with DINO's evaluation transform, Resize(256, bicubic) + CenterCrop(224).

Backbone families (``Protocol.families``; another family is refused before anything runs, exit 2): ``@mopro`` takes
ResNets and ConvNeXts (the pooled feature: GAP of res5 / GAP through ConvNeXt's head LayerNorm), the goyal19 protocols
ResNets only (VISSL-pooled ResNet stages), ``@mopro-vit`` ViTs only. ``details.backbone`` records the family and the
feature the SVMs saw.

All classes x samples x costs of one k are solved as one batched problem (:mod:`mopro_bench.tasks.lowshot.svm`, exact liblinear
primal, CPU or GPU); ``--solver sklearn`` runs sklearn's LinearSVC as the reference. Solver constants are checked
(``torch_max_iter``/``max_iter`` >= 1, tolerances > 0, costs > 0, ...: exit 2). Convergence is counted per problem
(``details.solver.by_k[k].converged / not_converged``): if none converged the run stops (exit 2); if some did not,
their last iterate is used, a warning is printed and a note lands in ``details.selection_notes``. Features come from the on-disk
cache (:mod:`mopro_bench.features`), so a second evaluation of the same checkpoint extracts nothing.
"""

from __future__ import annotations

from pathlib import Path

from mopro_bench.registry import Option, Protocol, RunContext, Task, TaskOutput
from mopro_bench.tasks.lowshot.engine import LowShotEngine
from mopro_bench.tasks.lowshot.features import check_feature_layer, feature_record
from mopro_bench.tasks.lowshot.places import PlacesLowShotData
from mopro_bench.tasks.lowshot.protocols import PLACES_PROTOCOLS, VOC_PROTOCOLS, check_protocol
from mopro_bench.tasks.lowshot.voc import VOCLowShotData


class LowShotTask(Task):
    """A low-shot SVM task: its protocols and a per-dataset object (``data_cls``) that :class:`LowShotEngine` drives."""

    data_cls: type = type(None)  # VOCLowShotData / PlacesLowShotData: built per run from (model, root, protocol, ctx)
    higher_is_better = {}
    options = (
        Option("splits", "low-shot: use this splits JSON instead of drawing from --seed", one_task=True),
        Option("save_splits", "low-shot: write the drawn splits JSON here", one_task=True),
        Option("solver", "low-shot SVM solver (default torch)", choices=("torch", "sklearn"), default="torch"),
    )

    def run(self, model, data_root: Path, protocol: Protocol, ctx: RunContext) -> TaskOutput:
        check_protocol(protocol)
        check_feature_layer(protocol, model)
        backbone = feature_record(model, protocol)
        data = self.data_cls(model, data_root, protocol, ctx)
        return LowShotEngine(self.name, self.protocols).run(data, protocol, ctx, model_name=model.name, backbone=backbone)


class VOCLowShot(LowShotTask):
    name = "voc_lowshot"
    description = "low-shot linear SVMs on frozen features, PASCAL VOC07 classification (mAP vs k)"
    data_kind = "voc07"
    splits = ("trainval", "test")
    protocols = VOC_PROTOCOLS
    default_protocol = "mopro"
    metrics = ("mAP_k1", "mAP_k2", "mAP_k4", "mAP_k8", "mAP_k16", "mAP_k32", "mAP_k64", "mAP_k96")  # k > 16: goyal19
    data_cls = VOCLowShotData


class PlacesLowShot(LowShotTask):
    name = "places_lowshot"
    description = "low-shot linear SVMs (one-vs-rest) on frozen features, Places205 (top-1 vs k)"
    data_kind = "places205"
    splits = ("train", "val")
    protocols = PLACES_PROTOCOLS
    default_protocol = "mopro"
    metrics = ("top1_k1", "top1_k2", "top1_k4", "top1_k8", "top1_k16")
    data_cls = PlacesLowShotData


VOC_LOWSHOT = VOCLowShot()
PLACES_LOWSHOT = PlacesLowShot()
