"""One small registry type for every kind of plug-in: tasks, checkpoint formats, dataset layouts, commands.

Shaped after timm's ``_registry.py`` and lm-evaluation-harness' ``api/registry.py``::

    FORMATS = Registry("checkpoint format")
    FORMATS.register("mopro", MoProAdapter())          # an object
    FORMATS.register("dino", "pkg.formats.dino:ADAPTER")  # lazy: imported on first get()

    @FORMATS.register("swav")                          # decorator form (returns the object unchanged)
    class SwAVAdapter: ...

    FORMATS.get("dino")        # the object; BenchError "unknown checkpoint format 'x' -- fix: use one of: ..." on a miss
    FORMATS.names()            # registration order
    FORMATS.items()            # (name, object) pairs, lazy entries loaded
    FORMATS.load_entry_points("mopro_bench.formats")  # third-party plug-ins; a broken one is a warning, not a crash

Built-ins are listed in code (a lazy "module:attr" string costs nothing until used); the entry-point group is only for
third-party packages. A name registered twice is refused (``replace=True`` overrides, for tests); a third-party entry
point whose name clashes with a built-in is skipped with a warning.

This module is in the base layer: it imports only ``mopro_bench.errors`` and the standard library, so core modules
(checkpoint formats, dataset layouts) can hold registries.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any, Generic, TypeVar

from mopro_bench.errors import BenchError

T = TypeVar("T")

_MISSING = object()


def load_ref(ref: str) -> Any:
    """Import ``"package.module:attr.sub"`` and return the attribute."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"plug-in reference {ref!r} is not 'module:attr'")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def named_instance(cls: type, what: str) -> Callable[[str, Any], Any]:
    """A ``validate`` hook for registries of named objects: a class is instantiated, the object must be a ``cls``
    and its ``name`` must be the name it is registered under."""

    def validate(name: str, obj: Any) -> Any:
        inst = obj() if isinstance(obj, type) else obj
        if not isinstance(inst, cls):
            raise TypeError(f"{obj!r} is not a mopro_bench {what}")
        if inst.name != name:
            raise TypeError(f"it is registered as {name!r} but the {what.split()[-1].lower()} is named {inst.name!r} "
                            "(use the same name)")
        return inst

    return validate


class Registry(Generic[T]):
    """Name -> object, in registration order; entries may be lazy ``"module:attr"`` strings.

    ``kind`` names the plug-in kind in messages ("task", "checkpoint format", ...). ``validate(name, obj) -> obj`` (optional)
    checks/converts an object when it is first loaded (e.g. instantiate a class, refuse a wrong type with TypeError).
    """

    def __init__(self, kind: str, *, validate: Callable[[str, Any], T] | None = None, hint: str = "") -> None:
        self.kind = kind
        self.hint = hint  # appended to the "use one of" fix, e.g. "(see `mopro-bench tasks`)"
        self._validate = validate
        self._entries: dict[str, Any] = {}  # name -> object or "module:attr" string (not yet loaded)
        self._lazy: set[str] = set()
        self._origin: dict[str, str] = {}  # name -> "builtin" | "entry point <value>" | "register()"
        self._errors: dict[str, str] = {}  # entry-point name -> why it failed to load
        self._loaded_groups: set[str] = set()

    # -- registration -------------------------------------------------------------------------------------------------
    def register(self, name: str, obj: Any = _MISSING, *, replace: bool = False, origin: str = "builtin") -> Any:
        """``register(name, obj)`` or ``@register(name)``. ``obj`` may be a lazy ``"module:attr"`` string."""
        if obj is _MISSING:
            def deco(o: Any) -> Any:
                self.register(name, o, replace=replace, origin=origin)
                return o

            return deco
        if not replace and name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered ({self._origin.get(name, '?')})")
        self._entries[name] = obj
        self._origin[name] = origin
        if isinstance(obj, str):
            self._lazy.add(name)
        else:
            self._lazy.discard(name)
            if self._validate is not None:
                self._entries[name] = self._validate(name, obj)
        return obj

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)
        self._lazy.discard(name)
        self._origin.pop(name, None)

    def load_entry_points(self, group: str) -> dict[str, str]:
        """Register third-party plug-ins of ``group`` (once per group). Broken or clashing ones are skipped with a
        one-line warning on stderr; returns {name: reason} of those skipped."""
        if group in self._loaded_groups:
            return {}
        self._loaded_groups.add(group)
        skipped: dict[str, str] = {}
        for ep in metadata.entry_points(group=group):
            if ep.name in self._entries:
                skipped[ep.name] = f"name clashes with the {self._origin.get(ep.name, 'builtin')} {self.kind} of that name"
                continue
            try:
                obj = ep.load()
                if self._validate is not None:
                    obj = self._validate(ep.name, obj)
            except Exception as e:  # a broken plug-in must not break the CLI; it is reported
                skipped[ep.name] = f"{type(e).__name__}: {e}"
                continue
            self._entries[ep.name] = obj
            self._origin[ep.name] = f"entry point {ep.value}"
        for name, why in skipped.items():
            self._errors[name] = why
            print(f"warning: {self.kind} plug-in {name!r} from {group} skipped ({why})", file=sys.stderr)
        return skipped

    # -- lookup -------------------------------------------------------------------------------------------------------
    def _load(self, name: str) -> T:
        obj = self._entries[name]
        if name in self._lazy:
            obj = load_ref(obj)
            if self._validate is not None:
                obj = self._validate(name, obj)
            self._entries[name] = obj
            self._lazy.discard(name)
        return obj

    def get(self, name: str) -> T:
        """The object registered as ``name``; BenchError naming the known names on a miss."""
        if name not in self._entries:
            known = ", ".join(self.names()) or "(none registered)"
            raise BenchError(f"unknown {self.kind} {name!r}", f"use one of: {known}" + (f" {self.hint}" if self.hint else ""))
        return self._load(name)

    def names(self) -> list[str]:
        """Registered names in registration order (built-ins first, then entry points)."""
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """(name, object) pairs in registration order; lazy entries are loaded."""
        return [(n, self._load(n)) for n in list(self._entries)]

    def origin(self, name: str) -> str:
        return self._origin.get(name, "")

    def errors(self) -> dict[str, str]:
        """Entry-point plug-ins that were skipped and why."""
        return dict(self._errors)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
