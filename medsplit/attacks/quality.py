"""Reconstruction quality: MSE, PSNR and SSIM (torchmetrics), images in [0, 1]."""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


@torch.no_grad()
def reconstruction_quality(recon: torch.Tensor, original: torch.Tensor) -> dict[str, float]:
    """Mean over images of MSE, PSNR (dB) and SSIM; both ``(N, C, H, W)`` in ``[0, 1]``."""
    if recon.shape != original.shape:
        raise ValueError(f"reconstruction {tuple(recon.shape)} and original {tuple(original.shape)} differ in shape")
    recon, original = recon.float().clamp(0, 1), original.float()
    mse = float(((recon - original) ** 2).mean())
    psnr = float(peak_signal_noise_ratio(recon, original, data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3)))
    ssim = float(structural_similarity_index_measure(recon, original, data_range=1.0))
    return {"mse": mse, "psnr": psnr, "ssim": ssim}
