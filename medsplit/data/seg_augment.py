"""Paired image/mask augmentation for segmentation batches.

Segmentation needs the *same* random spatial transform on an image and its mask, with
bilinear interpolation for the image and nearest for the mask (so the mask stays binary),
and intensity changes on the image only. Two interchangeable backends:

* ``"monai"`` (default): dictionary transforms ``RandFlipd``, ``RandAffined``,
  ``RandScaleIntensityd``, ``RandShiftIntensityd``; they run on torch tensors, on the
  batch's device.
* ``"albumentations"``: ``HorizontalFlip``, ``Affine``, ``RandomBrightnessContrast`` on
  NumPy arrays (CPU), for comparison with pipelines built on albumentations.
"""

from __future__ import annotations

import math
from typing import Callable

import cv2
import numpy as np
import torch

BACKENDS = ("monai", "albumentations")
_FLIP_P = 0.5  # horizontal flips: lungs are roughly mirror-symmetric, hearts are not, so only half the time


class SegAugment:
    """Random flip, rotation, scaling and intensity jitter applied consistently to images and masks.

    Args:
        backend: ``"monai"`` or ``"albumentations"``.
        flips: random horizontal flips (probability 0.5).
        rotate_degrees: rotation drawn uniformly from ``[-rotate_degrees, rotate_degrees]``.
        scale: range of the zoom factor (drawn per axis, as both libraries do by default here).
        intensity: image-only jitter: multiply by ``1 + U(-intensity, intensity)`` and add
            ``U(-intensity, intensity)`` (monai), or brightness/contrast limits (albumentations).
        seed: seeds the backend's random state; the same seed and the same sequence of calls
            give the same augmented batches. A call given a ``generator`` reseeds the backend
            from it instead, so a batch's augmentation depends only on that generator (what
            makes a resumed run replay the same augmentations: the training loop seeds one
            generator per epoch from (seed, epoch)).
    """

    def __init__(self, backend: str = "monai", flips: bool = True, rotate_degrees: float = 10,
                 scale: tuple = (0.9, 1.1), intensity: float = 0.1, seed: int = 0):
        if backend not in BACKENDS:
            raise ValueError(f"unknown augmentation backend {backend!r}; valid backends are {list(BACKENDS)}")
        if rotate_degrees < 0 or intensity < 0:
            raise ValueError(f"rotate_degrees and intensity must be >= 0, got {rotate_degrees}, {intensity}")
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must be a (low, high) range with 0 < low <= high, got {scale}")
        self.backend = backend
        self.flips = flips
        self.rotate_degrees = float(rotate_degrees)
        self.scale = (float(scale[0]), float(scale[1]))
        self.intensity = float(intensity)
        self.seed = seed
        build = _build_monai if backend == "monai" else _build_albumentations
        self._apply, self._reseed = build(self)

    def __call__(self, images: torch.Tensor, masks: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment a batch.

        Args:
            images: float ``(B, C, H, W)`` in ``[0, 1]``.
            masks: float ``(B, K, H, W)`` (binary), same batch size and spatial size.
            generator: if given, one number drawn from it reseeds the backend before this batch.

        Returns:
            ``(images, masks)`` on the input device: images clipped to ``[0, 1]``, masks binary.
        """
        if images.ndim != 4 or masks.ndim != 4 or images.shape[0] != masks.shape[0] or images.shape[-2:] != masks.shape[-2:]:
            raise ValueError(f"need images (B,C,H,W) and masks (B,K,H,W) of the same B, H, W; got {tuple(images.shape)} and {tuple(masks.shape)}")
        if generator is not None:
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
            self._reseed(seed)
        out_images, out_masks = [], []
        for image, mask in zip(images, masks):
            a, m = self._apply(image, mask)
            out_images.append(a.to(images.device, images.dtype))
            out_masks.append(m.to(masks.device, masks.dtype))
        return torch.stack(out_images).clamp_(0.0, 1.0), torch.stack(out_masks)

    def __repr__(self) -> str:
        return (f"SegAugment(backend={self.backend!r}, flips={self.flips}, rotate_degrees={self.rotate_degrees}, "
                f"scale={self.scale}, intensity={self.intensity}, seed={self.seed})")


Apply = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Reseed = Callable[[int], None]


def _build_monai(cfg: SegAugment) -> tuple[Apply, Reseed]:
    # monai takes seconds to import: only with data.aug_backend=monai
    from monai.transforms import Compose, RandAffined, RandFlipd, RandScaleIntensityd, RandShiftIntensityd

    keys = ("image", "mask")
    transforms = []
    if cfg.flips:
        transforms.append(RandFlipd(keys, prob=_FLIP_P, spatial_axis=1))  # axis 1 of (H, W) = left-right
    if cfg.rotate_degrees or cfg.scale != (1.0, 1.0):
        # MONAI adds 1.0 to the sampled scale offset, so (0.9, 1.1) is passed as (-0.1, 0.1).
        zoom = (cfg.scale[0] - 1.0, cfg.scale[1] - 1.0)
        transforms.append(RandAffined(
            keys, prob=1.0, rotate_range=(math.radians(cfg.rotate_degrees),), scale_range=(zoom, zoom),
            mode=("bilinear", "nearest"), padding_mode="zeros",
        ))
    if cfg.intensity:
        transforms.append(RandScaleIntensityd("image", factors=cfg.intensity, prob=1.0))
        transforms.append(RandShiftIntensityd("image", offsets=cfg.intensity, prob=1.0))
    pipeline = Compose(transforms).set_random_state(seed=cfg.seed)

    def apply(image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = pipeline({"image": image, "mask": mask})
        return _plain(out["image"]), _plain(out["mask"])

    return apply, lambda seed: pipeline.set_random_state(seed=seed)


def _build_albumentations(cfg: SegAugment) -> tuple[Apply, Reseed]:
    import albumentations as A  # albumentations takes a second to import: only with data.aug_backend=albumentations

    transforms = []
    if cfg.flips:
        transforms.append(A.HorizontalFlip(p=_FLIP_P))
    if cfg.rotate_degrees or cfg.scale != (1.0, 1.0):
        transforms.append(A.Affine(
            scale=cfg.scale, rotate=(-cfg.rotate_degrees, cfg.rotate_degrees), keep_ratio=False,
            interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
            border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=1.0,
        ))
    if cfg.intensity:
        transforms.append(A.RandomBrightnessContrast(brightness_limit=cfg.intensity, contrast_limit=cfg.intensity, p=1.0))
    pipeline = A.Compose(transforms, seed=cfg.seed)

    def apply(image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # albumentations works on HWC NumPy arrays; float32 images are taken to be in [0, 1].
        img = np.ascontiguousarray(image.detach().cpu().permute(1, 2, 0).numpy(), dtype=np.float32)
        msk = np.ascontiguousarray(mask.detach().cpu().permute(1, 2, 0).numpy(), dtype=np.float32)
        out = pipeline(image=img, mask=msk)
        return _chw(out["image"]), _chw(out["mask"])

    return apply, pipeline.set_random_seed


def _plain(t) -> torch.Tensor:
    """MONAI returns MetaTensors; the training loop wants plain tensors."""
    return t.as_tensor() if hasattr(t, "as_tensor") else torch.as_tensor(t)


def _chw(array: np.ndarray) -> torch.Tensor:
    if array.ndim == 2:  # OpenCV drops a single channel axis
        array = array[..., None]
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
