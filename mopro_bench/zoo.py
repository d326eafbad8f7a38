"""The model zoo: published checkpoints this field compares against, by name (``--ckpt zoo:NAME``): ResNet-50s
(MoPro, MoCo v1/v2, SwAV, DeepCluster-v2, DINO, PCL, torchvision), Vision Transformers (DINO ViT-S/16 and ViT-B/16,
MoCo v3 ViT-S and ViT-B) and a ConvNeXt-T (supervised ImageNet-1k).

Every entry's URL was copied from the authors' own page, named in ``url_source`` (README table or, for torchvision,
``torchvision/models/resnet.py``); none is guessed. ``format`` is the checkpoint adapter that reads the file
(``mopro-bench inspect --formats``) and ``select`` the network taken from files that hold several. ``arch`` is the
architecture the file holds (informative: the loader reads it from the tensors) and ``family`` its backbone family
(``resnet`` | ``vit`` | ``convnext``; derived from ``arch`` when not given), which decides the protocols that accept
it (``mopro-bench tasks``). ``published`` is the ``model`` column of the published numbers
(``mopro_bench/resources/published.csv``, package data) whose rows were measured on this checkpoint (None when that
file holds no numbers for it). Hashes: torchvision's file names carry the first hex digits of the file's SHA-256 (the
prefix ``torch.hub`` checks); MoCo's README publishes an md5 prefix per file. Files with no published hash (DINO's,
MoCo v3's, SwAV's, ...) are pinned by the SHA-256 of their first download (:mod:`mopro_bench.hub`).

Entries are data: :data:`ENTRIES` below. ``register(entry)`` adds one at run time (tests point an entry at a loopback
server this way), and the environment variable ``MOPRO_BENCH_ZOO`` names a JSON file with a list of extra entries (same
fields) for private checkpoints.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mopro_bench.errors import BenchError

ZOO_ENV = "MOPRO_BENCH_ZOO"
# mopro_bench.backbones.FAMILIES, repeated so that listing the zoo imports neither torch nor timm (a test checks they agree)
FAMILIES = ("resnet", "vit", "convnext")


def arch_family(arch: str) -> str | None:
    """The family of an architecture name, from its prefix as ``mopro_bench.backbones.parse_any_arch`` spells them
    (``resnet50x2`` -> resnet, ``vit_small_patch16_224`` -> vit, ``convnextv2_tiny`` -> convnext); None otherwise."""
    a = arch.strip().lower()
    if a.startswith("vit_"):
        return "vit"
    if a.startswith("convnext"):
        return "convnext"
    if a.startswith("resnet"):
        return "resnet"
    return None


@dataclass(frozen=True)
class ZooEntry:
    name: str  # zoo:NAME
    method: str  # e.g. "MoCo v2"
    url: str
    url_source: str  # where the URL was read (repository + file + section)
    format: str  # adapter name (mopro, moco, swav, dino, torchvision, ...)
    pretrain_data: str
    epochs: int | None
    citation: str
    arch: str = "resnet50"
    family: str | None = None  # resnet | vit | convnext; None = the family of ``arch``
    select: str | None = None  # network to take from two-network files
    published: str | None = None  # `model` in the published numbers (mopro_bench/resources/published.csv)
    sha256: str | None = None  # full SHA-256 when the publisher gives one
    md5_prefix: str | None = None  # MoCo's README: first 8 hex digits of the md5
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        implied = arch_family(self.arch)
        family = self.family or implied
        if family not in FAMILIES:
            raise BenchError(f"zoo entry {self.name!r}: family {self.family!r} (arch {self.arch!r}) is not a backbone family",
                             "give family: " + " | ".join(FAMILIES) + ", or an arch such as resnet50 / vit_small_patch16_224")
        if implied is not None and family != implied:
            raise BenchError(f"zoo entry {self.name!r}: family {family!r} disagrees with arch {self.arch!r} ({implied})",
                             "drop family (it follows from arch) or fix arch")
        object.__setattr__(self, "family", family)

    @property
    def filename(self) -> str:
        """The file name in the cache: the URL's last path component (unique across the zoo)."""
        return Path(urlsplit(self.url).path).name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_MOPRO_CITE = "Li, Xiong, Hoi. MoPro: Webly Supervised Learning with Momentum Prototypes. ICLR 2021 (arXiv:2009.07995)"
