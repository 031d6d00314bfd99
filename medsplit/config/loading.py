"""Building a config from values: a YAML file, then ``key=value`` overrides on top, each value
checked against the schema's type (unknown keys and wrong types name the key), then
:func:`~medsplit.config.validation.validate`. Also rebuilds a saved config and applies
overrides to any dataclass (attack settings)."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from medsplit.config.schema import Config, ConfigError
from medsplit.config.validation import validate
from medsplit.yaml_file import read_yaml_mapping


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Build a :class:`Config` from a YAML file (optional) and ``key=value`` overrides."""
    values: dict = {}
    if path is not None:
        values = read_yaml_mapping(Path(path), "config file", ConfigError)
    for item in overrides or []:
        key, value = parse_override(item)
        _set_dotted(values, key, value)
    cfg = _build(Config, values, prefix="")
    validate(cfg)
    return cfg


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value (e.g. split.cut=3)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has no key")
    # YAML parses numbers, booleans and null the way a user expects ("3" -> 3, "null" -> None).
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def with_overrides(obj, overrides: list[str]):
    """A copy of the dataclass ``obj`` with ``key=value`` overrides applied (``fsha.iterations=3000``
    for a nested field), checked like a config file: unknown keys and wrong types name the key."""
    values = dataclasses.asdict(obj)
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(values, key, value)
    return _build(type(obj), values, prefix="")


def _set_dotted(values: dict, key: str, value: Any) -> None:
    node = values
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {p!r} is not a section")
    node[parts[-1]] = value


def _build(cls, values: dict, prefix: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown config key {prefix + unknown[0]!r}; valid keys under {prefix.rstrip('.') or 'the top level'} are {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, prefix=f"{key}.")
        else:
            kwargs[name] = _coerce(key, value, hint)
    return cls(**kwargs)


def _coerce(key: str, value: Any, hint) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _coerce(key, value, opt)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    else:  # pragma: no cover - the schema only uses the types above
        return value
    raise ConfigError(f"config key {key!r} must be {hint.__name__}, got {value!r} ({type(value).__name__})")


def config_from_dict(values: dict) -> Config:
    """Rebuild a saved (resolved) config, e.g. from a run directory."""
    cfg = _build(Config, values, prefix="")
    validate(cfg)
    return cfg
