"""Write a trunk in each third-party checkpoint layout (for tests, demos and other modules' tests).

Each writer follows the layout its project publishes (key names, wrappers, heads, training state), written here from
the published descriptions, independently of :mod:`.formats` (the detectron2 and ConvNeXt writers do their own
renaming) so that a round trip through an adapter tests the adapter. For :data:`LAYOUTS` ``trunk`` is a
torchvision-named ResNet state dict without ``fc``; for :data:`VIT_LAYOUTS` / :data:`CONVNEXT_LAYOUTS` it is a
timm-named ViT / ConvNeXt state dict without a classifier (a :func:`random_family` backbone's ``state_dict()``).
Heads and training state are random tensors from ``seed``.
"""

from __future__ import annotations

import argparse
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mopro_bench.io import atomic_torch_save, atomic_write_bytes

LAYOUTS = (
    "mopro", "mopro-bench", "moco-v1", "moco-v2", "pcl", "moco-v3", "swav", "dino", "dino-backbone", "torchvision",
    "torchvision-old", "timm", "timm-train", "byol", "simclr", "supervised-ddp", "detectron2-moco", "detectron2-msra",
    "detectron2-detector", "caffe2-msra", "safetensors",
)
VIT_LAYOUTS = ("dino-vit", "dino-vit-backbone", "moco-v3-vit", "mae", "dinov2", "timm-vit", "timm-train-vit")
CONVNEXT_LAYOUTS = ("convnext-fb", "timm-convnext", "timm-train-convnext")
FAMILY_LAYOUTS = VIT_LAYOUTS + CONVNEXT_LAYOUTS


def _rand(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g) * 0.02


def _linear(g: torch.Generator, prefix: str, out_f: int, in_f: int) -> dict[str, torch.Tensor]:
    return {f"{prefix}weight": _rand(g, out_f, in_f), f"{prefix}bias": _rand(g, out_f)}


def _bn(g: torch.Generator, prefix: str, n: int) -> dict[str, torch.Tensor]:
    return {f"{prefix}weight": 1 + _rand(g, n), f"{prefix}bias": _rand(g, n), f"{prefix}running_mean": _rand(g, n),
            f"{prefix}running_var": 1 + _rand(g, n).abs(), f"{prefix}num_batches_tracked": torch.tensor(100)}


def _feat_dim(trunk: dict[str, torch.Tensor]) -> int:
    last = max(k for k in trunk if k.startswith("layer4.") and k.endswith("running_mean") and "downsample" not in k)
    return int(trunk[last].shape[0])


def _prefixed(prefix: str, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in sd.items()}


def _optimizer_state(n: int = 2) -> dict[str, Any]:
    return {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "params": list(range(n))}]}


def _d2_name(k: str) -> str:
    """torchvision -> detectron2 names, the way the published MoCo/torchvision converters do it (string edits)."""
    if "layer" not in k:
        k = "stem." + k
    for t in (1, 2, 3, 4):
        k = k.replace(f"layer{t}", f"res{t + 1}")
    for t in (1, 2, 3):
        k = k.replace(f"bn{t}", f"conv{t}.norm")
    return k.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def _caffe2_blobs(trunk: dict[str, torch.Tensor], fc: dict[str, torch.Tensor], eps: float = 1e-5) -> dict[str, np.ndarray]:
    def c2(prefix_tv: str) -> str:
        if prefix_tv in ("conv1", "bn1"):
            return "conv1" if prefix_tv == "conv1" else "res_conv1_bn"
        layer, block, part = prefix_tv.split(".", 2)
        stage = int(layer[len("layer"):]) + 1
        branch = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "bn1": "branch2a_bn", "bn2": "branch2b_bn",
                  "bn3": "branch2c_bn", "downsample.0": "branch1", "downsample.1": "branch1_bn"}[part]
        return f"res{stage}_{block}_{branch}"

    blobs: dict[str, np.ndarray] = {}
    for k, v in trunk.items():
        mod, leaf = k.rsplit(".", 1)
        if leaf == "weight" and v.ndim == 4:
            blobs[c2(mod) + "_w"] = v.numpy()
        elif leaf == "weight":
            scale = v / torch.sqrt(trunk[mod + ".running_var"] + eps)
            blobs[c2(mod) + "_s"] = scale.numpy()
            blobs[c2(mod) + "_b"] = (trunk[mod + ".bias"] - trunk[mod + ".running_mean"] * scale).numpy()
            blobs[c2(mod) + "_s_momentum"] = np.zeros_like(blobs[c2(mod) + "_s"])
    blobs["pred_w"] = fc["fc.weight"].numpy()
    blobs["pred_b"] = fc["fc.bias"].numpy()
    return blobs