_MOPRO_SRC = "github.com/salesforce/MoPro README.md, 'Download MoPro Pre-trained ResNet-50 Models'"
_MOCO1_CITE = "He, Fan, Wu, Xie, Girshick. Momentum Contrast for Unsupervised Visual Representation Learning. CVPR 2020 " \
              "(arXiv:1911.05722)"
_MOCO2_CITE = "Chen, Fan, Girshick, He. Improved Baselines with Momentum Contrastive Learning. arXiv:2003.04297 (2020)"
_MOCO_SRC = "github.com/facebookresearch/moco README.md, 'Models' table (md5 column)"
_SWAV_CITE = "Caron, Misra, Mairal, Goyal, Bojanowski, Joulin. Unsupervised Learning of Visual Features by Contrasting " \
             "Cluster Assignments. NeurIPS 2020 (arXiv:2006.09882)"
_SWAV_SRC = "github.com/facebookresearch/swav README.md, 'Model Zoo' table"
_DINO_CITE = "Caron, Touvron, Misra, Jegou, Mairal, Bojanowski, Joulin. Emerging Properties in Self-Supervised Vision " \
             "Transformers. ICCV 2021 (arXiv:2104.14294)"
_DINO_SRC = "github.com/facebookresearch/dino README.md, 'Pretrained models' table (ResNet-50 row)"
_DINO_VIT_SRC = "github.com/facebookresearch/dino README.md, 'Pretrained models' table (ViT-S/16 and ViT-B/16 rows)"
_MOCO3_CITE = "Chen, Xie, He. An Empirical Study of Training Self-Supervised Vision Transformers. ICCV 2021 " \
              "(arXiv:2104.02057)"
_MOCO3_SRC = "github.com/facebookresearch/moco-v3 CONFIG.md, 'ViT Models' table (pretrain files column)"
_CONVNEXT_CITE = "Liu, Mao, Wu, Feichtenhofer, Darrell, Xie. A ConvNet for the 2020s. CVPR 2022 (arXiv:2201.03545)"
_CONVNEXT_SRC = "github.com/facebookresearch/ConvNeXt README.md, 'ImageNet-1K trained models' table (ConvNeXt-T row)"
_PCL_CITE = "Li, Zhou, Xiong, Hoi. Prototypical Contrastive Learning of Unsupervised Representations. ICLR 2021 " \
            "(arXiv:2005.04966)"
_PCL_SRC = "github.com/salesforce/PCL README.md, 'Download Pre-trained Models'"
_TV_CITE = "He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition. CVPR 2016; weights: torchvision " \
           "(pytorch/vision)"
_TV_SRC = "github.com/pytorch/vision torchvision/models/resnet.py, ResNet50_Weights"
_FB = "https://dl.fbaipublicfiles.com"
_IN1K = "ImageNet-1k train (1.28M images, labels unused)"

