"""Rules for a run folder: one run per folder, never mixed with another config's.

* A new run refuses a folder that already holds files, unless told to ``overwrite`` it.
* A checkpoint records the resolved config it was trained under (and its hash); resuming under
  a different config is refused, listing the keys that differ. Only the keys in
  :data:`RESUMABLE` may change, and only when named (``--allow-change train.epochs``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Iterable

from medsplit.config import Config, ConfigError

# Keys that do not change what has been trained so far, so a run may continue under a new value
# when the user names them: more epochs (with a cosine schedule the remaining epochs follow the
# new schedule), another device or thread count, where reports, logs and caches go, and how much
# of the run folder is kept.
RESUMABLE = (
    "train.epochs", "train.device", "train.threads", "train.eval_batch_size", "data.cache_dir",
    "output.tensorboard", "output.mlflow", "output.reports_dir", "output.runs_dir", "output.keep_checkpoint",
)


class RunFolderError(ConfigError):
    """A run folder that cannot be used as asked (occupied, or holding another config's run)."""


def config_hash(values: dict) -> str:
    """SHA-256 of a resolved config (as :meth:`Config.to_dict` gives it), independent of key order."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def config_diff(saved: dict, new: dict, defaults: dict | None = None, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ. A key the saved config lacks (written before the key
    existed) counts as equal when the new config holds its default."""
    defaults = defaults if defaults is not None else Config().to_dict()
    keys = []
    for k in sorted(set(saved) | set(new)):
        a, b = saved.get(k), new.get(k)
        if isinstance(a, dict) or isinstance(b, dict):
            keys += config_diff(a if isinstance(a, dict) else {}, b if isinstance(b, dict) else {},
                                defaults.get(k) if isinstance(defaults.get(k), dict) else {}, f"{prefix}{k}.")
        elif k not in saved and k in defaults and b == defaults[k]:
            continue
        elif a != b:
            keys.append(f"{prefix}{k}")
    return keys


def check_allowed_changes(allow_change: Iterable[str]) -> tuple[str, ...]:
    """The ``--allow-change`` keys, each one that may change on resume."""
    allow = tuple(allow_change)
    bad = [k for k in allow if k not in RESUMABLE]
    if bad:
        raise RunFolderError(f"--allow-change {bad[0]}: this key changes what was already trained, so a run cannot "
                             f"continue under a new value; keys that may change on resume are {list(RESUMABLE)}")
    return allow


def check_resume(run_dir: Path, saved: dict, cfg: Config, allow_change: Iterable[str] = ()) -> list[str]:
    """Refuse to continue the run in ``run_dir`` (trained under ``saved``) with ``cfg`` unless every
    differing key is named in ``allow_change``; returns the keys that changed."""
    allow = check_allowed_changes(allow_change)
    new = cfg.to_dict()
    if config_hash(saved) == config_hash(new):
        return []
    differ = config_diff(saved, new)
    refused = [k for k in differ if k not in allow]
    if refused:
        shown = ", ".join(f"{k} ({_get(saved, k)!r} -> {_get(new, k)!r})" for k in refused[:8])
        resumable = [k for k in refused if k in RESUMABLE]
        hint = (f"; to continue anyway pass --allow-change for {resumable}" if resumable == refused else
                f"; only {list(RESUMABLE)} may change on resume: start a new run (another output.name) instead")
        raise RunFolderError(f"cannot resume {run_dir}: its checkpoint was trained under another config; "
                             f"differing keys: {shown}{hint}")
    return differ


def check_fresh(run_dir: Path, overwrite: bool) -> None:
    """Refuse to start a new run in a folder that holds files, unless ``overwrite``."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"run folder {run_dir} exists and is not a folder")
    held = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
    if held and not overwrite:
        shown = ", ".join(held[:5]) + (", ..." if len(held) > 5 else "")
        raise RunFolderError(f"run folder {run_dir} already holds a run ({shown}); pass --resume {run_dir} to continue it, "
                             "--overwrite to replace it, or choose another output.name. Through make: "
                             "make <target> ... NAME=<another name> to keep both, or make <target> ... ARGS=--overwrite to replace it")


def clear(run_dir: Path) -> None:
    """Remove what an earlier run left in ``run_dir`` (for ``overwrite``), so old and new files never mix."""
    if run_dir.is_dir():
        shutil.rmtree(run_dir)


def _get(values: dict, dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node
