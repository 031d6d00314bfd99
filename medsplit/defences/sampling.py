"""Poisson sampling of training batches: the sampling DP-SGD's RDP accountant assumes."""

from __future__ import annotations

import torch


def poisson_batch(n: int, sample_rate: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of a Poisson-sampled batch: each of ``n`` examples joins independently with
    probability ``sample_rate`` (drawn on the CPU). The batch may be empty: the caller must
    still count that step for the accountant (a step of pure noise)."""
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
    return (torch.rand(n, generator=generator) < sample_rate).nonzero().squeeze(1)