ENTRIES: tuple[ZooEntry, ...] = (
    ZooEntry("mopro_v1", "MoPro", "https://storage.googleapis.com/sfr-pcl-data-research/MoPro_checkpoint/MoPro_V1_epoch90.tar",
             _MOPRO_SRC, "mopro", "WebVision V1 (2.4M web images, 1000 ImageNet classes, noisy labels)", 90, _MOPRO_CITE,
             select="encoder_q", published="MoPro V1",
             notes="holds encoder_q/encoder_k, a 1000-way WebVision classifier (ImageNet class order) and prototypes"),
    ZooEntry("mopro_v2", "MoPro", "https://storage.googleapis.com/sfr-pcl-data-research/MoPro_checkpoint/MoPro_V2_epoch90.tar",
             _MOPRO_SRC, "mopro", "WebVision V2 (web images, 5000 classes, noisy labels)", 90, _MOPRO_CITE,
             select="encoder_q", published="MoPro V2", notes="classifier is 5000-way (WebVision V2 classes)"),
    ZooEntry("moco_v1_200ep", "MoCo v1", f"{_FB}/moco/moco_checkpoints/moco_v1_200ep/moco_v1_200ep_pretrain.pth.tar",
             _MOCO_SRC, "moco", _IN1K, 200, _MOCO1_CITE, select="encoder_q", md5_prefix="b251726a",
             notes="README linear top-1 60.6"),
    ZooEntry("moco_v2_200ep", "MoCo v2", f"{_FB}/moco/moco_checkpoints/moco_v2_200ep/moco_v2_200ep_pretrain.pth.tar",
             _MOCO_SRC, "moco", _IN1K, 200, _MOCO2_CITE, select="encoder_q", md5_prefix="59fd9945",
             notes="README linear top-1 67.7"),
    ZooEntry("moco_v2_800ep", "MoCo v2", f"{_FB}/moco/moco_checkpoints/moco_v2_800ep/moco_v2_800ep_pretrain.pth.tar",
             _MOCO_SRC, "moco", _IN1K, 800, _MOCO2_CITE, select="encoder_q", md5_prefix="a04e12f8",
             notes="README linear top-1 71.1"),
    ZooEntry("swav_800ep", "SwAV", f"{_FB}/deepcluster/swav_800ep_pretrain.pth.tar", _SWAV_SRC, "swav", _IN1K, 800,
             _SWAV_CITE, notes="batch 4096, multi-crop 2x224+6x96; README linear top-1 75.3"),
    ZooEntry("swav_400ep", "SwAV", f"{_FB}/deepcluster/swav_400ep_pretrain.pth.tar", _SWAV_SRC, "swav", _IN1K, 400,
             _SWAV_CITE, notes="batch 4096, multi-crop 2x224+6x96; README linear top-1 74.6"),
    ZooEntry("swav_200ep", "SwAV", f"{_FB}/deepcluster/swav_200ep_pretrain.pth.tar", _SWAV_SRC, "swav", _IN1K, 200,
             _SWAV_CITE, notes="batch 4096, multi-crop 2x224+6x96; README linear top-1 73.9"),
    ZooEntry("swav_100ep", "SwAV", f"{_FB}/deepcluster/swav_100ep_pretrain.pth.tar", _SWAV_SRC, "swav", _IN1K, 100,
             _SWAV_CITE, notes="batch 4096, multi-crop 2x224+6x96; README linear top-1 72.1"),
    ZooEntry("deepclusterv2_800ep", "DeepCluster-v2", f"{_FB}/deepcluster/deepclusterv2_800ep_pretrain.pth.tar", _SWAV_SRC,
             "swav", _IN1K, 800, _SWAV_CITE, notes="batch 4096, multi-crop 2x224+6x96; README linear top-1 75.2"),
    ZooEntry("dino_resnet50", "DINO", f"{_FB}/dino/dino_resnet50_pretrain/dino_resnet50_pretrain.pth", _DINO_SRC,
             "torchvision", _IN1K, None, _DINO_CITE,
             notes="'backbone only' file (torchvision names, no fc); README k-NN 67.5, linear 75.3; epochs: see the "
                   "release's args.txt (not stated in the README table)"),
    ZooEntry("dino_resnet50_full", "DINO",
             f"{_FB}/dino/dino_resnet50_pretrain/dino_resnet50_pretrain_full_checkpoint.pth", _DINO_SRC, "dino", _IN1K,
             None, _DINO_CITE, select="teacher",
             notes="'full checkpoint': teacher and student with projection heads (teacher is the evaluated network)"),
    # Vision Transformers. DINO's 'backbone only' files are the teacher's ViT in DINO's own names (timm's); the 'full
    # checkpoint' holds teacher and student with their DINO projection heads. Both ViTs are DINO's vit_small (6 heads,
    # DeiT-S) / vit_base (12 heads) at patch 16. MoCo v3's files hold base_encoder (evaluated: main_lincls.py loads
    # module.base_encoder) and momentum_encoder with their projection MLPs, plus the predictor; its vit_small has 12
    # heads (moco-v3 vits.py; DeiT-S has 6), which only the file's `arch` says.
    ZooEntry("dino_vits16", "DINO", f"{_FB}/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth", _DINO_VIT_SRC,
             "timm", _IN1K, None, _DINO_CITE, arch="vit_small_patch16_224", published="DINO ViT-S/16",
             notes="'backbone only' file (teacher ViT-S/16, no head); README k-NN 74.5, linear 77.0 (eval_linear.py: "
                   "CLS tokens of the last 4 blocks); epochs: see the release's args.txt"),
    ZooEntry("dino_vits16_full", "DINO",
             f"{_FB}/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain_full_checkpoint.pth", _DINO_VIT_SRC, "dino",
             _IN1K, None, _DINO_CITE, arch="vit_small_patch16_224", select="teacher",
             notes="'full ckpt': teacher and student ViT-S/16 with DINO projection heads (teacher is the evaluated "
                   "network, the same weights as dino_vits16)"),
    ZooEntry("dino_vitb16", "DINO", f"{_FB}/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth", _DINO_VIT_SRC,
             "timm", _IN1K, None, _DINO_CITE, arch="vit_base_patch16_224", published="DINO ViT-B/16",
             notes="'backbone only' file (teacher ViT-B/16, no head); README k-NN 76.1, linear 78.2 (eval_linear.py "
                   "with n_last_blocks 1 and the mean patch token, DINO's ViT-B setting); epochs: see args.txt"),
    ZooEntry("dino_vitb16_full", "DINO",
             f"{_FB}/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain_full_checkpoint.pth", _DINO_VIT_SRC, "dino",
             _IN1K, None, _DINO_CITE, arch="vit_base_patch16_224", select="teacher",
             notes="'full ckpt': teacher and student ViT-B/16 with DINO projection heads (teacher is the evaluated "
                   "network)"),
    ZooEntry("mocov3_vit_s_300ep", "MoCo v3", f"{_FB}/moco-v3/vit-s-300ep/vit-s-300ep.pth.tar", _MOCO3_SRC, "moco", _IN1K,
             300, _MOCO3_CITE, arch="vit_small_patch16_224", select="base_encoder", published="MoCo v3 ViT-S/16",
             notes="ViT-Small with 12 attention heads (moco-v3 vits.py), batch 4096, AdamW; CONFIG.md linear 73.2 "
                   "(main_lincls.py -a vit_small --lr 3)"),
    ZooEntry("mocov3_vit_b_300ep", "MoCo v3", f"{_FB}/moco-v3/vit-b-300ep/vit-b-300ep.pth.tar", _MOCO3_SRC, "moco", _IN1K,
             300, _MOCO3_CITE, arch="vit_base_patch16_224", select="base_encoder", published="MoCo v3 ViT-B/16",
             notes="ViT-Base (12 heads), batch 4096, AdamW; CONFIG.md linear 76.7 (main_lincls.py -a vit_base --lr 3)"),
    # ConvNeXt: the supervised ImageNet-1k ConvNeXt-T, in Facebook's layout ({"model": ...}; TRAINING.md: the released
    # files hold only that key) with its 1000-way head -- the checkpoint's own classifier for the robustness tasks
    ZooEntry("convnext_tiny_1k", "supervised", f"{_FB}/convnext/convnext_tiny_1k_224_ema.pth", _CONVNEXT_SRC, "convnext",
             "ImageNet-1k train (labels)", 300, _CONVNEXT_CITE, arch="convnext_tiny",
             notes="ConvNeXt-T, EMA weights, with its 1000-way ImageNet head; README acc@1 82.1 at 224 (its own "
                   "evaluation: bicubic resize to 224/0.875, centre crop 224); 300 epochs = main.py's default, which "
                   "TRAINING.md's ConvNeXt-T command keeps"),
    ZooEntry("pcl_v1", "PCL v1", "https://storage.googleapis.com/sfr-pcl-data-research/PCL_checkpoint/PCL_v1_epoch200.pth.tar",
             _PCL_SRC, "moco", _IN1K, 200, _PCL_CITE, select="encoder_q",
             notes="README: VOC low-shot SVM k=1..16 46.9/56.4/62.8/70.2/74.3, ImageNet linear 61.5"),
    ZooEntry("pcl_v2", "PCL v2", "https://storage.googleapis.com/sfr-pcl-data-research/PCL_checkpoint/PCL_v2_epoch200.pth.tar",
             _PCL_SRC, "moco", _IN1K, 200, _PCL_CITE, select="encoder_q", published="PCL v2",
             notes="README: VOC low-shot SVM k=1..16 47.9/59.6/66.2/74.5/78.3, ImageNet linear 67.6"),
    ZooEntry("tv_resnet50_v1", "supervised", "https://download.pytorch.org/models/resnet50-0676ba61.pth", _TV_SRC,
             "torchvision", "ImageNet-1k train (labels)", None, _TV_CITE, published="ImageNet supervised",
             notes="ResNet50_Weights.IMAGENET1K_V1 (acc@1 76.130, recipe github.com/pytorch/vision/tree/main/references/"
                   "classification#resnet); the standard supervised ResNet-50 of the 'ImageNet supervised' baseline rows "
                   "of published.csv (MoPro's robustness table)"),
    ZooEntry("tv_resnet50_v2", "supervised", "https://download.pytorch.org/models/resnet50-11ad3fa6.pth", _TV_SRC,
             "torchvision", "ImageNet-1k train (labels)", None, _TV_CITE,
             notes="ResNet50_Weights.IMAGENET1K_V2 (acc@1 80.858 evaluated at resize 232 / crop 224), torchvision's new "
                   "training recipe (github.com/pytorch/vision/issues/3995#issuecomment-1013906621)"),
)

