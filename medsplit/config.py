"""Configuration: dataclasses are the schema, YAML files hold values, ``key=value``
overrides on the command line win. Unknown keys and wrong types are rejected with a
message naming the key. The resolved config is saved with every run.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pkgutil
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# torch-free, like this module: loading a config must not import torch
from medsplit.data.image_size import MIN_IMAGE_SIZE
from medsplit.yaml_file import read_yaml_mapping


class ConfigError(ValueError):
    """A config value that cannot be used; the message names the key."""


def default_data_root() -> Path:
    """The data root when none is given: ``$MEDSPLIT_DATA``, else ``datasets/`` (training and attacks alike)."""
    return Path(os.environ.get("MEDSPLIT_DATA", "datasets"))


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
    duplicates: str = "error"
    """Images of identical content (by hash) in a folder source: error (stop, naming both files) |
    drop (keep the first copy; the dropped ones are listed in the run's data summary)."""


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
    """sequential (relay, as in the original study) | splitfed (SFL-V2: one shared server model) |
    splitfed-v1 (SFL-V1: one server copy per hospital, averaged each round) | centralised | fedavg."""
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
    transport: str = "inprocess"
    """inprocess (every party in this process) | gloo (each hospital and the server in its own
    process, torch.distributed over TCP; sequential and splitfed only). See README "Parties as processes".
    | flare (server and hospitals as NVIDIA FLARE sites in FLARE's simulator; needs the flare extra;
    see README "Hospital deployment on NVIDIA FLARE")."""
    address: str = "127.0.0.1:0"
    """HOST:PORT of the server's rendezvous for transport=gloo; port 0 picks a free one (local runs)."""
    timeout_s: float = 120.0
    """How long a party waits for another before naming it as not answering (transport=gloo)."""


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
    keep_checkpoint: bool = False
    """Keep ``checkpoint.pt`` (all parties' weights and optimiser state: 341 MB for a two-hospital
    ResNet-34 relay, measured, against 85 MB for ``model.safetensors``)
    once the run has finished. Off: a finished run keeps its weights in ``model.safetensors`` and
    cannot be continued; on: ``--resume RUN_DIR train.epochs=N --allow-change train.epochs``
    continues it exactly. An unfinished run always keeps its checkpoint."""


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
        return Path(self.data.root) if self.data.root else default_data_root()

    def run_name(self) -> str:
        if self.output.name:
            return self.output.name
        from medsplit.train.protocols import protocol_class  # torch: imported when a run is named, not with the config

        where = f"cut{self.split.cut}" if protocol_class(self.split.protocol).split else "whole"
        return f"{self.task}-{self.split.protocol}-{where}-clients{self.split.clients}-seed{self.train.seed}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


#: Listing order of the built-in protocols (split ones first); a protocol added as a new module
#: follows them in name order.
_PROTOCOL_ORDER = ("sequential", "splitfed", "splitfed-v1", "centralised", "fedavg")


def protocol_module_names() -> tuple[str, ...]:
    """The ``split.protocol`` choices: one per module of ``medsplit/train/protocols/`` (a
    protocol's module is named after it, ``-`` written ``_``; ``register`` enforces this), so a
    new protocol is one new file and loading a config still imports no torch."""
    folder = Path(__file__).resolve().parent / "train" / "protocols"
    found = {m.name.replace("_", "-") for m in pkgutil.iter_modules([str(folder)]) if m.name != "base"}
    return tuple(n for n in _PROTOCOL_ORDER if n in found) + tuple(sorted(found - set(_PROTOCOL_ORDER)))


CHOICES = {
    "task": ("retinopathy", "lungs"),
    "data.target": ("any", "referable", "grade"),
    "data.partition": ("iid", "dirichlet", "label_skew", "group"),
    "data.aug_backend": ("monai", "albumentations"),
    "data.duplicates": ("error", "drop"),
    # Every module of medsplit/train/protocols/ (read from the file names: loading a config
    # needs no torch); tests/test_protocols.py checks it equals PROTOCOL_NAMES.
    "split.protocol": protocol_module_names(),
    # Kept literal (not imported from medsplit.split.codecs) so loading a config needs no torch;
    # tests/test_codecs.py checks both lists agree.
    "split.compress_activations": ("none", "fp16", "bf16", "int8", "topk0.1", "topk0.01"),
    "split.compress_gradients": ("none", "fp16", "bf16", "int8", "topk0.1", "topk0.01"),
    "split.optimizer_handover": ("carry", "reset", "local"),
    "split.transport": ("inprocess", "gloo", "flare"),
    "train.optimizer": ("adam", "adamw", "sgd"),
    "train.schedule": ("constant", "cosine"),
}


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


# Which models each task can train. A classifier on a segmentation task would ship the masks to
# the server as labels and crash later on a shape assertion, so the pair is checked up front.
TASK_MODELS = {
    "retinopathy": ("resnet18", "resnet34", "resnet50"),
    "lungs": ("unet-smp", "unet-classic"),
}
# The classic U-Net halves the image in each of its 4 encoder blocks and concatenates skips of
# matching size, so its image side must be a multiple of 2 ** 4. (smp's decoder resizes each
# upsampled map to its skip, so unet-smp takes any size: 16..128 px checked, including 20 and 100.)
IMAGE_MULTIPLE = {"unet-classic": 16}
# The protocols whose parties can run as separate processes (split.transport=gloo | flare): those
# with ``runs_as_processes`` in medsplit.train.protocols, kept literal so loading a config needs no
# torch; tests/test_protocols.py checks both agree.
PROCESS_PROTOCOLS = ("sequential", "splitfed")


def _runs_as_processes(protocol: str) -> bool:
    """Whether ``protocol``'s parties can be separate processes: the literal list for the built-in
    ones (no torch), the class itself for a protocol added as a new module."""
    if protocol in _PROTOCOL_ORDER:
        return protocol in PROCESS_PROTOCOLS
    from medsplit.train.protocols import PROTOCOLS

    return bool(PROTOCOLS[protocol].runs_as_processes)


def validate(cfg: Config) -> None:
    """Check choices and ranges that types alone do not express, and the pairs of keys that must
    agree; everything that can be known without reading data is checked here, so a bad config
    stops before any image is decoded or any file is written."""
    for key, valid in CHOICES.items():
        value = _get_dotted(cfg, key)
        if value not in valid:
            raise ConfigError(f"config key {key!r} is {value!r}; valid choices are {list(valid)}")
    d, t = cfg.data, cfg.train
    checks = [
        ("split.clients", cfg.split.clients >= 1, "must be >= 1"),
        ("split.cut", cfg.split.cut >= 0, "must be >= 0"),
        ("train.epochs", t.epochs >= 1, "must be >= 1"),
        ("train.batch_size", t.batch_size >= 2, "must be >= 2 (BatchNorm needs more than one sample)"),
        ("train.eval_batch_size", t.eval_batch_size >= 1, "must be >= 1"),
        ("train.lr", math.isfinite(t.lr) and t.lr > 0, "must be a finite number > 0"),
        ("train.weight_decay", math.isfinite(t.weight_decay) and t.weight_decay >= 0, "must be a finite number >= 0"),
        ("train.seed", t.seed >= 0, "must be >= 0"),
        ("train.threads", t.threads >= 0, "must be >= 0 (0 keeps torch's default)"),
        ("data.img_size", d.img_size >= MIN_IMAGE_SIZE, f"must be >= {MIN_IMAGE_SIZE}"),
        ("data.alpha", math.isfinite(d.alpha) and d.alpha > 0, "must be a finite number > 0"),
        ("data.val_fraction", 0 < d.val_fraction < 1, "must be in (0, 1)"),
        ("data.test_fraction", 0 < d.test_fraction < 1, "must be in (0, 1)"),
        ("data.max_images", d.max_images is None or d.max_images >= 3, "must be >= 3 (one image per split) or null (all images)"),
        ("data.synthetic_size", d.synthetic_size >= 10, "must be >= 10"),
        ("model.base_channels", cfg.model.base_channels >= 1, "must be >= 1"),
        ("split.timeout_s", cfg.split.timeout_s > 0, "must be > 0"),
        ("split.protocol", cfg.split.transport == "inprocess" or _runs_as_processes(cfg.split.protocol),
         f"runs in one process only (split.transport={cfg.split.transport} supports {' and '.join(PROCESS_PROTOCOLS)})"),
    ]
    for key, ok, why in checks:
        if not ok:
            raise ConfigError(f"config key {key!r} = {_get_dotted(cfg, key)!r} {why}")
    if d.val_fraction + d.test_fraction >= 1:
        raise ConfigError(f"config keys 'data.val_fraction' + 'data.test_fraction' = {d.val_fraction} + {d.test_fraction} "
                          "leave no training images; their sum must be < 1")
    models = TASK_MODELS[cfg.task]
    if cfg.model.name not in models:
        raise ConfigError(f"config key 'model.name' = {cfg.model.name!r} cannot train task={cfg.task!r}; "
                          f"valid models for {cfg.task} are {list(models)}")
    multiple = IMAGE_MULTIPLE.get(cfg.model.name)
    if multiple and d.img_size % multiple:
        raise ConfigError(f"config key 'data.img_size' = {d.img_size} does not suit model.name={cfg.model.name!r}, "
                          f"which needs a multiple of {multiple} (e.g. {max(multiple, d.img_size // multiple * multiple)})")
    _check_client_count(cfg)
    _check_run_name(cfg)


# The fewest training images a hospital may hold (medsplit.data.partition's ``min_per_client``
# default, kept literal so loading a config needs no torch; tests/test_run_folder.py checks both agree).
MIN_IMAGES_PER_CLIENT = 8


def _check_client_count(cfg: Config) -> None:
    """A client count the images cannot cover even before the val/test split is impossible;
    say so before loading anything (the partition checks the exact count after loading)."""
    limits = []
    if cfg.data.max_images is not None:
        limits.append(("data.max_images", cfg.data.max_images))
    if cfg.data.source == "synthetic":
        limits.append(("data.synthetic_size", cfg.data.synthetic_size))
    for key, n in limits:
        if cfg.split.clients * MIN_IMAGES_PER_CLIENT > n:
            raise ConfigError(f"config key 'split.clients' = {cfg.split.clients} is impossible: {key} = {n} images cannot give "
                              f"every hospital {MIN_IMAGES_PER_CLIENT} training images; use fewer clients or more images")


def _check_run_name(cfg: Config) -> None:
    """A run folder lies directly inside ``output.runs_dir``: a name with a path separator, ``..``
    or an absolute path would write (or, with ``--overwrite``, delete) somewhere else."""
    name = cfg.output.name
    if not name:
        return
    if name in (".", "..") or any(c in name for c in ("/", "\\", "\x00")) or Path(name).is_absolute():
        raise ConfigError(f"config key 'output.name' = {name!r} must be a plain folder name inside output.runs_dir "
                          "(no '/', '\\', '..' or absolute path)")


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
