"""Checkpoints: written every epoch, atomically, in a format loaded without unpickling
arbitrary objects (``torch.load(weights_only=True)``; final weights as safetensors)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.safetensors"


def save_checkpoint(run_dir: Path, state: dict) -> Path:
    path = run_dir / CHECKPOINT
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # an interrupt mid-save never leaves a half-written checkpoint
    return path


def load_checkpoint(run_dir: Path) -> dict:
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint in {run_dir} (expected {path}); was this run started?")
    return torch.load(path, map_location="cpu", weights_only=True)


def save_weights(run_dir: Path, state_dict: dict[str, torch.Tensor]) -> Path:
    path = run_dir / WEIGHTS
    save_file({k: v.detach().contiguous().cpu() for k, v in state_dict.items()}, str(path))
    return path


def load_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    path = Path(run_dir) / WEIGHTS
    if not path.exists():
        raise FileNotFoundError(f"no trained weights in {run_dir} (expected {path}); did the run finish?")
    return load_file(str(path))
