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


@torch.no_grad()
def trivial_baselines(aux_images: torch.Tensor, victims: torch.Tensor) -> dict[str, float]:
    """What an attacker scores without looking at anything that crossed, beside every attack's numbers.

    * ``baseline_mse`` / ``baseline_ssim``: the mean auxiliary image as every victim's reconstruction.
    * ``baseline_nearest_mse`` / ``baseline_nearest_ssim``: for each victim, the auxiliary image
      nearest to it in MSE. The choice looks at the victim, so this is an *optimistic* ceiling of
      any "answer with a real auxiliary image" strategy: an attack that does not beat it has
      recovered nothing an attacker could not guess from its own data.
    """
    mean = reconstruction_quality(aux_images.mean(0, keepdim=True).expand_as(victims), victims)
    flat_aux = aux_images.reshape(aux_images.shape[0], -1).float()
    nearest = []
    for i in range(0, victims.shape[0], 64):  # squared distances, a block of victims at a time
        block = victims[i:i + 64].reshape(min(64, victims.shape[0] - i), -1).float()
        nearest.append(torch.cdist(block, flat_aux).argmin(1))
    chosen = aux_images[torch.cat(nearest)]
    near = reconstruction_quality(chosen, victims)
    return {"baseline_mse": mean["mse"], "baseline_ssim": mean["ssim"],
            "baseline_nearest_mse": near["mse"], "baseline_nearest_ssim": near["ssim"]}
