"""One override scheme for every command: ``--set section.field=value``.

Configs and protocols are (possibly nested, possibly frozen) dataclasses. :func:`apply_overrides` returns a new
instance with the given dotted fields replaced; values are parsed as JSON when they look like JSON (numbers,
lists, true/false/null) and otherwise taken as strings, then checked against the field's declared type.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

from mopro_bench.errors import BenchError


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        low = text.lower()
        if low in ("true", "yes", "on"):
            return True
        if low in ("false", "no", "off"):
            return False
        if low in ("none", "null"):
            return None
        return text


def parse_set_args(items: list[str] | None) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": 1, "c": "x"}``."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise BenchError(f"--set {item!r} is not KEY=VALUE", "write it as --set optim.lr=0.05")
        key, value = item.split("=", 1)
        out[key.strip()] = parse_value(value.strip())
    return out


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except BenchError as e:
                errors.append(e)
        raise errors[0] if errors else BenchError(f"--set {key}: cannot parse {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            value = [value]
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise BenchError(f"--set {key}={value!r}: expected {len(args)} values")
            return tuple(_coerce(v, a, key) for v, a in zip(value, args))
        inner = args[0] if args else Any
        seq = [_coerce(v, inner, key) for v in value]
        return tuple(seq) if origin is tuple else seq
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise BenchError(f"--set {key}={value!r}: expected true or false")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise BenchError(f"--set {key}={value!r}: expected an integer")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BenchError(f"--set {key}={value!r}: expected a number")
        return float(value)
    if tp is str:
        return str(value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise BenchError(f"--set {key}={value!r}: expected a JSON object")
        return value
    return value


def field_names(obj: Any, prefix: str = "") -> list[str]:
    """All dotted leaf field names of a dataclass instance."""
    names = []
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            names.extend(field_names(v, prefix + f.name + "."))
        else:
            names.append(prefix + f.name)
    return names


def apply_overrides(obj: Any, overrides: dict[str, Any], *, protected: tuple[str, ...] = (), prefix: str = "") -> Any:
    """Return a copy of dataclass ``obj`` with dotted ``overrides`` applied (type-checked).

    ``prefix`` (used for nested sections) makes error messages name the full dotted key.
    """
    if not overrides:
        return obj
    hints_cache: dict[type, dict[str, Any]] = {}

    def hints(cls: type) -> dict[str, Any]:
        if cls not in hints_cache:
            hints_cache[cls] = typing.get_type_hints(cls)
        return hints_cache[cls]

    grouped: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    known = {f.name for f in dataclasses.fields(obj)}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if head not in known or head in protected:
            raise BenchError(
                f"unknown setting {prefix + key!r}",
                "use one of: " + ", ".join(prefix + n for n in field_names(obj) if n.split(".")[0] not in protected),
            )
        if rest:
            grouped.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    changes: dict[str, Any] = {}
    th = hints(type(obj))
    for head, value in direct.items():
        current = getattr(obj, head)
        if dataclasses.is_dataclass(current):
            example = field_names(current, head + ".")[0]
            raise BenchError(f"--set {head} names a section", f"set one of its fields, e.g. {example}=...")
        changes[head] = _coerce(value, th.get(head, Any), prefix + head)
    for head, sub in grouped.items():
        current = getattr(obj, head)
        if not dataclasses.is_dataclass(current):
            raise BenchError(f"unknown setting {head}.{next(iter(sub))!r}", f"{head} has no sub-fields")
        changes[head] = apply_overrides(current, sub, prefix=f"{prefix}{head}.")
    return dataclasses.replace(obj, **changes)


def to_dict(obj: Any) -> dict[str, Any]:
    """Dataclass -> plain JSON-able dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(obj), default=str))
