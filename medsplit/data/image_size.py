"""The one rule for the training image size, shared by the config check and every loader.

Kept free of torch so that :mod:`medsplit.config` can use the bound without importing it.
"""

from __future__ import annotations

from medsplit.data.errors import DataError

__all__ = ["MIN_IMAGE_SIZE", "check_image_size"]

# The bound medsplit.config has always enforced for data.img_size (and the lung loader for itself); the
# retinopathy loader used to accept 8 px when called directly, which no config could ask for.
MIN_IMAGE_SIZE = 16


def check_image_size(img_size: int) -> None:
    """Refuse an image size below :data:`MIN_IMAGE_SIZE` with a clear :class:`DataError`.

    Args:
        img_size: requested output height and width in pixels.
    """
    if img_size < MIN_IMAGE_SIZE:
        raise DataError(f"img_size must be at least {MIN_IMAGE_SIZE} pixels, got {img_size}")
