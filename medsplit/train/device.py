"""Which device a run trains on, and how a report names it."""

from __future__ import annotations

import platform

import torch


def resolve_device(name: str, setting: str = "train.device={}") -> torch.device:
    """A device name to a device: ``auto`` is cuda when a GPU is present; cuda without one is an error.

    Args:
        name: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        setting: how the user wrote the choice, as a format string (``"--device {}"`` for a flag),
            so the error names the key or flag to change.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{setting.format(name)} was requested but no CUDA GPU is available "
                           f"(torch.cuda.is_available() is False); use {setting.format('cpu')} or {setting.format('auto')}")
    return device


def device_label(device: torch.device) -> str:
    """What a report says ran the work: the GPU model, or the CPU and its thread count."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
