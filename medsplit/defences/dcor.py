"""Distance correlation (Szekely, Rizzo and Bakirov 2007), batched and differentiable.

dCor is computed from *Euclidean* pairwise distances (not squared: squared distances give
the RV coefficient, a different statistic that only sees linear dependence), each distance
matrix double-centred. It is 0 exactly when (in the population) the two are independent,
1 when one is a similarity transform of the other, and invariant to scaling either side.

Two estimators:

- :func:`distance_correlation`, the V-statistic NoPeek trains with. It is biased upwards
  when the dimension is large against the batch: for 64 independent 64x64 images and
  16x32x32 noise it gives 0.999. Fine as a loss to push down, useless as a privacy score.
- :func:`bias_corrected_dcor2`, the U-centred estimator of dCor squared (Szekely and
  Rizzo 2014, "Partial distance correlation with methods for dissimilarities"): its
  expectation is 0 for independent samples in any dimension (the same pair gives 0.00),
  so reports score leakage with it.
"""

from __future__ import annotations

import torch


def _distances(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    flat = x.reshape(x.shape[0], -1).to(dtype)
    return torch.cdist(flat, flat)


def _u_centred(d: torch.Tensor) -> torch.Tensor:
    """U-centring of a distance matrix: the row and column means divide by ``n - 2``, the
    grand mean by ``(n - 1)(n - 2)``, and the diagonal is 0 (what removes the bias)."""
    n = d.shape[0]
    u = d - d.sum(1, keepdim=True) / (n - 2) - d.sum(0, keepdim=True) / (n - 2) + d.sum() / ((n - 1) * (n - 2))
    return u * (1 - torch.eye(n, dtype=d.dtype, device=d.device))


@torch.no_grad()
def bias_corrected_dcor2(x: torch.Tensor, z: torch.Tensor) -> float:
    """Bias-corrected squared distance correlation of two batches (one row per sample).

    Returns a float in ``[-1, 1]``: about 0 for independent samples however high the dimension
    (small negative values are sampling noise), 1 when one is a similarity transform of the
    other. Computed in float64; needs at least 4 samples.
    """
    n = x.shape[0]
    if n != z.shape[0]:
        raise ValueError(f"bias_corrected_dcor2 needs the same number of samples, got {n} and {z.shape[0]}")
    if n < 4:
        raise ValueError(f"bias_corrected_dcor2 needs at least 4 samples, got {n}")
    a, b = _u_centred(_distances(x, torch.float64)), _u_centred(_distances(z, torch.float64))
    # the 1 / (n (n - 3)) of the U-statistic cancels in the ratio
    ab, aa, bb = (a * b).sum(), (a * a).sum(), (b * b).sum()
    if aa <= 0 or bb <= 0:  # a constant batch
        return 0.0
    return float(ab / torch.sqrt(aa * bb))


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
