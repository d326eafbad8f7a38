"""ResNet backbones (family ``resnet``) with torchvision's parameter names, and a width multiplier.

``build_backbone("resnet50", width=2)`` scales every stage's base channels (64·w, 128·w, 256·w, 512·w; Bottleneck
expansion 4), like SimCLR's ResNet-50 (2x)/(4x), SwAV's RN50-w2/w4/w5 and MoPro's ``width`` option, so the pooled
feature is 2048·w. With ``width=1`` the module's ``state_dict`` keys and shapes are exactly torchvision's ResNet
without ``fc``.

``stride_in_1x1=True`` puts a downsampling Bottleneck's stride on its first 1x1 convolution instead of the 3x3 one
(the original MSRA/caffe ResNet, detectron2's ``RESNETS.STRIDE_IN_1X1``). Same parameter names and shapes, another
function: checkpoints from detectron2's MSRA model zoo need it, torchvision-style ones must not use it.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from mopro_bench.errors import BenchError

ARCHS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}
WIDTHS: dict[str, tuple[int, ...]] = {"resnet50": (1, 2, 4, 5)}  # 5: SwAV RN50-w5
STAGES = ("res2", "res3", "res4", "res5")
ROOTS = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")  # the top-level module names of the trunk


def parse_arch(spec: str) -> tuple[str, int]:
    """``resnet50``, ``resnet50x2`` / ``resnet50w2`` -> (arch, width)."""
    spec = spec.strip().lower()
    for sep in ("x", "w"):
        head, s, tail = spec.rpartition(sep)
        if s and head in ARCHS and tail.isdigit():
            return head, int(tail)
    return spec, 1


def check_arch(arch: str, width: int = 1) -> None:
    if arch not in ARCHS:
        raise BenchError(f"unknown architecture {arch!r}", "use one of: " + ", ".join(ARCHS) + " (resnet50 also x2, x4, x5)")
    allowed = WIDTHS.get(arch, (1,))
    if width not in allowed:
        raise BenchError(f"{arch} has no width {width}", f"use width in {allowed}")


class Backbone(nn.Module):
    """ResNet trunk (conv1 .. layer4 + global average pool). ``forward`` returns the pooled [N, feature_dim] feature.

    Implements the backbone interface of :mod:`mopro_bench.backbones` (``family``, ``feature``, ``config``,
    ``supports_detection``)."""

    family = "resnet"
    feature = "global average pool of res5 (layer4), BatchNorm in eval mode"
    supports_detection = True  # detectron2 has the ResNet(-FPN/-C4) backbone this trunk exports to

    def __init__(self, arch: str = "resnet50", width: int = 1, stride_in_1x1: bool = False, wide_stem: bool = True):
        super().__init__()
        check_arch(arch, width)
        block, layers = ARCHS[arch]
        self.arch, self.width = arch, width
        self.stride_in_1x1 = bool(stride_in_1x1) and block is Bottleneck
        base = 64 * width
        # wide_stem=False: conv1/bn1 keep 64 channels at any width (MoPro's own resnet.py); True: 64*width (SimCLR/SwAV)
        stem = base if wide_stem else 64
        self.wide_stem = bool(wide_stem) or width == 1
        self.inplanes = stem
        norm = nn.BatchNorm2d
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, base, layers[0])
        self.layer2 = self._make_layer(block, base * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, base * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, base * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.feature_dim = base * 8 * block.expansion
        self.stage_channels = {f"res{i + 2}": base * (2**i) * block.expansion for i in range(4)}
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        del self.inplanes
        if self.stride_in_1x1:
            for layer in (self.layer2, self.layer3, self.layer4):
                first = layer[0]
                first.conv1.stride, first.conv2.stride = first.conv2.stride, (1, 1)

    def _make_layer(self, block: type[nn.Module], planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def name(self) -> str:
        return self.arch if self.width == 1 else f"{self.arch}x{self.width}"

    @property
    def config(self) -> dict:
        """What builds this network again (recorded with the checkpoint)."""
        return {"arch": self.arch, "width": self.width, "stride_in_1x1": self.stride_in_1x1, "wide_stem": self.wide_stem}

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stage outputs res2..res5 (strides 4, 8, 16, 32), for detection."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = {}
        for name, layer in zip(STAGES, (self.layer1, self.layer2, self.layer3, self.layer4)):
            x = layer(x)
            out[name] = x
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def build_backbone(arch: str = "resnet50", width: int = 1, *, stride_in_1x1: bool = False, wide_stem: bool = True) -> Backbone:
    return Backbone(arch, width, stride_in_1x1=stride_in_1x1, wide_stem=wide_stem)


def arch_for_blocks(bottleneck: bool, blocks: tuple[int, ...]) -> str | None:
    """The architecture with this block type and per-stage block counts, or None."""
    block = Bottleneck if bottleneck else BasicBlock
    for name, (b, layers) in ARCHS.items():
        if b is block and tuple(layers) == tuple(blocks):
            return name
    return None


def feature_dim(arch: str, width: int = 1) -> int:
    check_arch(arch, width)
    block, _ = ARCHS[arch]
    return 512 * width * block.expansion
