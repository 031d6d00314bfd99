"""Which stock ``make`` target reproduces a run, and with which variables.

A study's run is a config file plus overrides; a stock target (``make retinamnist`` ...) is
another config file plus the make variables a user types. Both are resolved with the config
loader and compared key by key, so the command shown is derived, not written by hand: the
target whose config differs least, then one make variable (or ``ARGS=key=value``) per key
that still differs. Keys that cannot change what is trained (output paths, threads, device,
transport settings) are left out.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from medsplit.config import load_config
from medsplit.config.schema import ConfigError

__all__ = ["STOCK_TARGETS", "MAKE_VARIABLES", "make_command", "config_differences"]

#: ``make`` target -> the config it trains (see the Makefile).
STOCK_TARGETS = {
    "retinopathy": "configs/retinopathy.yaml",
    "retinamnist": "configs/retinamnist.yaml",
    "eyepacs": "configs/eyepacs.yaml",
    "unet-seg": "configs/unet-seg.yaml",
}

#: Config key -> make variable (the Makefile's COMMON, RETINO and UNET forwarding).
MAKE_VARIABLES = {
    "split.cut": "CUT", "split.clients": "CLIENTS", "split.protocol": "PROTOCOL", "data.source": "DATA",
    "train.epochs": "EPOCHS", "train.seed": "SEED", "data.img_size": "SIZE", "data.partition": "PARTITION",
    "data.alpha": "ALPHA", "train.batch_size": "BATCH", "train.lr": "LR",
}
#: Variables only some targets forward, by target: every fundus target forwards the Makefile's
#: RETINO list (TARGET, MODEL); unet-seg forwards UNET (its model comes through BACKBONE).
_TARGET_ONLY = {target: {"data.target": "TARGET", "model.name": "MODEL"} for target in STOCK_TARGETS if target != "unet-seg"}

#: Keys that do not change what a run trains or scores.
_IGNORED_PREFIXES = ("output.", "split.transport", "split.address", "split.timeout_s")
_IGNORED = {"train.threads", "train.device", "data.root", "data.cache_dir", "train.eval_batch_size"}


def _flat(mapping: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _trained(config: str, overrides: tuple[str, ...]) -> dict:
    values = _flat(load_config(config, list(overrides)).to_dict())
    if values["data.source"] not in ("synthetic", "auto"):
        values.pop("data.synthetic_size")  # read only when the synthetic generator runs
    return {k: v for k, v in values.items() if k not in _IGNORED and not k.startswith(_IGNORED_PREFIXES)}


@lru_cache(maxsize=None)
def _resolved(config: str, overrides: tuple[str, ...]) -> tuple:
    return tuple(sorted(_trained(config, overrides).items()))


def config_differences(config: str, overrides: list[str], other: str, other_overrides: list[str] = ()) -> dict:
    """Keys whose values differ between two resolved configs: ``key -> value in the first``."""
    a, b = dict(_resolved(config, tuple(overrides))), dict(_resolved(other, tuple(other_overrides)))
    if "data.synthetic_size" not in a:  # real data in the first: the generator's size is never read
        b.pop("data.synthetic_size", None)
    return {k: a.get(k) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else str(value)


def make_command(config: str, overrides: list[str], root: Path | str = ".") -> str | None:
    """``make <target> VAR=value ... ARGS="key=value ..."`` that trains what ``config`` with
    ``overrides`` trains, or ``None`` when no stock target trains that task.

    Args:
        config: the study's config file, relative to ``root``.
        overrides: the study's ``key=value`` overrides for this run (protocol and seed included).
        root: the repository root the config paths are relative to.
    """
    root = Path(root)
    try:
        task = dict(_resolved(str(root / config), tuple(overrides)))["task"]
        candidates = []
        for target, stock in STOCK_TARGETS.items():
            if not (root / stock).exists():
                continue
            diff = config_differences(str(root / config), list(overrides), str(root / stock))
            if dict(_resolved(str(root / stock), ()))["task"] == task:
                candidates.append((len(diff), target, diff))
    except (ConfigError, OSError):
        return None
    if not candidates:
        return None
    _, target, diff = min(candidates)
    variables = {**MAKE_VARIABLES, **_TARGET_ONLY.get(target, {})}
    words, args = [f"make {target}"], []
    for key, value in diff.items():
        if key in variables:
            words.append(f"{variables[key]}={_value(value)}")
        else:
            args.append(f"{key}={_value(value)}")
    if args:
        words.append('ARGS="' + " ".join(args) + '"')
    return " ".join(words)
