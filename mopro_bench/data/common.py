"""Pieces every layout shares: image decoding, the evaluation transform, a dataset over a list of files."""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from mopro_bench.backbones import Preprocess
from mopro_bench.errors import BenchError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


NOT_UTF8_FIX = ("save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8 OLD > NEW`) or restore it from the original archive; "
                "file names in lists must be UTF-8")


def read_text_file(path: str | Path, what: str = "list file") -> str:
    """A list/annotation file as text: UTF-8 (a leading byte-order mark is dropped). Bytes that are not UTF-8 are a
    :class:`BenchError` naming the file, the line and the byte offset (not a ``UnicodeDecodeError`` traceback)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise BenchError(f"{what} {path} is a directory", "pass the file itself") from None
    except OSError as e:
        raise BenchError(f"{what} {path} cannot be read ({e.strerror or type(e).__name__})",
                         "check that the file exists and is readable") from None
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        at = skip + e.start
        line = data.count(b"\n", 0, at) + 1
        raise BenchError(f"{what} {path}:{line}: byte 0x{data[at]:02x} at offset {at} is not UTF-8 text", NOT_UTF8_FIX) from None


def outside_root(rel: str) -> str | None:
    """Why a list entry would name a file outside the dataset root, or None. Entries are relative paths without
    ``..``; an absolute path or a ``..`` component is refused. (Symbolic links *inside* the root are followed wherever
    they point: that is how a shared copy of a dataset is usually mounted, and the user made them.)"""
    if rel.startswith("/"):
        return "is an absolute path (entries are relative to the dataset root)"
    if ".." in PurePosixPath(rel).parts:
        return "leaves the dataset root ('..')"
    return None


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


INTERPOLATIONS = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}


def interpolation_mode(name: str) -> T.InterpolationMode:
    if name not in INTERPOLATIONS:
        raise BenchError(f"interpolation {name!r} is not supported", "use one of: " + ", ".join(INTERPOLATIONS))
    return INTERPOLATIONS[name]


def eval_transform(image_size: int = 224, resize: int | None = None, pre: Preprocess | None = None, *,
                   square: bool = False, interpolation: str = "bilinear") -> T.Compose:
    """Resize(256) -> CenterCrop(224) -> tensor -> normalisation (sizes scale together when image_size != 224).

    ``square``: resize the whole image to ``resize x resize`` (aspect ratio not kept; VISSL's ``Resize([224, 224])``)
    instead of its shorter side to ``resize``. ``interpolation``: of the resize (bilinear: torchvision's default, the
    ResNet protocols; bicubic: DINO's ``Resize(256, interpolation=3)``, the ViT protocols)."""
    resize = resize or round(image_size * 256 / 224)
    mode = interpolation_mode(interpolation)
    return T.Compose([T.Resize((resize, resize) if square else resize, interpolation=mode), T.CenterCrop(image_size),
                      T.ToTensor(), normalize(pre)])


def train_transform(image_size: int = 224, scale: tuple[float, float] = (0.08, 1.0), pre: Preprocess | None = None, *,
                    interpolation: str = "bilinear") -> T.Compose:
    """RandomResizedCrop + horizontal flip (finetuning / linear probe)."""
    return T.Compose([T.RandomResizedCrop(image_size, scale=scale, interpolation=interpolation_mode(interpolation)),
                      T.RandomHorizontalFlip(), T.ToTensor(), normalize(pre)])


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