def _safetensors_bytes(sd: dict[str, torch.Tensor]) -> bytes:
    import json
    import struct

    names = {torch.float32: "F32", torch.float16: "F16", torch.int64: "I64", torch.float64: "F64"}
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    blobs, off = [], 0
    for k, v in sd.items():
        raw = v.detach().cpu().contiguous().numpy().tobytes()
        header[k] = {"dtype": names[v.dtype], "shape": list(v.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def write_layout(layout: str, trunk: dict[str, torch.Tensor], path: str | Path, *, seed: int = 0,
                 fc: dict[str, torch.Tensor] | None = None, second: dict[str, torch.Tensor] | None = None,
                 num_class: int = 1000, low_dim: int = 128, arch: str = "resnet50", width: int = 1,
                 pickle_protocol: int = 4) -> Path:
    """Write ``trunk`` in ``layout`` to ``path``.

    ``fc``: ``{"weight", "bias"}`` of a supervised classifier (random 1000-way when None and the layout has one);
    ``second``: the other network of two-network layouts (encoder_k, student, EMA; default: the same tensors);
    ``pickle_protocol``: of the detectron2 ``.pkl`` layouts (2 = what Python 2 era files use, slow for big arrays).
    ``arch``: what the file says it is, for layouts that record it (ViT/ConvNeXt defaults: each project's own name for
    the trunk's size, e.g. ``vit_small`` for DINO and MoCo v3, ``vit_small_patch16_224`` for timm)."""
    if layout in FAMILY_LAYOUTS:
        return _write_family_layout(layout, trunk, Path(path), seed=seed, fc=fc, second=second, low_dim=low_dim,
                                    arch=None if arch == "resnet50" else arch)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}")
    g = torch.Generator().manual_seed(seed)
    trunk = {k: v for k, v in trunk.items() if not k.startswith("fc.")}
    second = second if second is not None else trunk
    d = _feat_dim(trunk)
    fc = fc if fc is not None else _linear(g, "", 1000, d)
    fc = {f"fc.{k}": v for k, v in fc.items()}
    path = Path(path)

    if layout in ("mopro", "mopro-bench"):
        heads = {**_linear(g, "classifier.", num_class, d), **_linear(g, "fc1.", d, d), **_linear(g, "fc2.", low_dim, d)}
        sd = {**_prefixed("encoder_q.", {**trunk, **heads}), **_prefixed("encoder_k.", {**second, **heads}),
              "queue": torch.nn.functional.normalize(torch.randn(low_dim, 64, generator=g), dim=0),
              "queue_ptr": torch.zeros(1, dtype=torch.long),
              "prototypes": torch.nn.functional.normalize(torch.randn(num_class, low_dim, generator=g), dim=1)}
        if layout == "mopro":
            obj: Any = {"epoch": 90, "arch": arch, "state_dict": _prefixed("module.", sd), "optimizer": _optimizer_state()}
        else:
            obj = {"mopro_bench": {"kind": "pretrain", "version": 1, "arch": arch, "width": width, "num_class": num_class,
                                   "low_dim": low_dim, "class_space": "webvision1k" if num_class == 1000 else "custom",
                                   "config": {"lr": 0.1}},
                   "epoch": 3, "arch": arch, "state_dict": sd, "optimizer": _optimizer_state(), "scheduler": {"last_epoch": 3},
                   "step": 300, "rng": {"torch": torch.get_rng_state(), "numpy": np.random.RandomState(seed).get_state()},
                   "sampler": {"epoch": 3, "seed": seed}}
    elif layout in ("moco-v1", "moco-v2", "pcl"):
        head = _linear(g, "fc.", low_dim, d) if layout == "moco-v1" else {**_linear(g, "fc.0.", d, d),
                                                                           **_linear(g, "fc.2.", low_dim, d)}
        sd = {**_prefixed("encoder_q.", {**trunk, **head}), **_prefixed("encoder_k.", {**second, **head}),
              "queue": torch.randn(low_dim, 64, generator=g), "queue_ptr": torch.zeros(1, dtype=torch.long)}
        obj = {"epoch": 200, "arch": arch, "state_dict": _prefixed("module.", sd), "optimizer": _optimizer_state()}
    elif layout == "moco-v3":
        proj = {**_linear(g, "fc.0.", 64, d), **_bn(g, "fc.1.", 64), **_linear(g, "fc.3.", 32, 64)}
        pred = {**_linear(g, "predictor.0.", 64, 32), **_bn(g, "predictor.1.", 64), **_linear(g, "predictor.3.", 32, 64)}
        sd = {**_prefixed("base_encoder.", {**trunk, **proj}), **_prefixed("momentum_encoder.", {**second, **proj}), **pred}
        obj = {"epoch": 100, "arch": arch, "state_dict": _prefixed("module.", sd), "optimizer": _optimizer_state(),
               "scaler": {"scale": 65536.0}}
    elif layout == "swav":
        head = {**_linear(g, "projection_head.0.", 64, d), **_bn(g, "projection_head.1.", 64),
                **_linear(g, "projection_head.3.", low_dim, 64), "prototypes.weight": _rand(g, 300, low_dim)}
        obj = _prefixed("module.", {**trunk, **head})
    elif layout == "dino":
        head = {**_linear(g, "head.mlp.0.", 64, d), **_linear(g, "head.mlp.2.", 32, 64),
                "head.last_layer.weight_g": torch.ones(256, 1), "head.last_layer.weight_v": _rand(g, 256, 32)}
        obj = {"student": _prefixed("module.", {**_prefixed("backbone.", second), **head}),
               "teacher": _prefixed("module.", {**_prefixed("backbone.", trunk), **head}),
               "optimizer": _optimizer_state(), "epoch": 100, "fp16_scaler": None,
               "args": argparse.Namespace(arch=arch, out_dim=256, epochs=100, lr=0.3, output_dir="/tmp/dino"),
               "dino_loss": {"center": torch.zeros(1, 256)}}
    elif layout in ("dino-backbone", "byol"):
        obj = dict(trunk)
    elif layout in ("torchvision", "timm", "torchvision-old"):
        obj = {**trunk, **fc}
        if layout == "torchvision-old":
            obj = {k: v for k, v in obj.items() if not k.endswith("num_batches_tracked")}
            buf = io.BytesIO()
            torch.save(obj, buf, _use_new_zipfile_serialization=False)
            return atomic_write_bytes(path, buf.getvalue())
    elif layout == "timm-train":
        obj = {"epoch": 10, "arch": arch, "state_dict": {**trunk, **fc}, "state_dict_ema": {**second, **fc},
               "optimizer": _optimizer_state(), "version": 2, "metric": 76.1,
               "args": argparse.Namespace(model=arch, lr=0.5, epochs=300, data_dir=Path("/data/imagenet"))}
    elif layout == "simclr":
        obj = {"state_dict": {**trunk, **fc}}
    elif layout == "supervised-ddp":
        obj = {"epoch": 90, "arch": arch, "state_dict": _prefixed("module.", {**trunk, **fc}),
               "best_acc1": torch.tensor(76.1), "optimizer": _optimizer_state()}
    elif layout == "safetensors":
        return atomic_write_bytes(path, _safetensors_bytes({**trunk, **fc}))
    elif layout == "caffe2-msra":  # Detectron's blob names; BatchNorm folded into AffineChannel scale/shift
        return atomic_write_bytes(path, pickle.dumps({"blobs": _caffe2_blobs(trunk, fc)}, protocol=pickle_protocol))
    else:  # detectron2 layouts: plain pickles of numpy arrays
        if layout == "detectron2-moco":  # MoCo's converter: encoder_q incl. num_batches_tracked and the fc MLP
            src = {**trunk, **_linear(g, "fc.0.", d, d), **_linear(g, "fc.2.", low_dim, d)}
            model = {_d2_name(k): v.numpy() for k, v in src.items()}
            obj = {"model": model, "__author__": "MOCO", "matching_heuristics": True}
        elif layout == "detectron2-msra":
            model = {_d2_name(k): v.numpy() for k, v in trunk.items() if not k.endswith("num_batches_tracked")}
            obj = {"model": model, "__author__": "MSRA", "matching_heuristics": True}
        else:  # a trained detector (model_final): backbone.bottom_up.* + FPN/RPN/ROI heads + pixel statistics
            model = {"backbone.bottom_up." + _d2_name(k): v.numpy() for k, v in trunk.items()
                     if not k.endswith("num_batches_tracked")}
            model.update({"backbone.fpn_lateral2.weight": _rand(g, 8, 256, 1, 1).numpy(),
                          "proposal_generator.rpn_head.conv.weight": _rand(g, 8, 8, 3, 3).numpy(),
                          "roi_heads.box_predictor.cls_score.weight": _rand(g, 81, 16).numpy(),
                          "pixel_mean": np.array([103.530, 116.280, 123.675], np.float32).reshape(3, 1, 1),
                          "pixel_std": np.array([1.0, 1.0, 1.0], np.float32).reshape(3, 1, 1)})
            obj = {"model": model, "__author__": "Detectron2 Model Zoo"}
        return atomic_write_bytes(path, pickle.dumps(obj, protocol=pickle_protocol))
    return atomic_torch_save(path, obj)


# ---------------------------------------------------------------------------------------------------- ViT / ConvNeXt

_VIT_SIZE = {192: "tiny", 384: "small", 768: "base", 1024: "large", 1280: "huge"}


def _to_fb_convnext(k: str, v: torch.Tensor) -> tuple[str, torch.Tensor]:
    """timm -> facebookresearch/ConvNeXt names (as ConvNeXt's ``models/convnext.py`` defines its modules)."""
    parts = k.split(".")
    if parts[0] == "stem":  # stem.0 conv, stem.1 LayerNorm
        return "downsample_layers.0." + ".".join(parts[1:]), v
    if parts[0] == "head":  # head.norm -> norm (final LayerNorm), head.fc -> head (classifier)
        return ("norm." if parts[1] == "norm" else "head.") + ".".join(parts[2:]), v
    stage = parts[1]
    if parts[2] == "downsample":
        return f"downsample_layers.{stage}." + ".".join(parts[3:]), v
    block, rest = parts[3], ".".join(parts[4:])
    names = {"conv_dw": "dwconv", "norm": "norm", "mlp.fc1": "pwconv1", "mlp.fc2": "pwconv2", "mlp.grn": "grn"}
    if rest == "gamma":
        return f"stages.{stage}.{block}.gamma", v
    module, leaf = rest.rsplit(".", 1)
    if module == "mlp.grn":  # ConvNeXt-V2 keeps GRN's affine parameters as [1, 1, 1, C] gamma / beta
        return f"stages.{stage}.{block}.grn.{'gamma' if leaf == 'weight' else 'beta'}", v.reshape(1, 1, 1, -1)
    return f"stages.{stage}.{block}.{names[module]}.{leaf}", v


def _write_family_layout(layout: str, trunk: dict[str, torch.Tensor], path: Path, *, seed: int,
                         fc: dict[str, torch.Tensor] | None, second: dict[str, torch.Tensor] | None, low_dim: int,
                         arch: str | None) -> Path:
    from mopro_bench.backbones import convnext
    from mopro_bench.backbones import vit as vits

    g = torch.Generator().manual_seed(seed)
    vit = layout in VIT_LAYOUTS
    trunk = {k: v for k, v in trunk.items() if not (k.startswith("head.") and not k.startswith("head.norm."))}
    second = second if second is not None else trunk
    d = int(trunk["cls_token"].shape[-1]) if vit else int(trunk["head.norm.weight"].shape[0])
    fc = fc if fc is not None else _linear(g, "", 1000, d)
    # the name each project would record: its standard size name when the trunk has that size's depth, else one that
    # names no standard size (so a test's shallow trunk is not read as a truncated standard one)
    cfg = vits.describe_vit(trunk) if vit else convnext.describe_convnext(trunk)
    suite_name = vits.arch_name(cfg) if vit else convnext.arch_name(cfg)
    size = _VIT_SIZE.get(d, f"d{d}") if vit else None
    if vit and (d not in vits.SIZES or vits.SIZES[d][1] != cfg["depth"]):
        size = f"{size}{cfg['depth']}"
    if layout == "dino-vit":  # dino/main_dino.py: the student is DDP-wrapped, the ViT teacher (no BatchNorm) is not
        head = {**_linear(g, "head.mlp.0.", 64, d), **_linear(g, "head.mlp.2.", 64, 64), **_linear(g, "head.mlp.4.", 32, 64),
                "head.last_layer.weight_g": torch.ones(256, 1), "head.last_layer.weight_v": _rand(g, 256, 32)}
        obj: Any = {"student": _prefixed("module.", {**_prefixed("backbone.", second), **head}),
                    "teacher": {**_prefixed("backbone.", trunk), **head},
                    "optimizer": _optimizer_state(), "epoch": 100, "fp16_scaler": None,
                    "args": argparse.Namespace(arch=arch or f"vit_{size}", out_dim=256, epochs=100, lr=0.0005,
                                               patch_size=int(trunk["patch_embed.proj.weight"].shape[-1]),
                                               output_dir="/tmp/dino"),
                    "dino_loss": {"center": torch.zeros(1, 256)}}
    elif layout in ("dino-vit-backbone",):  # dino_deitsmall16_pretrain.pth: the teacher backbone alone
        obj = dict(trunk)
    elif layout == "moco-v3-vit":  # moco/builder.py: head = 3-layer MLP (BN, last BN affine=False), 2-layer predictor
        def mlp(prefix: str, n: int, dims: list[int]) -> dict[str, torch.Tensor]:
            out, i = {}, 0
            for layer in range(n):
                out[f"{prefix}{i}.weight"] = _rand(g, dims[layer + 1], dims[layer])
                bn = _bn(g, f"{prefix}{i + 1}.", dims[layer + 1])
                if layer == n - 1:
                    bn = {k: v for k, v in bn.items() if not k.endswith(("weight", "bias"))}
                out.update(bn)
                i += 3
            return out
        proj = mlp("head.", 3, [d, 64, 64, 32])
        pred = mlp("predictor.", 2, [32, 64, 32])
        sd = {**_prefixed("base_encoder.", {**trunk, **proj}), **_prefixed("momentum_encoder.", {**second, **proj}), **pred}
        obj = {"epoch": 300, "arch": arch or f"vit_{size}", "state_dict": _prefixed("module.", sd),
               "optimizer": _optimizer_state(), "scaler": {"scale": 65536.0}}
    elif layout == "mae":  # models_mae.py MaskedAutoencoderViT, util/misc.py save_model
        dd, p = 64, int(trunk["patch_embed.proj.weight"].shape[-1])
        n = int(trunk["pos_embed"].shape[1])
        dec = {**_linear(g, "decoder_embed.", dd, d), "mask_token": _rand(g, 1, 1, dd),
               "decoder_pos_embed": _rand(g, 1, n, dd), "decoder_norm.weight": torch.ones(dd),
               "decoder_norm.bias": torch.zeros(dd), **_linear(g, "decoder_pred.", p * p * 3, dd)}
        for i in range(2):  # timm Blocks, as the encoder's
            b = f"decoder_blocks.{i}."
            dec.update({**_linear(g, b + "attn.qkv.", 3 * dd, dd), **_linear(g, b + "attn.proj.", dd, dd),
                        **_linear(g, b + "mlp.fc1.", 4 * dd, dd), **_linear(g, b + "mlp.fc2.", dd, 4 * dd),
                        b + "norm1.weight": torch.ones(dd), b + "norm1.bias": torch.zeros(dd),
                        b + "norm2.weight": torch.ones(dd), b + "norm2.bias": torch.zeros(dd)})
        obj = {"model": {**trunk, **dec}, "optimizer": _optimizer_state(), "epoch": 799, "scaler": {"scale": 65536.0},
               "args": argparse.Namespace(model=arch or f"mae_vit_{size}_patch{p}", mask_ratio=0.75, norm_pix_loss=True,
                                          input_size=224, epochs=800)}
    elif layout == "dinov2":  # dinov2_vits14_pretrain.pth: the backbone with its (unused) iBOT mask token
        obj = {**trunk, "mask_token": _rand(g, 1, d)}
    elif layout in ("timm-vit", "timm-convnext"):  # HF hub: timm names, the in1k classifier included
        prefix = "head." if vit else "head.fc."
        sd = {**trunk, **{prefix + k: v for k, v in fc.items()}}
        if layout == "timm-convnext":  # as the hub ships them: model.safetensors
            return atomic_write_bytes(path, _safetensors_bytes(sd))
        obj = sd
    elif layout in ("timm-train-vit", "timm-train-convnext"):  # timm train.py (timm/utils/checkpoint_saver.py)
        prefix = "head." if vit else "head.fc."
        head = {prefix + k: v for k, v in fc.items()}
        arch = arch or suite_name
        obj = {"epoch": 299, "arch": arch,
               "state_dict": {**trunk, **head}, "state_dict_ema": {**second, **head}, "optimizer": _optimizer_state(),
               "version": 2, "metric": 79.9,
               "args": argparse.Namespace(model=arch, lr=0.004, epochs=300, mean=None, std=None, interpolation="",
                                          crop_pct=None, data_dir=Path("/data/imagenet"))}
    else:  # convnext-fb: the released {"model": ...} of facebookresearch/ConvNeXt, classifier as "head"
        sd = dict(_to_fb_convnext(k, v) for k, v in {**trunk, **{f"head.fc.{k}": v for k, v in fc.items()}}.items())
        obj = {"model": sd}
    return atomic_torch_save(path, obj)


def random_family(spec: str, seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """A ViT / ConvNeXt backbone (eval mode) of ``spec`` (``vit_small_patch16_224``, ``convnext_tiny``; ``overrides``
    change its config, e.g. ``depth=2, img_size=32`` or ``depths=[1, 1, 2, 1]``) with random weights where every tensor
    matters: LayerNorm affine parameters and LayerScale gammas are drawn around 1 and 0.5 instead of timm's 1 / 0 /
    1e-5 / 1e-6, so a mapping that drops, swaps or mis-shapes any tensor changes the output."""
    from mopro_bench.backbones import build_family, parse_any_arch

    family, cfg = parse_any_arch(spec)
    cfg.update(overrides)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = build_family(family, cfg)
        with torch.no_grad():
            for name, p in model.named_parameters():
                leaf = name.rsplit(".", 1)[-1]
                if leaf == "gamma" or (leaf == "weight" and p.ndim == 1):  # LayerScale, LayerNorm / GRN scales
                    p.copy_(0.5 + 0.2 * torch.randn_like(p) if leaf == "gamma" else 1 + 0.2 * torch.randn_like(p))
                elif leaf == "bias" or p.ndim == 1:
                    p.copy_(0.05 * torch.randn_like(p))
                elif name in ("cls_token", "pos_embed"):
                    p.copy_(0.2 * torch.randn_like(p))
    finally:
        torch.random.set_rng_state(gen_state)
    return model.eval()


def random_resnet(arch: str = "resnet50", seed: int = 0) -> torch.nn.Module:
    """A torchvision ResNet (eval mode) with random weights *and* random BatchNorm statistics and affine parameters, so
    that a mapping which swaps or drops any BN tensor changes the output."""
    import torchvision

    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = getattr(torchvision.models, arch)()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
                    m.weight.normal_(1, 0.1)
                    m.bias.normal_(0, 0.1)
                    m.num_batches_tracked.fill_(1000)
    finally:
        torch.random.set_rng_state(gen_state)
    return model.eval()
