"""Building a config from values: a YAML file (or a shipped config by name), then ``key=value``
overrides on top, each value checked against the schema's type (unknown keys and wrong types
name the key, and a mistyped key gets a suggestion), then
:func:`~medsplit.config.validation.validate`. Also rebuilds a saved config and applies
overrides to any dataclass (attack settings)."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from medsplit.config.schema import Config, ConfigError
from medsplit.config.validation import validate
from medsplit.yaml_file import load_yaml, read_yaml_mapping


#: The configs shipped inside the package (``configs/`` at the top of a checkout links here).
SHIPPED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def shipped_config_names() -> list[str]:
    """Names of the configs shipped with medsplit (``retinopathy``, ``unet-seg``, ...)."""
    return sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.yaml"))


def config_path(config: str | Path) -> Path:
    """The YAML file ``config`` names: a path, or the name of a shipped config
    (``retinopathy`` is ``medsplit/configs/retinopathy.yaml``, found also in an installed wheel).
    A path wins over a shipped config of the same name.

    Raises:
        ConfigError: a bare name that is neither a file nor a shipped config (the message lists
            the shipped ones and suggests the closest).
    """
    path = Path(config)
    if path.exists() or path.suffix or len(path.parts) != 1:
        return path  # a missing path is reported by the reader, naming the file
    shipped = SHIPPED_CONFIGS / f"{path.name}.yaml"
    if shipped.is_file():
        return shipped
    names = shipped_config_names()
    raise ConfigError(f"config {str(config)!r} is neither a file nor a shipped config{_did_you_mean(difflib.get_close_matches(str(config), names, n=2, cutoff=0.6))} "
                      f"shipped configs: {', '.join(names)}")


def load_config(path: str | Path | None = None, overrides: list[str] | Mapping[str, Any] | None = None) -> Config:
    """Build a :class:`Config` from a YAML file (optional) and overrides.

    Args:
        path: a YAML file, or a shipped config's name (``retinopathy``; see :func:`config_path`).
        overrides: settings applied on top: ``key=value`` strings as on the command line
            (``["split.cut=3", "train.epochs=2"]``, values read as YAML), or a mapping from dotted
            key to Python value (``{"split.cut": 3}``).
    """
    values: dict = {}
    if path is not None:
        values = read_yaml_mapping(config_path(path), "config file", ConfigError)
    return _with_settings(values, overrides)


def config_with(cfg: Config, overrides: list[str] | Mapping[str, Any]) -> Config:
    """A checked copy of ``cfg`` with overrides (as :func:`load_config` takes them) applied."""
    return _with_settings(cfg.to_dict(), overrides)


def _with_settings(values: dict, overrides: list[str] | Mapping[str, Any] | None) -> Config:
    items = overrides.items() if isinstance(overrides, Mapping) else (parse_override(o) for o in overrides or [])
    for key, value in items:
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
        value = load_yaml(raw) if raw.strip() else ""
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


def _build(cls, values: dict, prefix: str, root=None):
    root = root or cls
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        key = prefix + unknown[0]
        same_leaf = [k for k in _dotted_keys(root) if k.rsplit(".", 1)[-1] == unknown[0]]  # train.cut -> split.cut
        close = [prefix + k for k in difflib.get_close_matches(unknown[0], sorted(known), n=2, cutoff=0.6)]
        raise ConfigError(f"unknown config key {key!r}{_did_you_mean([*same_leaf, *close])} valid keys under "
                          f"{prefix.rstrip('.') or 'the top level'} are {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, prefix=f"{key}.", root=root)
        else:
            kwargs[name] = _coerce(key, value, hint)
    return cls(**kwargs)


def _dotted_keys(cls, prefix: str = "") -> list[str]:
    """Every settable key of the dataclass ``cls``, dotted (``split.cut``)."""
    keys = []
    for name, hint in typing.get_type_hints(cls).items():
        if name in {f.name for f in dataclasses.fields(cls)}:
            keys.extend(_dotted_keys(hint, f"{prefix}{name}.") if dataclasses.is_dataclass(hint) else [prefix + name])
    return keys


def _did_you_mean(guesses: list[str]) -> str:
    """``"; did you mean 'x' or 'y'?"`` (at most two guesses), or ``";"`` when there is none."""
    guesses = list(dict.fromkeys(guesses))[:2]
    return f"; did you mean {' or '.join(repr(g) for g in guesses)}?" if guesses else ";"


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
