"""Config checks that types alone do not express: choices, ranges and the pairs of keys that
must agree (task and model, model and image size, protocol and transport, clients and images,
the run folder's name), so a bad config stops before any image is decoded or file written."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

# torch-free, like this package: loading a config must not import torch
from medsplit.config.dropout_schedule import most_absent, parse_dropout
from medsplit.config.schema import CHOICES, Config, ConfigError
from medsplit.protocol_names import BUILTIN, protocol_facts
from medsplit.data.image_size import MIN_IMAGE_SIZE


# Which models each task can train. A classifier on a segmentation task would ship the masks to
# the server as labels and crash later on a shape assertion, so the pair is checked up front.
TASK_MODELS = {
    "retinopathy": ("resnet18", "resnet34", "resnet50"),
    "lungs": ("unet-smp", "unet-classic"),
}
# Tasks whose targets are one class per image (train.sampling=class-balanced balances them); kept
# literal so loading a config needs no torch; tests/train/test_training.py checks it against the tasks.
CLASSIFICATION_TASKS = ("retinopathy",)
# The classic U-Net halves the image in each of its 4 encoder blocks and concatenates skips of
# matching size, so its image side must be a multiple of 2 ** 4. (smp's decoder resizes each
# upsampled map to its skip, so unet-smp takes any size: 16..128 px checked, including 20 and 100.)
IMAGE_MULTIPLE = {"unet-classic": 16}
# The built-in protocols whose parties can run as separate processes (split.transport=gloo | flare),
# from the torch-free facts of medsplit.protocol_names (tests/train/test_protocols.py checks them against the classes).
PROCESS_PROTOCOLS = tuple(n for n, facts in BUILTIN.items() if facts.runs_as_processes)
# The protocols whose runs go on over FLARE when a hospital's site dies (split.min_hospitals; tests/flare/test_flare_dropout.py).
FLARE_DROPOUT_PROTOCOLS = ("splitfed", "sequential")


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
        ("split.secret_file", cfg.split.secret_file is None or (isinstance(cfg.split.secret_file, str) and cfg.split.secret_file.strip() != ""),
         "must be the path of a file holding the shared secret, or null"),
        ("split.secret_file", cfg.split.secret_file is None or cfg.split.transport == "gloo",
         f"authenticates the gloo transport only (split.transport={cfg.split.transport}; FLARE authenticates its sites itself)"),
        ("split.microbatches", cfg.split.microbatches >= 1, "must be >= 1 (1: the whole batch at once)"),
        ("split.microbatches", cfg.split.microbatches <= max(1, t.batch_size // 2),
         f"must be at most train.batch_size / 2 = {t.batch_size // 2} (each micro-batch needs two images for BatchNorm)"),
        ("train.sampling", cfg.train.sampling == "shuffle" or cfg.task in CLASSIFICATION_TASKS,
         f"needs class labels (task={cfg.task} segments; use shuffle)"),
        ("train.label_smoothing", math.isfinite(t.label_smoothing) and 0 <= t.label_smoothing < 1, "must be in [0, 1)"),
        ("train.label_smoothing", t.label_smoothing == 0 or cfg.task in CLASSIFICATION_TASKS,
         f"needs class labels (task={cfg.task} segments; use 0)"),
        ("split.protocol", cfg.split.transport == "inprocess" or protocol_facts(cfg.split.protocol).runs_as_processes,
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
    _check_dropout(cfg)
    _check_run_name(cfg)


def _check_dropout(cfg: Config) -> None:
    """``split.min_hospitals`` and ``split.dropout`` agree with each other and the protocol."""
    s = cfg.split
    schedule = parse_dropout(s.dropout, s.clients)
    if s.min_hospitals is None and not schedule:
        return
    if protocol_facts(s.protocol).pooled:
        raise ConfigError(f"config keys 'split.min_hospitals' / 'split.dropout' need hospitals that train apart "
                          f"(split.protocol={s.protocol} pools every hospital's images in one party)")
    if s.min_hospitals is not None and not 1 <= s.min_hospitals <= s.clients:
        raise ConfigError(f"config key 'split.min_hospitals' = {s.min_hospitals} must be in 1..{s.clients} (split.clients) or null (all)")
    if s.transport == "flare" and s.protocol not in FLARE_DROPOUT_PROTOCOLS:
        raise ConfigError(f"config key 'split.min_hospitals' with split.transport=flare is supported for split.protocol in "
                          f"{list(FLARE_DROPOUT_PROTOCOLS)} (a FLARE site killed mid-epoch is tested for those), not "
                          f"split.protocol={s.protocol}; use inprocess or gloo")
    if schedule and s.transport != "inprocess":
        raise ConfigError(f"config key 'split.dropout' schedules dropouts in one process (split.transport=inprocess); "
                          f"over {s.transport} a hospital drops out by failing (split.min_hospitals lets the run go on)")
    minimum = s.clients if s.min_hospitals is None else s.min_hospitals
    absent = most_absent(schedule, cfg.train.epochs)
    if s.clients - absent < minimum:
        raise ConfigError(f"config key 'split.dropout' = {s.dropout!r} leaves {s.clients - absent} of {s.clients} hospitals, "
                          f"fewer than split.min_hospitals = {minimum}" + (" (null: all)" if s.min_hospitals is None else "")
                          + f"; set split.min_hospitals to at most {s.clients - absent}")


# The fewest training images a hospital may hold (medsplit.data.partition's ``min_per_client``
# default, kept literal so loading a config needs no torch; tests/train/test_run_folder.py checks both agree).
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
