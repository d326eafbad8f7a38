"""Tasks, protocols and the task registry (:data:`TASKS`, a :class:`mopro_bench.plugins.Registry`).

A *task* (``voc_lowshot``) owns named *protocols* (``mopro``, ``goyal19``). A protocol is a frozen dataclass that
holds every constant of the evaluation plus a ``version``; it is written in full into each result. Built-in tasks
are listed in :data:`BUILTIN_TASKS` (code, no reinstall needed). A third party adds a task by exposing a
:class:`Task` instance (named like its entry point) under the entry-point group::

    [project.entry-points."mopro_bench.tasks"]
    my_task = "my_package.my_module:MY_TASK"

``--task NAME`` selects the task's default protocol, ``--task NAME@PROTO`` a named one. ``--set field=value``
changes protocol constants; a changed protocol gets the id ``NAME@PROTO+<hash>`` so its numbers are never put in the
same leaderboard table as the unmodified protocol's.
"""

from __future__ import annotations

import abc
import argparse
import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from mopro_bench.config import apply_overrides, to_dict
from mopro_bench.errors import BenchError
from mopro_bench.io import sha256_json
from mopro_bench.plugins import Registry, named_instance

if TYPE_CHECKING:  # pragma: no cover
    from mopro_bench.checkpoints import LoadedCheckpoint

ENTRY_POINT_GROUP = "mopro_bench.tasks"


class _IntType:
    """argparse type: an integer >= ``minimum`` (a module-level class, so an Option holding it pickles)."""

    __name__ = "integer"

    def __init__(self, minimum: int, what: str) -> None:
        self.minimum, self.what = minimum, what

    def __call__(self, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < self.minimum:
            raise argparse.ArgumentTypeError(f"{value} is not {self.what}")
        return value

    def __repr__(self) -> str:
        return f"integer>={self.minimum}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _IntType) and (other.minimum, other.what) == (self.minimum, self.what)

    def __hash__(self) -> int:
        return hash((self.minimum, self.what))


positive_int = _IntType(1, "a positive integer (1 or more)")
nonnegative_int = _IntType(0, "0 or more")


class Option(str):
    """One ``eval`` option a task takes, declared on the task: ``options = (Option("solver", "low-shot SVM solver",
    choices=("torch", "sklearn")), ...)``.

    It *is* its name (a ``str``: ``"solver" in task.options`` and ``ctx.option("solver")`` work as with plain names;
    a plain name declares no flag of its own and uses another task's spec of that name). ``eval`` builds its
    "task options" group from every registered task's specs (flag ``--solver``; tasks that share an option declare
    the same spec). ``flag=True`` makes a store-true switch. ``default`` documents what the task uses when the flag is
    absent (an absent flag is not passed: ``ctx.option(name, default)``). ``one_task``: the value is a file meant for
    one task (refused when several tasks of a run take it); ``one_checkpoint``: it belongs to one checkpoint.
    """

    help: str
    type: Any
    choices: tuple[str, ...] | None
    flag: bool
    default: Any
    one_task: bool
    one_checkpoint: bool

    def __new__(cls, name: str, help: str, *, type: Any = None, choices: tuple[str, ...] | None = None,
                flag: bool = False, default: Any = None, one_task: bool = False, one_checkpoint: bool = False) -> Option:
        self = super().__new__(cls, name)
        self.help, self.type, self.flag, self.default = help, type, flag, default
        self.choices = tuple(choices) if choices is not None else None
        self.one_task, self.one_checkpoint = one_task, one_checkpoint
        return self

    def __reduce__(self):  # pickles (and copies) with its spec, not as a bare str
        return (_option, (str(self), self.help, {"type": self.type, "choices": self.choices, "flag": self.flag,
                                                 "default": self.default, "one_task": self.one_task,
                                                 "one_checkpoint": self.one_checkpoint}))

    @property
    def name(self) -> str:
        return str(self)

    @property
    def cli_flag(self) -> str:
        return "--" + self.replace("_", "-")

    def spec(self) -> tuple:
        """Everything that defines the flag (two tasks sharing an option must agree on it)."""
        return (str(self), self.help, self.type, self.choices, self.flag, self.default, self.one_task, self.one_checkpoint)

    def add_to(self, group: Any) -> None:
        """Add the flag to an argparse parser or group."""
        if self.flag:
            group.add_argument(self.cli_flag, action="store_true", help=self.help)
            return
        kw: dict[str, Any] = {"help": self.help}
        if self.type is not None:
            kw["type"] = self.type
        if self.choices is not None:
            kw["choices"] = list(self.choices)
        group.add_argument(self.cli_flag, **kw)


def _option(name: str, help: str, kw: dict[str, Any]) -> Option:
    return Option(name, help, **kw)


# protocol fields that say what a protocol is and what it accepts, not how it measures: never in ``params()`` (so never
# in a record's identity) and never changed by ``--set``
PROTOCOL_META_FIELDS = ("name", "version", "description", "families")


@dataclass(frozen=True)
class Protocol:
    """Base of every protocol: subclasses add their constants as fields (with defaults = the published values).

    ``families``: the backbone families (:data:`mopro_bench.backbones.FAMILIES`) the protocol is defined for. A
    checkpoint of another family is refused before anything runs (exit 2, naming the task's protocols that accept it):
    a ResNet protocol never silently runs on a ViT."""

    name: str
    version: str
    description: str
    families: tuple[str, ...] = ("resnet",)

    def params(self) -> dict[str, Any]:
        d = to_dict(self)
        for k in PROTOCOL_META_FIELDS:
            d.pop(k, None)
        return d

    def with_overrides(self, overrides: dict[str, Any]) -> Protocol:
        return apply_overrides(self, overrides, protected=PROTOCOL_META_FIELDS)


def check_family(task: Task, protocol: Protocol, model: LoadedCheckpoint) -> None:
    """Refuse (exit 2) a checkpoint whose backbone family ``protocol`` is not defined for."""
    family = model.family
    if family in protocol.families:
        return
    others = [f"{task.name}@{p.name}" for p in task.protocols.values() if family in p.families]
    fix = (f"use {' or '.join(others)}" if others else
           f"{task.name} has no protocol for {family} backbones (`mopro-bench tasks` lists the families each accepts)")
    raise BenchError(f"{task.name}@{protocol.name} is defined for {'/'.join(protocol.families)} backbones; "
                     f"{model.name} is a {family} ({model.arch})", fix)


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
    # the splits of data_kind the task reads ("trainval", "test", ...; the layout's `listing` counts them against the
    # official sizes for the record's data.complete); a protocol's train_split/test_split constants win over it.
    # Empty: no split is counted and the record says data.complete = false
    splits: ClassVar[tuple[str, ...]] = ()
    protocols: ClassVar[dict[str, Protocol]]
    default_protocol: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]] = ()  # leaderboard column order
    higher_is_better: ClassVar[dict[str, bool]] = {}  # per metric; default True
    needs_classifier: ClassVar[bool] = False
    # the `eval` options this task takes, each an Option spec (flag, help, type/choices) or the plain name of an option
    # another task declares; `eval` builds its "task options" group from them and refuses the others
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


