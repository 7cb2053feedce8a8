"""Typed dataclass trees from plain data: the machinery behind `config.py`.

Generic over any tree of dataclasses whose fields are bool/int/float/str, `Literal`, lists
and optional unions of those: list the dotted keys, coerce YAML and command-line values to
the declared types, and build the tree, with one-line errors that name the key. Written here
rather than taken from a library because the errors must name warmstart's keys and suggest
the nearest one, and `3e-5` on a command line must read as the number users mean.

A section whose keys depend on one of its values (the strategy's options depend on the
strategy's name) says so itself: a dataclass with the classmethods `typed_keys(prefix)`,
`typed_help(prefix)` and `typed_build(data, prefix)` is listed and built by them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

import yaml

from warmstart.errors import WarmstartError, did_you_mean


def documented(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with its documentation attached (shown by --help and in errors)."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda d=default: list(d),
                                 metadata={"help": help}, **kw)
    return dataclasses.field(default=default, metadata={"help": help}, **kw)


def check(cond: bool, key: str, msg: str) -> None:
    """Raise a one-line error naming `key` unless `cond` holds (for checks of values)."""
    if not cond:
        raise WarmstartError(f"config key {key!r}: {msg}")


def keys_of(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key the config accepts, e.g. `optim.lr`."""
    keys = []
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if hasattr(hint, "typed_keys"):
            keys += hint.typed_keys(f"{prefix}{f.name}.")
        elif dataclasses.is_dataclass(hint):
            keys += keys_of(hint, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def help_of(cls: type, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, default, help) for every leaf field, for --help output."""
    rows = []
    inst = cls()
    for f in dataclasses.fields(cls):
        value = getattr(inst, f.name)
        if hasattr(value, "typed_help"):
            rows += value.typed_help(f"{prefix}{f.name}.")
        elif dataclasses.is_dataclass(value):
            rows += help_of(type(value), f"{prefix}{f.name}.")
        else:
            rows.append((prefix + f.name, value, f.metadata.get("help", "")))
    return rows


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert a YAML value to the declared type, or raise naming the key."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for option in inner[:-1]:  # the first member that accepts the value wins
            try:
                return coerce(value, option, key)
            except WarmstartError:
                pass
        return coerce(value, inner[-1], key)
    if origin is Literal:
        if value not in args:
            raise WarmstartError(
                f"config key {key!r}: {value!r} is not one of {', '.join(map(str, args))}"
                + did_you_mean(str(value), map(str, args))
            )
        return value
    if origin is list:
        if isinstance(value, str):  # `a,b,c` from the command line
            value = [scalar(v.strip()) for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise WarmstartError(f"config key {key!r}: expected a list, got {value!r}")
        return [coerce(v, args[0], key) for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise WarmstartError(f"config key {key!r}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise WarmstartError(f"config key {key!r}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads `lr: 1e-4` as a string: it is a number
            value = scalar(value.strip())
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise WarmstartError(f"config key {key!r}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise WarmstartError(f"config key {key!r}: expected a string, got {value!r}")
    raise TypeError(f"unsupported config type {hint!r} for {key}")  # a bug, not user input


def build(data: dict[str, Any], cls: type, prefix: str = "") -> Any:
    """Build a (nested) dataclass `cls` from a dict, checking every key and value."""
    if not isinstance(data, dict):
        raise WarmstartError(f"config section {prefix.rstrip('.') or 'top'!r} must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = prefix + str(key)
        if key not in names:
            hint = did_you_mean(dotted, keys_of(cls, prefix))
            raise WarmstartError(f"unknown config key {dotted!r}{hint}")
        hint = hints[key]
        if hasattr(hint, "typed_build"):
            kwargs[key] = hint.typed_build(value or {}, dotted + ".")
        elif dataclasses.is_dataclass(hint):
            kwargs[key] = build(value or {}, hint, dotted + ".")
        else:
            kwargs[key] = coerce(value, hint, dotted)
    return cls(**kwargs)


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise WarmstartError(f"config key {dotted!r}: {part!r} is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`optim.lr=3e-5` -> ("optim.lr", 3e-5); the value is read as YAML."""
    if "=" not in text:
        raise WarmstartError(f"override {text!r} must look like key.sub=value (e.g. optim.lr=3e-5)")
    key, raw = text.split("=", 1)
    return key.strip(), (scalar(raw) if raw != "" else None)


def scalar(raw: str) -> Any:
    """A command-line value read as YAML, with `3e-5` read as the number users mean."""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if isinstance(value, str):  # YAML reads 3e-5 as a string (it wants 3.0e-5)
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            pass
    return value
