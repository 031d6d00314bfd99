"""Configuration: dataclasses are the schema, YAML files hold values, ``key=value``
overrides on the command line win. Unknown keys and wrong types are rejected with a
message naming the key. The resolved config is saved with every run.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config value that cannot be used; the message names the key."""


@dataclass
class DataConfig:
    source: str = "auto"
    """eyepacs | kaggle | retinamnist | synthetic | auto (first present, else synthetic) | a path.
    For lungs: auto | synthetic | a set name under $MEDSPLIT_DATA/lungs | a path."""
    root: str = ""
    """Data root; empty means $MEDSPLIT_DATA, else ``datasets/``."""
    target: str = "referable"
    """Retinopathy target: any (grade > 0) | referable (grade >= 2) | grade (5 classes)."""
    img_size: int = 128
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    max_images: int | None = None
    synthetic_size: int = 600
    partition: str = "iid"
    """iid | dirichlet | label_skew | group (clients = image source/view)."""
    alpha: float = 0.5
    augment: bool = True
    aug_backend: str = "monai"
    """Segmentation augmentation: monai | albumentations."""
    cache_dir: str = ".cache/medsplit"


@dataclass
class ModelConfig:
    name: str = "resnet34"
    """resnet18 | resnet34 | resnet50 | unet-smp | unet-classic."""
    weights: str | None = None
    """Path to locally cached weights; nothing is ever downloaded."""
    base_channels: int = 64
    """Classic U-Net width (64 in the original study)."""


@dataclass
class SplitConfig:
    protocol: str = "sequential"
    """sequential (relay, as in the original study) | splitfed | centralised | fedavg."""
    cut: int = 3
    clients: int = 2
    serialise: bool = False
    """Encode/decode every message on the in-process channel (what a real transport does)."""
    compress_activations: str = "none"
    """Lossy codec for activations crossing a cut: none | fp16 | bf16 | int8 | topk0.1 | topk0.01."""
    compress_gradients: str = "none"
    """Lossy codec for gradients returned across a cut (same choices)."""
    optimizer_handover: str = "carry"
    """What happens to a hospital's optimiser state (Adam moments) when it takes in client weights:
    carry (the state travels with the weights: the relay hands it to the next hospital, the averaging
    protocols average it like the weights; counted as weights bytes) | reset (fresh state on every
    handover) | local (each hospital keeps its own moments, as before 2026-12; they then belong to
    weights it no longer holds)."""


@dataclass
class TrainConfig:
    epochs: int = 6
    batch_size: int = 32
    lr: float = 1e-3
    schedule: str = "constant"
    """constant | cosine: the learning rate of epoch e (from 0) is lr * (1 + cos(pi * e / epochs)) / 2,
    set on every party's optimiser as the epoch starts (no state, so a resumed run gets the same)."""
    optimizer: str = "adam"
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "auto"
    """auto (cuda when present) | cpu | cuda | cuda:N."""
    amp: bool = True
    """bf16 autocast on CUDA (ignored on CPU)."""
    channels_last: bool = True
    """channels_last memory format on CUDA (ignored on CPU)."""
    select_on: str = "auto"
    """Validation metric for picking the checkpoint that is tested: auto (auc / dice) or a metric name."""
    eval_batch_size: int = 128
    threads: int = 0
    """torch CPU threads; 0 keeps torch's default."""


@dataclass
class OutputConfig:
    name: str = ""
    """Run name; empty derives one from task, protocol, cut and clients."""
    runs_dir: str = "runs"
    reports_dir: str = "reports"
    tensorboard: bool = True


