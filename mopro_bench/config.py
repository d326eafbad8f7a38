"""One override scheme for every command: ``--set section.field=value``.

Configs and protocols are (possibly nested, possibly frozen) dataclasses. :func:`apply_overrides` returns a new
instance with the given dotted fields replaced; values are parsed as JSON when they look like JSON (numbers,
lists, true/false/null) and otherwise taken as strings, then checked against the field's declared type.

The second half reads the user's config file (dataset roots, ``[data] KIND = "PATH"``) and combines it with
``--data KIND=PATH`` flags: :func:`load_user_config`, :class:`DataRoots`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
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
    if isinstance(value, float) and not math.isfinite(value) and tp in (int, float):
        raise BenchError(f"--set {key}={value!r} is not valid", "use a finite number")
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


# --------------------------------------------------------------------------------------------------------------------
# User configuration file: where the datasets are.
#
#   [data]
#   voc07 = "/datasets/VOC2007"
#   places205 = "~/data/places205"      # ~ is expanded; a relative path is relative to the config file's folder
#
# Looked up (the first that exists is used, files are not merged): ``--config FILE``; ``./mopro-bench.toml``;
# ``$XDG_CONFIG_HOME/mopro-bench/config.toml`` (default ``~/.config/mopro-bench/config.toml``). A ``--data KIND=PATH``
# flag wins over the file.
# --------------------------------------------------------------------------------------------------------------------

CONFIG_NAME = "mopro-bench.toml"
CONFIG_SECTIONS = ("data",)


def _toml():
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib


def user_config_path(environ: dict[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/mopro-bench/config.toml``, ``~/.config/mopro-bench/config.toml`` when unset."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "mopro-bench" / "config.toml"


def config_search_paths(cwd: str | Path | None = None, environ: dict[str, str] | None = None) -> list[Path]:
    """The files looked for when no ``--config`` is given, in order."""
    return [Path(cwd or Path.cwd()) / CONFIG_NAME, user_config_path(environ)]


@dataclass
class UserConfig:
    """The parsed config file (``path`` None when there is none): ``data`` maps a dataset KIND to its root."""

    path: Path | None = None
    data: dict[str, Path] = field(default_factory=dict)


def load_user_config(explicit: str | Path | None = None, *, cwd: str | Path | None = None,
                     environ: dict[str, str] | None = None) -> UserConfig:
    """Read ``explicit`` (must exist) or the first config file found (see :func:`config_search_paths`)."""
    from mopro_bench.data import KINDS

    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise BenchError(f"config file {path} does not exist", "give an existing TOML file to --config")
    else:
        path = next((p for p in config_search_paths(cwd, environ) if p.is_file()), None)
        if path is None:
            return UserConfig()
    tomllib = _toml()
    try:
        obj = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise BenchError(f"config file {path} cannot be read: {e}", "make it a readable UTF-8 TOML file") from None
    except tomllib.TOMLDecodeError as e:
        raise BenchError(f"config file {path} is not valid TOML: {e}",
                         'write it like: [data] followed by lines such as voc07 = "/datasets/VOC2007"') from None
    unknown = sorted(set(obj) - set(CONFIG_SECTIONS))
    if unknown:
        raise BenchError(f"config file {path}: unknown section or key {unknown[0]!r}",
                         f"use only the sections {', '.join('[' + s + ']' for s in CONFIG_SECTIONS)}")
    section = obj.get("data", {})
    if not isinstance(section, dict):
        raise BenchError(f"config file {path}: data must be a table", '[data] followed by lines such as voc07 = "/data/VOC2007"')
    data: dict[str, Path] = {}
    for kind, value in section.items():
        if kind not in KINDS:
            raise BenchError(f"config file {path}: [data] {kind!r} is not a dataset kind", f"use one of {', '.join(KINDS)}")
        if not isinstance(value, str) or not value:
            raise BenchError(f"config file {path}: [data] {kind} must be a path in quotes", f'write {kind} = "/path/to/{kind}"')
        root = Path(value).expanduser()
        data[kind] = root if root.is_absolute() else (path.parent / root)
    return UserConfig(path=path, data=data)


def split_data_flag(value: str) -> tuple[str | None, str]:
    """``"voc07=/data/voc"`` -> ``("voc07", "/data/voc")``; a plain path (even one with ``=`` in it) -> ``(None, path)``."""
    from mopro_bench.data import KINDS

    kind, sep, rest = value.partition("=")
    if sep and kind in KINDS:
        if not rest:
            raise BenchError(f"--data {value} gives no path", f"write --data {kind}=PATH")
        return kind, rest
    return None, value


@dataclass
class DataRoots:
    """Dataset roots of one command: ``--data`` flags first, then the config file."""

    flags: dict[str, str] = field(default_factory=dict)  # KIND -> path from --data KIND=PATH
    plain: str | None = None  # a bare --data PATH (one task kind only)
    config: UserConfig = field(default_factory=UserConfig)

    @classmethod
    def from_args(cls, values: list[str] | None, config: UserConfig) -> DataRoots:
        flags: dict[str, str] = {}
        plain: list[str] = []
        for v in values or []:
            kind, path = split_data_flag(v)
            if kind is None:
                plain.append(path)
            elif kind in flags and flags[kind] != path:
                raise BenchError(f"--data gives two roots for {kind}: {flags[kind]} and {path}", f"pass --data {kind}=PATH once")
            else:
                flags[kind] = path
        if len(plain) > 1:
            raise BenchError(f"--data is given {len(plain)} plain paths ({', '.join(plain)})",
                             "name the dataset kind of each: --data voc07=PATH --data places205=PATH")
        return cls(flags=flags, plain=plain[0] if plain else None, config=config)

    def check_plain(self, kinds: list[str]) -> None:
        """A plain ``--data PATH`` is only unambiguous when every task of the run reads the same kind of dataset."""
        distinct = sorted(set(kinds))
        if self.plain is not None and len(distinct) > 1:
            raise BenchError(f"--data {self.plain} does not say which dataset it is; these tasks read {', '.join(distinct)}",
                             "write --data KIND=PATH for each, e.g. " + " ".join(f"--data {k}=PATH" for k in distinct))

    def lookup(self, kind: str) -> tuple[Path, str] | None:
        """(root, where it came from) or None."""
        if kind in self.flags:
            return Path(self.flags[kind]).expanduser(), f"--data {kind}=..."
        if self.plain is not None:
            return Path(self.plain).expanduser(), "--data"
        if kind in self.config.data:
            return self.config.data[kind], f"config {self.config.path}"
        return None

    def root(self, kind: str, task: str) -> Path:
        """The root for ``kind``, or a BenchError naming both ways to set it."""
        hit = self.lookup(kind)
        if hit is None:
            where = str(self.config.path) if self.config.path else f"./{CONFIG_NAME} or {user_config_path()}"
            raise BenchError(f"no {kind} dataset root for task {task}",
                             f'pass --data {kind}=PATH, or add {kind} = "PATH" under [data] in {where}')
        return hit[0]
