"""Tasks, protocols and their discovery through the ``mopro_bench.tasks`` entry-point group.

A *task* (``voc_lowshot``) owns named *protocols* (``mopro``, ``goyal19``). A protocol is a frozen dataclass that
holds every constant of the evaluation plus a ``version``; it is written in full into each result. A third party
adds a task by exposing a :class:`Task` instance under the entry-point group::

    [project.entry-points."mopro_bench.tasks"]
    my_task = "my_package.my_module:MY_TASK"

``--task NAME`` selects the task's default protocol, ``--task NAME@PROTO`` a named one. ``--set field=value``
changes protocol constants; a changed protocol gets the id ``NAME@PROTO+<hash>`` so its numbers are never put in the
same leaderboard table as the unmodified protocol's.
"""

from __future__ import annotations

import abc
import dataclasses
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from mopro_bench.config import apply_overrides, to_dict
from mopro_bench.errors import BenchError
from mopro_bench.io import sha256_json

if TYPE_CHECKING:  # pragma: no cover
    from mopro_bench.checkpoints import LoadedCheckpoint

ENTRY_POINT_GROUP = "mopro_bench.tasks"


@dataclass(frozen=True)
class Protocol:
    """Base of every protocol: subclasses add their constants as fields (with defaults = the published values)."""

    name: str
    version: str
    description: str

    def params(self) -> dict[str, Any]:
        d = to_dict(self)
        for k in ("name", "version", "description"):
            d.pop(k, None)
        return d

    def with_overrides(self, overrides: dict[str, Any]) -> Protocol:
        return apply_overrides(self, overrides, protected=("name", "version", "description"))


@dataclass
class RunContext:
    """What a task run gets besides the model, the data and the protocol."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    workers: int = 0
    cache_dir: Path = field(default_factory=lambda: Path(".cache/mopro-bench"))
    artifact_prefix: Path | None = None  # result path without ".json"; artifacts go to f"{prefix}.{name}"
    work_dir: Path | None = None  # for long runs' own checkpoints (finetuning, detection) and resume
    options: dict[str, Any] = field(default_factory=dict)  # task-specific CLI options (splits, solver, head, ...)
    batch_size: int | None = None  # evaluation batch size override (feature extraction); not a protocol constant
    progress: bool = True
    # dataset_id -> mopro_bench.fingerprint.fingerprint_files(...) result for every image list the run read
    # (filled by features.extract_features, or by a task through record_data); evaluate() copies it into the record.
    data_fingerprints: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record_data(self, dataset_id: str, fingerprint: dict[str, Any]) -> None:
        """Remember the content fingerprint of the images read for ``dataset_id`` (the last call for an id wins)."""
        self.data_fingerprints[str(dataset_id)] = dict(fingerprint)

    def artifact(self, suffix: str) -> Path | None:
        """Path for an artifact saved next to the result, e.g. ``artifact("lowshot.png")``."""
        if self.artifact_prefix is None:
            return None
        p = Path(f"{self.artifact_prefix}.{suffix}")
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def option(self, name: str, default: Any = None) -> Any:
        v = self.options.get(name)
        return default if v is None else v


@dataclass
class TaskOutput:
    """What :meth:`Task.run` returns; the eval command wraps it into a result record."""

    metrics: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)
    selection: str = "last"  # how a reported number was chosen (e.g. "last epoch", "test-set (as published)")
    data: dict[str, Any] = field(default_factory=dict)  # root, kind, split/list hashes
    artifacts: list[str] = field(default_factory=list)
    metric_units: dict[str, str] = field(default_factory=dict)  # e.g. {"top1": "%", "nll": "nats"}
    metric_definitions: dict[str, str] = field(default_factory=dict)


class Task(abc.ABC):
    """A registered evaluation. Subclasses set the class attributes and implement :meth:`run`."""

    name: ClassVar[str]
    description: ClassVar[str]
    data_kind: ClassVar[str]  # the KIND `data check` understands (voc07, places205, imagenet, ...)
    protocols: ClassVar[dict[str, Protocol]]
    default_protocol: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]] = ()  # leaderboard column order
    higher_is_better: ClassVar[dict[str, bool]] = {}  # per metric; default True
    needs_classifier: ClassVar[bool] = False
    # names of the `eval` options this task uses (e.g. "splits", "solver", "head"); others are refused
    options: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def run(self, model: LoadedCheckpoint, data_root: Path, protocol: Protocol, ctx: RunContext) -> TaskOutput:
        ...

    def protocol(self, name: str | None = None) -> Protocol:
        name = name or self.default_protocol
        if name not in self.protocols:
            raise BenchError(
                f"task {self.name} has no protocol {name!r}",
                "use one of: " + ", ".join(f"{self.name}@{p}" for p in self.protocols),
            )
        return self.protocols[name]


@dataclass(frozen=True)
class ResolvedTask:
    task: Task
    protocol: Protocol
    overrides: dict[str, Any]

    @property
    def protocol_id(self) -> str:
        """``task@proto``; ``task@proto+<hash>`` when protocol constants were overridden."""
        base = f"{self.task.name}@{self.protocol.name}"
        if not self.overrides:
            return base
        return f"{base}+{sha256_json(self.overrides)[:8]}"


_REGISTRY: dict[str, Task] | None = None
_LOAD_ERRORS: dict[str, str] = {}


def _discover() -> dict[str, Task]:
    tasks: dict[str, Task] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as e:  # a broken plug-in must not break the CLI; it is reported
            _LOAD_ERRORS[ep.name] = f"{type(e).__name__}: {e}"
            continue
        task = obj() if isinstance(obj, type) else obj
        if not isinstance(task, Task):
            _LOAD_ERRORS[ep.name] = f"entry point {ep.value} is not a mopro_bench Task"
            continue
        tasks[task.name] = task
    return tasks


def registry() -> dict[str, Task]:
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _discover()
        for name, err in _LOAD_ERRORS.items():
            print(f"warning: task plug-in {name!r} failed to load ({err})", file=sys.stderr)
    return _REGISTRY


def register(task: Task) -> Task:
    """Add a task programmatically (tests, notebooks). Entry points are the way for packages."""
    registry()[task.name] = task
    return task


def unregister(name: str) -> None:
    registry().pop(name, None)


def load_errors() -> dict[str, str]:
    registry()
    return dict(_LOAD_ERRORS)


def get_task(spec: str, overrides: dict[str, Any] | None = None) -> ResolvedTask:
    """Resolve ``name`` or ``name@protocol`` (plus ``--set`` overrides) to a task and a concrete protocol."""
    name, _, proto = spec.partition("@")
    reg = registry()
    if name not in reg:
        known = ", ".join(sorted(reg)) or "(none installed)"
        raise BenchError(f"unknown task {spec!r}", f"use one of: {known} (see `mopro-bench tasks`)")
    task = reg[name]
    protocol = task.protocol(proto or None)
    overrides = dict(overrides or {})
    if overrides:
        protocol = protocol.with_overrides(overrides)
    return ResolvedTask(task, protocol, overrides)


def all_protocols() -> list[tuple[Task, Protocol]]:
    out = []
    for name in sorted(registry()):
        task = registry()[name]
        for proto in task.protocols.values():
            out.append((task, proto))
    return out


def protocol_fields(proto: Protocol) -> list[str]:
    return [f.name for f in dataclasses.fields(proto)]
