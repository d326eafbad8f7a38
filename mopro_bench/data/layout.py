"""The dataset plug-in type: one :class:`DatasetLayout` per dataset kind, defined in the layout's own module.

A layout module (``voc.py``, ``places.py``, ...) holds everything about one on-disk layout -- its loader, its
``check``, its ``synth`` generator, its official sizes -- and exposes a module-level ``DatasetLayout`` that
``mopro_bench.data`` registers (``DATASETS``, one lazy ``"module:attr"`` line per kind). ``data check``, ``data synth``,
``--data KIND=PATH`` and the record's data-completeness bookkeeping all dispatch through it, so adding a layout means
writing one module and adding one line to ``mopro_bench.data.BUILTIN_DATASETS``.

This module only imports the standard library (``mopro_bench.data`` imports it at start-up).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SplitListing:
    """What a split of a dataset lists, as the loader reads it: ``found`` images, the ``official`` count (None when
    unknown) and ``lines`` -- the names (and labels) in order, whose hash goes into a result's ``data.lists``."""

    found: int
    official: int | None
    lines: Sequence[str]


@dataclass(frozen=True)
class DatasetLayout:
    """One dataset kind.

    - ``kind``: the name users type (``data check KIND``, ``--data KIND=PATH``, ``[data]`` in the config file).
    - ``splits``: the splits ``listing`` and ``check`` count (the keys of ``official_sizes``).
    - ``official_sizes``: images per split in the official release (what ``check`` and results compare against).
    - ``check(report, root, deep)``: fill a :class:`mopro_bench.data.check.CheckReport` (``report.size(split, found,
      official)`` per split, ``report.error(message, fix)`` for what makes the tree unusable, ``report.warn``); never
      raise for a problem of the data. ``root`` exists and is a folder.
    - ``synth(root, seed, params, kind, out) -> summary``: write a generated tree at ``root`` (a temporary folder renamed
      onto ``out`` afterwards; files kept outside the layout, e.g. a truth file, go next to ``out``) and return a summary
      with ``counts`` (images per split at least). ``params`` are ``synth_sizes[scale]`` with the user's overrides.
    - ``synth_sizes``: ``{scale: {param: default}}`` for the scales ``tiny`` and ``small``; the keys are the options
      ``data synth`` accepts for this kind (their type is the default's type).
    - ``synth_code``: this kind's number in the generator's random streams (``render.image_rng(seed, code, ...)``);
      unique among the registered kinds and never changed (it would change every generated image).
    - ``listing(root, split, data) -> SplitListing``: the loader's view of one split (``data`` = the record's data
      options, e.g. ``num_class`` for WebVision); a BenchError when the split cannot be read.
    - ``synth_validate(params)``: optional extra check of the synth parameters (BenchError), after the generic ranges.
    """

    kind: str
    description: str
    splits: tuple[str, ...]
    official_sizes: Mapping[str, int]
    check: Callable[[Any, Path, bool], None]
    synth: Callable[[Path, int, dict, str, Path], dict]
    synth_sizes: Mapping[str, Mapping[str, Any]]
    synth_code: int
    listing: Callable[[Path, str, dict], SplitListing]
    synth_validate: Callable[[dict], None] | None = field(default=None)


def validate_layout(name: str, obj: Any) -> DatasetLayout:
    """Registry hook: a registered dataset is a :class:`DatasetLayout` whose ``kind`` is the name it is registered as."""
    if not isinstance(obj, DatasetLayout):
        raise TypeError(f"dataset {name!r} is a {type(obj).__name__}, not a DatasetLayout")
    if obj.kind != name:
        raise TypeError(f"dataset registered as {name!r} declares kind {obj.kind!r}")
    return obj
