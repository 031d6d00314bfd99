"""Batch augmentation on the images' device.

Images live as uint8 tensors (on the GPU when there is one); a batch is converted to
float (and standardised, before or after: the augmentation commutes with per-channel
standardisation) and augmented as a whole: one affine grid for the batch (flips,
rotation, scale; or, losslessly, the square's right-angle rotations and flips), then per-image
brightness, contrast and gamma. No per-sample Python
loop, no host round trip, and all randomness comes from an explicit ``torch.Generator``
so runs repeat.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from medsplit.data.errors import DataError

__all__ = ["BatchAugment", "to_float", "standardize", "channel_stats"]


class BatchAugment(nn.Module):
    """Random flips, rotation, scale, brightness, contrast and gamma for a whole batch.

    Works on float images in ``[0, 1]`` or already standardised ones alike: every operation
    is taken relative to each image's own per-channel black level (its minimum) and range,
    so pixels rotated in from outside are black (like a fundus photograph's background),
    brightness scales away from black, gamma acts on the image's own range, and the result
    stays within the input's range. Hence augmenting then standardising per channel gives
    the same result as standardising then augmenting. In ``eval()`` mode it is the identity.

    Args:
        flips: flip each image horizontally and vertically with probability 1/2 each.
        rotate_degrees: rotation angle drawn uniformly from ``[-rotate_degrees, rotate_degrees]``.
        scale: zoom factor drawn uniformly from this range (> 1 zooms in).
        brightness: scale (x - black) by a factor from ``[1 - brightness, 1 + brightness]``.
        contrast: scale deviations from the per-channel mean by ``[1 - contrast, 1 + contrast]``.
        gamma: raise the image (normalised to its range) to ``exp(u)``, ``u`` uniform in
            ``[-gamma, gamma]`` (0: off).
        right_angles: lossless geometry instead of the affine one: each image is transposed with
            probability 1/2 and flipped (with ``flips``), i.e. one of the 8 rotations and
            reflections of the square, by indexing alone. ``rotate_degrees`` and ``scale`` are
            then unused: no pixel is resampled, so detail one pixel wide (a microaneurysm at
            128 px) stays as sharp as in the photograph, which bilinear resampling smears.
    """

    def __init__(
        self,
        flips: bool = True,
        rotate_degrees: float = 180.0,
        scale: tuple[float, float] = (0.9, 1.1),
        brightness: float = 0.2,
        contrast: float = 0.2,
        gamma: float = 0.0,
        right_angles: bool = False,
    ):
        super().__init__()
        if rotate_degrees < 0 or not 0 < scale[0] <= scale[1]:
            raise DataError(f"need rotate_degrees >= 0 and 0 < scale[0] <= scale[1], got {rotate_degrees} and {scale}")
        for name, value in (("brightness", brightness), ("contrast", contrast)):
            if not 0 <= value < 1:
                raise DataError(f"{name} must be in [0, 1), got {value}")
        if gamma < 0:
            raise DataError(f"gamma must be >= 0, got {gamma}")
        self.flips = flips
        self.rotate_degrees = float(rotate_degrees)
        self.scale = (float(scale[0]), float(scale[1]))
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.gamma = float(gamma)
        self.right_angles = bool(right_angles)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a float batch ``(N, C, H, W)``.

        Args:
            x: float images, in ``[0, 1]`` or standardised.
            generator: source of randomness, on ``x``'s device (``torch.Generator(device=x.device)``);
                ``None`` uses torch's global generator.
        """
        if not x.is_floating_point() or x.ndim != 4:
            raise DataError(f"BatchAugment expects a float (N, C, H, W) batch, got {x.dtype} {tuple(x.shape)}")
        if not self.training or x.shape[0] == 0:
            return x
        # Per image and channel; tensors, not Python numbers, so nothing waits for the GPU.
        black = x.amin(dim=(2, 3), keepdim=True)
        white = x.amax(dim=(2, 3), keepdim=True)
        x = self._right_angles(x, generator) if self.right_angles else self._geometry(x, black, generator)
        return self._photometry(x, black, white, generator)

    def _uniform(self, n: int, low: float, high: float, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        u = torch.rand(n, device=x.device, dtype=x.dtype, generator=generator)
        return low + (high - low) * u

    def _right_angles(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """One of the square's 8 symmetries per image (transpose, then flips): indexing only."""
        n = x.shape[0]

        def chosen() -> torch.Tensor:
            return (torch.rand(n, device=x.device, generator=generator) < 0.5).view(n, 1, 1, 1)

        if x.shape[-1] == x.shape[-2]:
            x = torch.where(chosen(), x.transpose(-1, -2), x)
        if self.flips:
            x = torch.where(chosen(), x.flip(-1), x)
            x = torch.where(chosen(), x.flip(-2), x)
        return x

    def _geometry(self, x: torch.Tensor, black: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        n = x.shape[0]
        if not self.flips and self.rotate_degrees == 0 and self.scale == (1.0, 1.0):
            return x
        angle = self._uniform(n, -self.rotate_degrees, self.rotate_degrees, x, generator) * (math.pi / 180.0)
        zoom = self._uniform(n, self.scale[0], self.scale[1], x, generator)
        ones = torch.ones(n, device=x.device, dtype=x.dtype)
        flip_x = torch.where(torch.rand(n, device=x.device, generator=generator) < 0.5, -ones, ones) if self.flips else ones
        flip_y = torch.where(torch.rand(n, device=x.device, generator=generator) < 0.5, -ones, ones) if self.flips else ones
        # affine_grid maps output to input coordinates: the inverse of the wanted zoom, so
        # the matrix is rotation / zoom, with flips as signs on the input axes.
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0], theta[:, 0, 1] = cos * flip_x, -sin * flip_x
        theta[:, 1, 0], theta[:, 1, 1] = sin * flip_y, cos * flip_y
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # Zero padding relative to black: pixels from outside the image are black.
        return F.grid_sample(x - black, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + black

    def _photometry(
        self, x: torch.Tensor, black: torch.Tensor, white: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        n = x.shape[0]
        if self.brightness:
            factor = self._uniform(n, 1 - self.brightness, 1 + self.brightness, x, generator).view(n, 1, 1, 1)
            x = black + (x - black) * factor
        if self.contrast:
            mean = x.mean(dim=(2, 3), keepdim=True)
            factor = self._uniform(n, 1 - self.contrast, 1 + self.contrast, x, generator).view(n, 1, 1, 1)
            x = (x - mean) * factor + mean
        x = torch.clamp(x, min=black, max=white)  # saturate like a camera, never leave the input range
        if self.gamma:
            span = (white - black).clamp_min(1e-6)
            exponent = torch.exp(self._uniform(n, -self.gamma, self.gamma, x, generator)).view(n, 1, 1, 1)
            x = black + ((x - black) / span).clamp(0.0, 1.0).pow(exponent) * span
        return x

    def extra_repr(self) -> str:
        return (
            f"flips={self.flips}, rotate_degrees={self.rotate_degrees}, scale={self.scale}, "
            f"brightness={self.brightness}, contrast={self.contrast}, gamma={self.gamma}, right_angles={self.right_angles}"
        )


def to_float(x_uint8: torch.Tensor, mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> torch.Tensor:
    """uint8 images to float32 in ``[0, 1]``, then optionally standardised per channel.

    Args:
        x_uint8: uint8 ``(N, C, H, W)`` (or ``(C, H, W)``) on any device.
        mean, std: per-channel statistics in ``[0, 1]`` units (see :func:`channel_stats`);
            both ``None`` to skip standardisation.
    """
    if x_uint8.dtype != torch.uint8:
        raise DataError(f"to_float expects uint8 images, got {x_uint8.dtype}")
    x = x_uint8.to(torch.float32).div_(255.0)
    if mean is None and std is None:
        return x
    return standardize(x, mean, std)


def standardize(x: torch.Tensor, mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> torch.Tensor:
    """``(x - mean) / std`` per channel (channel dim -3) for float images in ``[0, 1]``.

    Args:
        x: float ``(..., C, H, W)``.
        mean, std: per-channel statistics, both given or both ``None`` (identity).
    """
    if mean is None and std is None:
        return x
    if mean is None or std is None or len(mean) != x.shape[-3] or len(std) != x.shape[-3]:
        raise DataError(f"need per-channel mean and std for {x.shape[-3]} channels, got mean={mean}, std={std}")
    if min(std) <= 0:
        raise DataError(f"std must be > 0 for every channel, got {std}")
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x - m) / s


def channel_stats(images_uint8: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation in ``[0, 1]`` units.

    Compute them on the training set only (statistics of val/test images would leak).
    Accumulated in float64 over chunks, so 3,000 256 px images need no float copy.

    Args:
        images_uint8: uint8 ``(N, C, H, W)``.
    """
    if images_uint8.dtype != torch.uint8 or images_uint8.ndim != 4 or images_uint8.shape[0] == 0:
        raise DataError(
            f"channel_stats expects a non-empty uint8 (N, C, H, W) tensor, got {images_uint8.dtype} {tuple(images_uint8.shape)}"
        )
    c = images_uint8.shape[1]
    total = torch.zeros(c, dtype=torch.float64, device=images_uint8.device)
    total_sq = torch.zeros_like(total)
    chunk = max(1, (1 << 24) // images_uint8[0].numel())
    for start in range(0, images_uint8.shape[0], chunk):
        block = images_uint8[start : start + chunk].to(torch.float64)
        total += block.sum(dim=(0, 2, 3))
        total_sq += (block * block).sum(dim=(0, 2, 3))
    count = images_uint8.numel() // c
    mean = total / count
    var = (total_sq / count - mean * mean).clamp_min(0.0)
    mean, std = (mean / 255.0).tolist(), (var.sqrt() / 255.0).tolist()
    return tuple(mean), tuple(std)
