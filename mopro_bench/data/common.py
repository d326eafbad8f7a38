"""Pieces every layout shares: image decoding, the evaluation transform, a dataset over a list of files."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from mopro_bench.backbones import Preprocess
from mopro_bench.errors import BenchError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_rgb(path: str | Path) -> Image.Image:
    with open(path, "rb") as fh:
        img = Image.open(fh)
        img.load()
    return img.convert("RGB")


class _ToInput:
    """[0,1] RGB tensor -> what the checkpoint expects (channel order, pixel scale, mean/std)."""

    def __init__(self, pre: Preprocess):
        self.pre = pre
        self.mean = torch.tensor(pre.mean).view(3, 1, 1)
        self.std = torch.tensor(pre.std).view(3, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre.channel_order.upper() == "BGR":
            x = x.flip(0)
        x = x * self.pre.scale
        return (x - self.mean) / self.std


def normalize(pre: Preprocess | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    return _ToInput(pre or Preprocess())


def eval_transform(image_size: int = 224, resize: int | None = None, pre: Preprocess | None = None) -> T.Compose:
    """Resize(256) -> CenterCrop(224) -> tensor -> normalisation (sizes scale together when image_size != 224)."""
    resize = resize or round(image_size * 256 / 224)
    return T.Compose([T.Resize(resize), T.CenterCrop(image_size), T.ToTensor(), normalize(pre)])


def train_transform(image_size: int = 224, scale: tuple[float, float] = (0.08, 1.0), pre: Preprocess | None = None) -> T.Compose:
    """RandomResizedCrop + horizontal flip (finetuning / linear probe)."""
    return T.Compose([T.RandomResizedCrop(image_size, scale=scale), T.RandomHorizontalFlip(), T.ToTensor(), normalize(pre)])


class ImageList(Dataset):
    """``(path, label)`` pairs -> ``(image_tensor, label, index)``. For evaluation sets: a bad file is an error."""

    def __init__(self, paths: Sequence[str | Path], labels: Sequence[int] | None = None, transform: Callable | None = None):
        self.paths = [str(p) for p in paths]
        self.labels = list(labels) if labels is not None else [-1] * len(self.paths)
        if len(self.labels) != len(self.paths):
            raise ValueError("paths and labels differ in length")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        p = self.paths[i]
        try:
            img = load_rgb(p)
        except FileNotFoundError:
            raise BenchError(f"image {p} does not exist", "run `mopro-bench data check` on the dataset root") from None
        except Exception as e:
            raise BenchError(f"image {p} cannot be decoded ({type(e).__name__}: {e})",
                             "replace the file; `mopro-bench data check --deep` lists every unreadable image") from None
        x = self.transform(img) if self.transform else img
        return x, self.labels[i], i
