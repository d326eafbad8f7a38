"""Checkpoint formats: one module per format, each holding its adapter (``ADAPTER``) and its detection priority.

:data:`FORMATS` (a :class:`mopro_bench.plugins.Registry`) lists the built-ins in code; third-party packages add theirs
under the entry-point group ``mopro_bench.formats`` (an :class:`~.base.Adapter` instance or class, entry-point name =
``adapter.name``). :func:`adapters` gives them in detection order (``priority``, lower first; ties keep registration
order): the loader (:mod:`mopro_bench.checkpoints.loader`) maps a file with the first whose ``detect`` accepts it.

============  ========  ===============================================================================================
format        priority  layout
============  ========  ===============================================================================================
``mopro``     10        MoPro reference ``{epoch, arch, state_dict, optimizer}`` with ``module.encoder_q.`` (and
                        ``encoder_k``), ``classifier``, ``fc1``/``fc2``, ``queue``, ``prototypes``; our pretrainer's files
``moco``      20        MoCo v1/v2 and PCL (``encoder_q``/``encoder_k``); MoCo v3 (``base_encoder``/``momentum_encoder``),
                        ResNet or ViT (``head`` MLP; ViT-S with 12 heads)
``dino``      30        DINO training checkpoint: ``teacher``/``student`` with ``module.backbone.``/``module.head.``,
                        ResNet or ViT
``mae``       33        MAE pre-training ``{model: encoder + decoder_*, mask_token}``: the encoder
``dinov2``    35        DINOv2 backbone release: bare ViT dict with ``mask_token``, LayerScale, 37x37 position grid
``convnext``  37        facebookresearch/ConvNeXt ``{model: {downsample_layers.*, stages.i.j.dwconv ...}}`` -> timm names
``detectron2``  40      ``{model: {stem.conv1.*, res2.0.conv1.* ...}}`` (numpy), also whole detectors
``caffe2``    50        Detectron/MSRA caffe2 blobs (``conv1_w``, ``res2_0_branch2a_w``, ``pred_w``), bare or under ``blobs``
``swav``      60        bare dict with ``module.`` plus ``projection_head.*`` and ``prototypes.*`` (DeepCluster-v2, SeLa-v2)
``timm``      70        timm training checkpoint ``{state_dict, state_dict_ema, arch, args, version ...}``; any timm-named
                        ViT / ConvNeXt dict, bare (HF hub ``model.safetensors``) or wrapped
``torchvision``  80     bare torchvision ResNet dict (supervised, DINO backbone-only, BYOL/SimCLR converted), optionally
                        wrapped and/or prefixed -- the generic fallback
============  ========  ===============================================================================================

Adding a format: write ``formats/<name>.py`` with an :class:`~.base.Adapter` subclass (``name``, ``description``,
``priority``, ``detect``, ``selects``, ``convert``) and ``ADAPTER = MyAdapter()``, add one line to
:data:`BUILTIN_FORMATS`, and a synth layout to :mod:`mopro_bench.checkpoints.synth` so the contract test
(``tests/test_contracts_formats.py``) round-trips it.
"""

from __future__ import annotations

from mopro_bench.checkpoints.formats.base import Adapter
from mopro_bench.plugins import Registry, named_instance

ENTRY_POINT_GROUP = "mopro_bench.formats"

BUILTIN_FORMATS: dict[str, str] = {
    name: f"mopro_bench.checkpoints.formats.{name}:ADAPTER"
    for name in ("mopro", "moco", "dino", "mae", "dinov2", "convnext", "detectron2", "caffe2", "swav", "timm", "torchvision")
}


FORMATS: Registry[Adapter] = Registry("checkpoint format", validate=named_instance(Adapter, "checkpoint Adapter"),
                                      hint="(`mopro-bench inspect --formats` describes them)")
for _name, _ref in BUILTIN_FORMATS.items():
    FORMATS.register(_name, _ref)


def adapters() -> tuple[Adapter, ...]:
    """Every registered format's adapter in detection order (priority, then registration order)."""
    FORMATS.load_entry_points(ENTRY_POINT_GROUP)
    return tuple(sorted((a for _, a in FORMATS.items()), key=lambda a: a.priority))


def format_names() -> tuple[str, ...]:
    return tuple(a.name for a in adapters())


__all__ = ["Adapter", "BUILTIN_FORMATS", "ENTRY_POINT_GROUP", "FORMATS", "adapters", "format_names"]
