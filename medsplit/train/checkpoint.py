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
        if (Path(run_dir) / "metrics.json").exists():
            raise FileNotFoundError(f"{run_dir} holds a finished run whose checkpoint was not kept (output.keep_checkpoint=false), "
                                    f"so it cannot be continued; its weights are in {Path(run_dir) / WEIGHTS}")
        raise FileNotFoundError(f"no checkpoint in {run_dir} (expected {path}); was this run started?")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, foreign or tampered file: name it instead of a pickle traceback
        raise RuntimeError(f"checkpoint {path} cannot be read ({type(e).__name__}: {str(e)[:200]})") from e


def save_weights(run_dir: Path, state_dict: dict[str, torch.Tensor]) -> Path:
    path = run_dir / WEIGHTS
    tmp = path.with_name(f".{WEIGHTS}.tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in state_dict.items()}, str(tmp))
    os.replace(tmp, path)
    return path


def load_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    path = Path(run_dir) / WEIGHTS
    if not path.exists():
        raise FileNotFoundError(f"no trained weights in {run_dir} (expected {path}); did the run finish?")
    return load_file(str(path))