_registered: dict[str, ZooEntry] = {}


def register(entry: ZooEntry | dict[str, Any], *, replace: bool = False) -> ZooEntry:
    """Add an entry at run time (a private checkpoint, or a test pointing at a loopback server)."""
    e = entry if isinstance(entry, ZooEntry) else entry_from_dict(entry)
    if not replace and e.name in {x.name for x in entries()}:
        raise BenchError(f"zoo entry {e.name!r} exists", "pick another name or pass replace=True")
    _registered[e.name] = e
    return e


def unregister(name: str) -> None:
    _registered.pop(name, None)


def entry_from_dict(d: dict[str, Any]) -> ZooEntry:
    known = {f.name for f in fields(ZooEntry)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise BenchError(f"zoo entry {d.get('name')!r} has unknown field(s) {', '.join(unknown)}",
                         f"use only {', '.join(sorted(known))}")
    missing = [f for f in ("name", "method", "url", "url_source", "format", "pretrain_data", "epochs", "citation") if f not in d]
    if missing:
        raise BenchError(f"zoo entry {d.get('name')!r} lacks {', '.join(missing)}", "give every required field")
    return ZooEntry(**d)


def _env_entries() -> list[ZooEntry]:
    path = os.environ.get(ZOO_ENV)
    if not path:
        return []
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BenchError(f"${ZOO_ENV}={path} is not a readable JSON file ({e})", f"fix the file or unset {ZOO_ENV}") from None
    if not isinstance(data, list):
        raise BenchError(f"${ZOO_ENV}={path} must hold a JSON list of entries", "write [{\"name\": ..., \"url\": ...}, ...]")
    return [entry_from_dict(d) for d in data]


def entries() -> list[ZooEntry]:
    """Built-in entries, then ``$MOPRO_BENCH_ZOO``'s, then registered ones (a later one with the same name wins)."""
    out: dict[str, ZooEntry] = {e.name: e for e in ENTRIES}
    for e in _env_entries():
        out[e.name] = e
    out.update(_registered)
    return list(out.values())


def get(name: str) -> ZooEntry:
    by_name = {e.name: e for e in entries()}
    if name in by_name:
        return by_name[name]
    import difflib

    close = difflib.get_close_matches(name, list(by_name), n=3)
    hint = f"did you mean {', '.join('zoo:' + c for c in close)}?" if close else "`mopro-bench zoo` lists the names"
    raise BenchError(f"no zoo checkpoint named {name!r}", hint)


def by_url(url: str) -> ZooEntry | None:
    """The zoo entry published at ``url`` (so a pasted zoo URL shares the zoo's cache file and hashes)."""
    for e in entries():
        if e.url == url:
            return e
    return None


def published_counts(path: str | Path | None = None) -> dict[str, int]:
    """Rows per ``model`` in ``published.csv`` (package data, so an installed wheel has it too; empty if a given
    ``path`` is missing)."""
    from mopro_bench.leaderboard import DEFAULT_PUBLISHED, load_published

    p = Path(path) if path else DEFAULT_PUBLISHED
    if not p.is_file():
        return {}
    counts: dict[str, int] = {}
    for row in load_published(p):
        counts[row.model] = counts.get(row.model, 0) + 1
    return counts
