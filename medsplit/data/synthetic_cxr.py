"""Synthetic chest X-ray phantoms with lung masks: the embedded default lung set.

Used when no real lung data is present, so that every command (train, attack, report) runs
out of the box and tests need no downloads. A phantom is a bright torso on a dark
background with a spine, a heart shadow, a diaphragm, curved ribs, smooth tissue texture
and noise; the two lungs are dark, rotated, lung-shaped regions (an ellipse cut by the
heart on the medial side and by a domed diaphragm below). The mask is exactly the lung
region, so a model must find dark lung fields behind ribs, as on a real radiograph.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def make_synthetic_cxr(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` chest X-ray phantoms and their lung masks, deterministic for a seed.

    Args:
        n: number of images.
        size: height and width in pixels (at least 16).
        seed: the same seed gives byte-identical images and masks.

    Returns:
        ``(images, masks)``: uint8 ``(n, 1, size, size)``; masks in ``{0, 1}``.
    """
    if n < 0 or size < 16:
        raise ValueError(f"need n >= 0 and size >= 16, got n={n}, size={size}")
    rng = np.random.default_rng(seed)
    images = np.empty((n, 1, size, size), dtype=np.uint8)
    masks = np.empty((n, 1, size, size), dtype=np.uint8)
    # pixel centres in [-1, 1]; y grows downwards as in an image
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size * 2 - 1
    y, x = np.meshgrid(coords, coords, indexing="ij")
    for i in range(n):
        image, mask = _phantom(rng, x, y, size)
        images[i, 0] = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
        masks[i, 0] = mask
    return torch.from_numpy(images), torch.from_numpy(masks)


def _phantom(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One phantom: float image in [0, 1] and its uint8 lung mask."""
    # Patient placement varies a little, as positioning does between radiographs.
    cx, cy = rng.uniform(-0.06, 0.06), rng.uniform(-0.05, 0.05)
    tilt = np.deg2rad(rng.uniform(-6, 6))
    xs, ys = _rotate(x - cx, y - cy, tilt)

    torso = _ellipse(xs, ys + 0.05, rng.uniform(0.72, 0.86), rng.uniform(0.95, 1.15))
    # the heart sits low and to the patient's left (the image's right)
    heart = _ellipse(xs - rng.uniform(0.1, 0.18), ys - rng.uniform(0.12, 0.22), rng.uniform(0.22, 0.3), rng.uniform(0.2, 0.27))
    dome = rng.uniform(0.3, 0.42)  # diaphragm: a parabola per lung, highest in its middle

    lungs = np.zeros_like(x, dtype=bool)
    for side in (-1, 1):
        lx = side * rng.uniform(0.3, 0.38)
        ly = rng.uniform(-0.1, 0.02)
        rot = np.deg2rad(side * rng.uniform(2, 14))  # apices tilt towards the midline
        u, v = _rotate(xs - lx, ys - ly, rot)
        lung = _ellipse(u, v, rng.uniform(0.2, 0.27), rng.uniform(0.45, 0.58))
        below_diaphragm = ys > dome + 1.5 * (xs - lx) ** 2
        lungs |= lung & ~below_diaphragm
    lungs &= ~heart & torso

    spine = np.exp(-((xs / 0.06) ** 2)) * (ys > -0.9)
    ribs = _ribs(rng, xs, ys) * torso
    texture = _smooth_noise(rng, size, cells=max(4, size // 16))

    image = 0.06 + 0.5 * torso  # dense tissue is bright on a radiograph
    image = image + 0.12 * heart + 0.15 * spine * torso
    image = np.where(lungs, image - rng.uniform(0.25, 0.33), image)  # air is dark
    image = image + 0.09 * ribs + 0.05 * texture * torso
    image = image + rng.normal(0.0, rng.uniform(0.01, 0.03), size=image.shape)
    image = image * rng.uniform(0.85, 1.15)  # exposure differs between acquisitions
    return np.clip(image, 0.0, 1.0), lungs.astype(np.uint8)


def _rotate(x: np.ndarray, y: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(angle), np.sin(angle)
    return c * x + s * y, -s * x + c * y


def _ellipse(x: np.ndarray, y: np.ndarray, a: float, b: float) -> np.ndarray:
    return (x / a) ** 2 + (y / b) ** 2 <= 1.0


def _ribs(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Curved, roughly evenly spaced bright bands that sag laterally, like posterior ribs."""
    spacing = rng.uniform(0.13, 0.17)
    curve = rng.uniform(0.25, 0.4)
    phase = (y - curve * x**2) / spacing + rng.uniform(0, 1)
    bands = np.clip(np.cos(2 * np.pi * phase) * 1.6 - 0.6, 0.0, 1.0)
    return bands * (np.abs(x) > 0.05)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency texture: coarse Gaussian noise upsampled bilinearly, zero mean."""
    coarse = torch.from_numpy(rng.normal(size=(1, 1, cells, cells)))
    fine = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()
    return fine - fine.mean()
