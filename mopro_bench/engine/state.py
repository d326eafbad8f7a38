"""Resumable training state on disk: atomic save, numbered checkpoints with keep-last-K and a ``last`` link, and the
resume lookup (newest readable one).

Numbered files are ``<prefix><step, 9 digits><suffix>`` (name order = time order). Pretraining uses
``checkpoint_step000000042.pth.tar`` (:mod:`mopro_bench.pretrain.checkpoint`); finetuning keeps one
``train_state.pt`` written with :func:`save_state`.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mopro_bench.io import atomic_torch_save

__all__ = ["CheckpointSeries", "save_state"]


def save_state(path: str | os.PathLike, obj: dict[str, Any]) -> Path:
    """Write ``obj`` with ``torch.save`` atomically (a reader sees the old file or the new one, never half)."""
    return atomic_torch_save(Path(path), obj)


class CheckpointSeries:
    """Numbered checkpoints in one directory: ``name(step)``, ``list(out)``, ``save(out, obj, step, keep_last)`` and
    ``find_latest(out, load)``."""

    def __init__(self, prefix: str = "checkpoint_step", suffix: str = ".pth.tar", last: str = "last.pth.tar"):
        self.prefix, self.suffix, self.last = prefix, suffix, last
        self.pattern = re.compile(rf"^{re.escape(prefix)}(\d{{9,}}){re.escape(suffix)}$")

    def name(self, step: int) -> str:
        return f"{self.prefix}{step:09d}{self.suffix}"

    def list(self, out: str | os.PathLike) -> list[Path]:
        """Checkpoint files in ``out``, oldest first."""
        out = Path(out)
        if not out.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in out.iterdir() if (m := self.pattern.match(p.name)) and p.is_file()]
        return [p for _, p in sorted(found)]

    def save(self, out: str | os.PathLike, obj: dict[str, Any], step: int, keep_last: int) -> Path:
        """Atomic write of step ``step``; ``last`` re-pointed (relative symlink, where the file system allows);
        only the newest ``keep_last`` kept."""
        out = Path(out)
        path = atomic_torch_save(out / self.name(step), obj)
        link = out / self.last
        tmp = out / f".{self.last}.tmp"
        with contextlib.suppress(OSError):
            if tmp.is_symlink() or tmp.exists():
                tmp.unlink()
            os.symlink(path.name, tmp)
            os.replace(tmp, link)
        for old in self.list(out)[:-keep_last]:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
        return path

    def find_latest(self, out: str | os.PathLike, load: Callable[[Path], Any],
                    unreadable: type[BaseException] | tuple[type[BaseException], ...] = Exception) -> Path | None:
        """The newest checkpoint ``load`` can read (a damaged one falls back to an older one); None if none."""
        for p in reversed(self.list(out)):
            try:
                load(p)
                return p
            except unreadable:
                continue
        return None