# Built-in tasks, listed in code (lazy "module:attr" references: a task module is imported when first used), so adding
# a built-in task needs no reinstall. Third-party packages add theirs through the ENTRY_POINT_GROUP entry points; one
# whose name clashes with a built-in is skipped with a warning.
BUILTIN_TASKS: dict[str, str] = {
    "voc_lowshot": "mopro_bench.tasks.lowshot:VOC_LOWSHOT",
    "places_lowshot": "mopro_bench.tasks.lowshot:PLACES_LOWSHOT",
    "imagenet_1pct": "mopro_bench.tasks.imagenet:IMAGENET_1PCT",
    "imagenet_10pct": "mopro_bench.tasks.imagenet:IMAGENET_10PCT",
    "imagenet_linear": "mopro_bench.tasks.imagenet:IMAGENET_LINEAR",
    "imagenet_val": "mopro_bench.tasks.imagenet:IMAGENET_VAL",
    "webvision_val": "mopro_bench.tasks.imagenet:WEBVISION_VAL",
    "coco_maskrcnn": "mopro_bench.tasks.detection:COCO_MASKRCNN",
    "imagenet_r": "mopro_bench.tasks.robustness:IMAGENET_R",
    "imagenet_a": "mopro_bench.tasks.robustness:IMAGENET_A",
    "imagenet_val_calibration": "mopro_bench.tasks.robustness:IMAGENET_VAL_CALIBRATION",
}


TASKS: Registry[Task] = Registry("task", validate=named_instance(Task, "Task"), hint="(see `mopro-bench tasks`)")
for _name, _ref in BUILTIN_TASKS.items():
    TASKS.register(_name, _ref)
_LOAD_ERRORS: dict[str, str] = {}
_READY = False


def registry() -> dict[str, Task]:
    """Every usable task by name: the built-ins, then third-party entry points. A task that fails to import is
    reported once on stderr (never a crash) and left out."""
    global _READY
    if not _READY:
        _READY = True
        _LOAD_ERRORS.update(TASKS.load_entry_points(ENTRY_POINT_GROUP))
        for name in TASKS.names():
            try:
                TASKS.get(name)
            except Exception as e:  # a broken plug-in must not break the CLI; it is reported
                _LOAD_ERRORS[name] = f"{type(e).__name__}: {e}"
                TASKS.unregister(name)
                print(f"warning: task plug-in {name!r} failed to load ({_LOAD_ERRORS[name]})", file=sys.stderr)
    return dict(TASKS.items())


def register(task: Task) -> Task:
    """Add a task programmatically (tests, notebooks); replaces one of the same name."""
    TASKS.register(task.name, task, replace=True, origin="register()")
    return task


def unregister(name: str) -> None:
    TASKS.unregister(name)


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


def option_specs(tasks: dict[str, Task] | None = None) -> dict[str, Option]:
    """Every declared :class:`Option` of the registered tasks by name, in first-declaration order. Two tasks declaring
    one name differently is a bug in a task (ValueError naming both)."""
    out: dict[str, Option] = {}
    owner: dict[str, str] = {}
    for task in (registry() if tasks is None else tasks).values():
        for opt in task.options:
            if not isinstance(opt, Option):
                continue
            if opt in out and out[opt].spec() != opt.spec():
                raise ValueError(f"tasks {owner[opt]} and {task.name} declare the eval option {opt!r} differently")
            out.setdefault(opt, opt)
            owner.setdefault(opt, task.name)
    return out


def protocol_fields(proto: Protocol) -> list[str]:
    return [f.name for f in dataclasses.fields(proto)]
