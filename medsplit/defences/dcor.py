"""Distance correlation (Szekely, Rizzo and Bakirov 2007), batched and differentiable.

dCor is computed from *Euclidean* pairwise distances (not squared: squared distances give
the RV coefficient, a different statistic that only sees linear dependence), each distance
matrix double-centred. It is 0 exactly when (in the population) the two are independent,
1 when one is a similarity transform of the other, and invariant to scaling either side.
"""

from __future__ import annotations

import torch


def _centred_distances(x: torch.Tensor) -> torch.Tensor:
    """Double-centred Euclidean distance matrix of the rows of ``x`` (flattened per sample)."""
    flat = x.reshape(x.shape[0], -1).to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    sq = (flat.unsqueeze(1) - flat.unsqueeze(0)).pow(2).sum(-1)
    # sqrt has an infinite derivative at 0 (the diagonal); the epsilon keeps gradients finite
    # and changes distances by < 1e-6 for any pair that is not identical.
    d = torch.sqrt(sq + 1e-12) - 1e-6
    d = d * (1 - torch.eye(d.shape[0], dtype=d.dtype, device=d.device))
    return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()


def distance_correlation(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Sample distance correlation between two batches (one row per sample).

    Args:
        x: ``(N, ...)``, e.g. images.
        z: ``(N, ...)``, e.g. the activations the client sends for the same images.

    Returns:
        A scalar in ``[0, 1]`` (differentiable; V-statistic form, as in NoPeek).
    """
    if x.shape[0] != z.shape[0]:
        raise ValueError(f"distance_correlation needs the same number of samples, got {x.shape[0]} and {z.shape[0]}")
    if x.shape[0] < 2:
        raise ValueError("distance_correlation needs at least 2 samples")
    a, b = _centred_distances(x), _centred_distances(z)
    dcov_xy = (a * b).mean()
    dvar_x, dvar_y = (a * a).mean(), (b * b).mean()
    denom = torch.sqrt(dvar_x * dvar_y)
    if float(denom.detach()) <= 0:  # a constant batch: dCor is defined as 0
        return dcov_xy * 0
    return torch.sqrt(torch.clamp(dcov_xy, min=0) / denom + 1e-12)
