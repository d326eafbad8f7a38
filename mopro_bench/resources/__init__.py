"""Class lists shipped with the package (public: ImageNet-1k sorted wnids, ImageNet-R and ImageNet-A wnids)."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def read_list(name: str) -> tuple[str, ...]:
    text = resources.files(__name__).joinpath(name).read_text()
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def imagenet1k_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in sorted order; class index = position (also WebVision 1.0's label order)."""
    return read_list("imagenet1k_wnids.txt")


def imagenet_r_wnids() -> tuple[str, ...]:
    """The 200 ImageNet-R wnids in the official order."""
    return read_list("imagenet_r_wnids.txt")


def imagenet_a_wnids() -> tuple[str, ...]:
    """The 200 ImageNet-A wnids in the official order."""
    return read_list("imagenet_a_wnids.txt")
