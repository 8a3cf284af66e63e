"""Typed configs: dataclasses filled from YAML/dicts, validated in one place.

``from_dict(Cls, data)`` builds a (possibly nested) dataclass and rejects
unknown keys by name, wrong types and missing required fields, so a typo in a
config file is an error rather than a silently ignored setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from uscl.errors import ConfigError

T = TypeVar("T")


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return data


def from_dict(cls: type[T], data: dict | None, *, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys are an error that names them."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key(s): {', '.join(prefix + k for k in unknown)} "
            f"(known: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        kwargs[name] = _coerce(hints[name], value, key)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}", param=_param(key))
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}", param=_param(key))
        return value
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}", param=_param(key))
        return from_dict(tp, value, where=key)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}", param=_param(key))
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}", param=_param(key))
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key}: expected true or false, got {value!r}", param=_param(key))
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}", param=_param(key))
        try:
            return int(value)
        except ValueError as exc:
            raise ConfigError(f"{key}: expected an integer, got {value!r}", param=_param(key)) from exc
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}", param=_param(key))
        try:
            return float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{key}: expected a number, got {value!r}", param=_param(key)) from exc
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{key}: expected a string, got {value!r}", param=_param(key))
        return str(value)
    if tp is Path:
        return Path(value)
    return value


def _param(key: str) -> str:
    """The setting a value error is about: ``only_folds[1]`` → ``only_folds``."""
    return key.split("[", 1)[0]


def setting_differences(saved: dict, now: Any, *, free: typing.Iterable[str] = (),
                        normalise: typing.Callable[[str, Any, dict], Any] | None = None) -> list[str]:
    """``key (run: X, now: Y)`` for each field of the dataclass ``now`` that differs from ``saved``.

    ``saved`` is the run's config as loaded from its YAML (a key it lacks takes
    the field's default); ``now`` goes through the same YAML round trip, so
    tuples and lists compare equal. ``free`` fields may differ; ``normalise(name,
    value, side)`` maps each value first (``side``: that side's whole config).
    """
    cls = type(now)
    defaults = yaml.safe_load(dump_yaml(cls()))
    then = {**defaults, **saved}
    current = yaml.safe_load(dump_yaml(now))
    out = []
    for f in dataclasses.fields(cls):
        if f.name in free:
            continue
        a, b = then.get(f.name), current.get(f.name)
        if normalise is not None:
            a, b = normalise(f.name, a, then), normalise(f.name, b, current)
        if a != b:
            out.append(f"{f.name} (run: {a!r}, now: {b!r})")
    return out


# -- command-line flags from the config dataclasses ------------------------------------------
def config_field(default: Any = dataclasses.MISSING, *, help: str = "", flag: str | None = None,
                 choices: typing.Callable[[], typing.Iterable[str]] | None = None,
                 metavar: str | None = None, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field that also describes its command-line flag.

    ``help``: the flag's help; ``flag``: its name when not ``--<field-name>`` with dashes;
    ``choices``: a function giving the allowed values when they are not a ``Literal``
    (a registry, read when the parser is built); ``metavar``: the flag's value in the help.
    Fields with help become flags through :func:`add_config_flags`.
    """
    meta = {"help": help, "flag": flag, "choices": choices, "metavar": metavar}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def config_flags(cls: type, prefix: str = "") -> list[tuple[str, str, dataclasses.Field, Any]]:
    """``(dotted key, flag, field, type)`` of every field of ``cls`` (and of its nested
    config dataclasses) declared with :func:`config_field` help."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += config_flags(tp, f"{prefix}{f.name}.")
        elif f.metadata.get("help"):
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            out.append((prefix + f.name, flag, f, tp))
    return out


def field_choices(cls: type, name: str) -> tuple | None:
    """The allowed values of field ``name`` of config dataclass ``cls``: its ``config_field``
    ``choices`` or its ``Literal`` type; None when any value of its type goes. For a flag
    that sets the same setting under another name (``uscl pipeline --finetune-mode``)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if f.metadata.get("choices"):
        return tuple(f.metadata["choices"]())
    return _flag_type(typing.get_type_hints(cls)[name])[1]


def field_help(cls: type, name: str) -> str:
    """The flag help declared with field ``name`` of ``cls`` (see :func:`config_field`)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.metadata.get("help", "")


def _flag_type(tp: Any) -> tuple[Any, tuple | None]:
    """(argparse type, Literal choices) of a field type; Optional[...] unwrapped."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _flag_type(inner[0])
        literals = tuple(v for a in inner if typing.get_origin(a) is typing.Literal for v in typing.get_args(a))
        return str, (literals or None)
    if origin is typing.Literal:
        return type(args[0]), args
    if tp in (int, float, str):
        return tp, None
    return str, None


def add_config_flags(parser, cls: type, *, skip: typing.Iterable[str] = ()) -> dict[str, str]:
    """Add a flag for each described field of config dataclass ``cls`` (defaults None: unset
    flags leave the YAML / dataclass default alone); returns ``{dest: dotted key}``.

    Booleans get ``--x`` / ``--no-x``. The flag names are remembered on the parser
    (``parser.config_flag_names``: dotted key → flag) so that the CLI can name the flag
    of a setting an error is about.
    """
    dests: dict[str, str] = {}
    names = getattr(parser, "config_flag_names", {})
    skip = set(skip)
    for key, flag, f, tp in config_flags(cls):
        if key in skip:
            continue
        dest = flag.lstrip("-").replace("-", "_")
        meta = f.metadata
        if _is_bool(tp):
            parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None,
                                help=meta["help"])
        else:
            ftype, literals = _flag_type(tp)
            choices = list(meta["choices"]()) if meta.get("choices") else (list(literals) if literals else None)
            parser.add_argument(flag, dest=dest, type=ftype, choices=choices, default=None, help=meta["help"],
                                metavar=meta.get("metavar"))
        dests[dest] = key
        names[key] = flag
    parser.config_flag_names = names
    return dests



def _is_bool(tp: Any) -> bool:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return inner == [bool]
    return tp is bool
