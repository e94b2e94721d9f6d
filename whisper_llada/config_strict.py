"""Strict typed configs: frozen dataclasses built from nested mappings (unknown keys and wrong types refused, naming the key), back to plain dicts, and `a.b.c=value` overrides parsed as YAML.

The schema itself (the sections and their defaults) and YAML loading with `base:` files and
the path rule are `config`'s.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """A configuration file or override that does not match the schema."""


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`base` with `update` laid over it, section by section (a `base:` file under its includer)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass `cls` from a nested mapping, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise ConfigError(
                f"unknown key '{where}{key}'; valid keys{' of ' + where[:-1] if where else ''}: "
                + ", ".join(names)
            )
    values = {key: _coerce(hints[key], value, f"{where}{key}") for key, value in data.items()}
    return cls(**values)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of a config (tuples as lists), e.g. to store in a checkpoint."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value if value is not None else {}, f"{where}.")
    if origin is Literal:
        if value not in get_args(hint):
            raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(hint))}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(option, value, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError("; ".join(errors))
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        items = get_args(hint)
        if len(items) == 2 and items[1] is Ellipsis:
            return tuple(_coerce(items[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(items):
            raise ConfigError(
                f"{where}: expected a list of {len(items)} values, got {len(value)}: {value!r}"
            )
        return tuple(
            _coerce(t, v, f"{where}[{i}]")
            for i, (t, v) in enumerate(zip(items, value, strict=True))
        )
    if hint is float and isinstance(value, int | float | str) and not isinstance(value, bool):
        try:  # YAML 1.1 reads 1e-5 (no dot) as a string
            number = float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected float, got {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return number
    if hint in (int, float, str, bool) and (
        not isinstance(value, hint) or (hint is int and isinstance(value, bool))
    ):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def apply_override(data: dict[str, Any], override: str) -> tuple[str, ...]:
    """Set `a.b.c=value` in a nested dict and return its key path; the value is parsed as YAML (so 1e-5, true, [a, b])."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r} must look like section.key=value")
    *parents, leaf = key.strip().split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: '{part}' is not a section")
    try:
        node[leaf] = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        problem = str(error).splitlines()[0]
        raise ConfigError(
            f"override {override!r}: its value is not valid YAML ({problem}); quote strings "
            "and close lists, e.g. decode.steps=64 or data.train_manifests=[a.jsonl, b.jsonl]"
        ) from None
    return (*parents, leaf)
