"""On-disk cache of decoded uint8 tensors (safetensors: never pickle).

Decoding thousands of JPEGs costs seconds to minutes; the cache makes every run after
the first start at once. Entries are keyed by the caller (file paths, sizes, mtimes).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file


def read_cached(path: Path, name: str, shape: tuple[int, ...]) -> torch.Tensor | None:
    """The cached uint8 tensor ``name`` in ``path``, or ``None`` if absent, unreadable or stale."""
    if not path.is_file():
        return None

    try:
        tensor = load_file(str(path))[name]
    except Exception:  # a half-written or foreign file: the caller decodes again and overwrites it
        return None
    return tensor if tuple(tensor.shape) == tuple(shape) and tensor.dtype == torch.uint8 else None


def read_cached_metadata(path: Path) -> dict[str, str]:
    """The string metadata stored with a cache file (empty if absent or unreadable)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:
        return {}


def write_cached(path: Path, name: str, tensor: torch.Tensor, metadata: dict[str, str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so a concurrent reader never sees a half-written cache.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    save_file({name: tensor.contiguous()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)