@dataclass
class Config:
    task: str = "retinopathy"
    """retinopathy | lungs."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def data_root(self) -> Path:
        return Path(self.data.root or os.environ.get("MEDSPLIT_DATA", "datasets"))

    def run_name(self) -> str:
        if self.output.name:
            return self.output.name
        where = "whole" if self.split.protocol in ("centralised", "fedavg") else f"cut{self.split.cut}"
        return f"{self.task}-{self.split.protocol}-{where}-clients{self.split.clients}-seed{self.train.seed}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


CHOICES = {
    "task": ("retinopathy", "lungs"),
    "data.target": ("any", "referable", "grade"),
    "data.partition": ("iid", "dirichlet", "label_skew", "group"),
    "data.aug_backend": ("monai", "albumentations"),
    "split.protocol": ("sequential", "splitfed", "centralised", "fedavg"),
    # Kept literal (not imported from medsplit.split.codecs) so loading a config needs no torch;
    # tests/test_codecs.py checks both lists agree.
    "split.compress_activations": ("none", "fp16", "bf16", "int8", "topk0.1", "topk0.01"),
    "split.compress_gradients": ("none", "fp16", "bf16", "int8", "topk0.1", "topk0.01"),
    "split.optimizer_handover": ("carry", "reset", "local"),
    "train.optimizer": ("adam", "adamw", "sgd"),
    "train.schedule": ("constant", "cosine"),
}


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Build a :class:`Config` from a YAML file (optional) and ``key=value`` overrides."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
        if not isinstance(values, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
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


def validate(cfg: Config) -> None:
    """Check choices and ranges that types alone do not express."""
    for key, valid in CHOICES.items():
        value = _get_dotted(cfg, key)
        if value not in valid:
            raise ConfigError(f"config key {key!r} is {value!r}; valid choices are {list(valid)}")
    checks = [
        ("split.clients", cfg.split.clients >= 1, "must be >= 1"),
        ("train.epochs", cfg.train.epochs >= 1, "must be >= 1"),
        ("train.batch_size", cfg.train.batch_size >= 2, "must be >= 2 (BatchNorm needs more than one sample)"),
        ("train.lr", cfg.train.lr > 0, "must be > 0"),
        ("data.img_size", cfg.data.img_size >= 16, "must be >= 16"),
        ("data.alpha", cfg.data.alpha > 0, "must be > 0"),
        ("data.val_fraction", 0 < cfg.data.val_fraction < 1, "must be in (0, 1)"),
        ("data.test_fraction", 0 < cfg.data.test_fraction < 1, "must be in (0, 1)"),
    ]
    for key, ok, why in checks:
        if not ok:
            raise ConfigError(f"config key {key!r} = {_get_dotted(cfg, key)!r} {why}")


def _get_dotted(cfg: Config, key: str) -> Any:
    node: Any = cfg
    for p in key.split("."):
        node = getattr(node, p)
    return node


def config_from_dict(values: dict) -> Config:
    """Rebuild a saved (resolved) config, e.g. from a run directory."""
    cfg = _build(Config, values, prefix="")
    validate(cfg)
    return cfg


# ---------------------------------------------------------------------------------------
# help text generated from the schema (``medsplit train --help``)


def _field_docs(cls) -> dict[str, str]:
    """The docstring written under each field of a dataclass (read from the source; Python
    keeps no attribute docstrings at run time)."""
    import ast
    import inspect

    try:
        tree = ast.parse(inspect.getsource(cls))
    except (OSError, TypeError):  # no source (frozen app): no docs
        return {}
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr) \
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def describe_keys() -> list[dict[str, Any]]:
    """Every settable key with its default, choices (or type) and documentation, in schema order."""
    rows = []

    def walk(cls, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        docs = _field_docs(cls)
        default = cls()
        for f in dataclasses.fields(cls):
            key = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{key}.")
                continue
            hint = hints[f.name]
            type_name = " | ".join(a.__name__ if a is not type(None) else "null" for a in typing.get_args(hint)) \
                if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint.__name__
            rows.append({"key": key, "default": getattr(default, f.name), "choices": CHOICES.get(key),
                         "type": type_name, "doc": docs.get(f.name, "")})

    walk(Config, "")
    return rows


def keys_help(width: int = 100) -> str:
    """The settings block of ``medsplit train --help``: one entry per key, its default, its
    choices (or type) and the first sentence of its documentation."""
    import textwrap

    lines = []
    section = None
    for row in describe_keys():
        head = row["key"].split(".")[0] if "." in row["key"] else ""
        if head != section:
            section = head
            lines.append(f"  {head or 'top level'}:")
        value = row["default"]
        default = "null" if value is None else str(value).lower() if isinstance(value, bool) else \
            (repr(value) if value == "" else value)
        allowed = " | ".join(row["choices"]) if row["choices"] else row["type"]
        lines.append(f"    {row['key']}={default}   ({allowed})")
        doc = row["doc"]
        if doc and doc.rstrip(".") != allowed:
            lines.extend(textwrap.wrap(doc, width=width, initial_indent="        ", subsequent_indent="        "))
    return "\n".join(lines)
