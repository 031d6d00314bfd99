"""Reading lung images and masks: masks validated against their image at the native size,
merged (Montgomery's two halves), padded and resized; NIfTI images read with nibabel, raster
images through the shared decode-once loader. Both are cached next to the decoded images.

Everything that can be wrong with the files is reported as a :class:`DataError` naming the
file: a mask of a different size than its image, a mask with more than two levels, an
unreadable file.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from medsplit.data.cache import read_cached, write_cached
from medsplit.data.errors import DataError
from medsplit.data.images import decode_images, pad_to_square
from medsplit.data.lung_folder import LungRecord, is_nifti

__all__ = ["load_masks", "load_images"]

_MASK_CACHE_VERSION = "lung-masks-squarepad-nearestexact-v1"


def _native_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` of an image file from its header, without decoding the pixels."""
    try:
        if is_nifti(path):
            return _plane_shape(nib.load(str(path)).shape, path)  # header only

        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"cannot read image {path}: {type(error).__name__}: {error}") from error


def _plane_shape(shape: tuple[int, ...], path: Path) -> tuple[int, int]:
    """``(H, W)`` of a stored shape once its size-1 axes are dropped (a 2-D image or one slice)."""
    plane = tuple(d for d in shape if d != 1)
    if len(plane) != 2:
        raise DataError(f"{path} has shape {shape}; expected a 2-D image or a single slice")
    return plane  # type: ignore[return-value]


def _as_2d(array: np.ndarray, path: Path) -> np.ndarray:
    return array.reshape(_plane_shape(array.shape, path))


def _read_array(path: Path, what: str) -> np.ndarray:
    """Pixel values of a 2-D raster or NIfTI file as stored (first axis = rows)."""
    try:
        if is_nifti(path):
            return _as_2d(np.asanyarray(nib.load(str(path)).dataobj), path)

        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGB", "RGBA", "LA", "CMYK", "YCbCr"):
                im = im.convert("L")
            return np.asarray(im)
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"cannot read {what} {path}: {type(error).__name__}: {error}") from error


def _binary(mask: np.ndarray, path: Path) -> np.ndarray:
    """``{0, x}`` -> bool; anything with other levels (JPEG artefacts, label maps, soft masks) is refused."""
    levels = np.unique(mask)
    if len(levels) > 2 or (len(levels) == 2 and levels[0] != 0):
        shown = ", ".join(str(v) for v in levels[:6]) + (", ..." if len(levels) > 6 else "")
        raise DataError(f"mask {path} is not binary: it has {len(levels)} levels ({shown}); expected 0 and one other value")
    return mask > 0

def _load_mask(record: LungRecord, size: int) -> torch.Tensor:
    """Validated, merged, padded and resized mask of one record: uint8 ``(1, size, size)`` in {0, 1}."""
    native = _native_size(record.image)
    merged = None
    for path in record.masks:
        mask = _binary(_read_array(path, "mask"), path)
        if mask.shape != native:
            raise DataError(
                f"mask {path} is {mask.shape[1]}x{mask.shape[0]} px but its image {record.image} is "
                f"{native[1]}x{native[0]} px (width x height); masks must match their image at the native size"
            )
        merged = mask if merged is None else merged | mask
    t = pad_to_square(torch.from_numpy(np.ascontiguousarray(merged, dtype=np.uint8))[None].float())
    # nearest-exact samples each output pixel's centre; plain "nearest" samples its top-left
    # corner, shifting the mask by up to half a source block against the area-resized image.
    t = F.interpolate(t[None], size=(size, size), mode="nearest-exact")[0]
    return t.to(torch.uint8)


def load_masks(records: list[LungRecord], size: int, cache_dir: Path | None) -> torch.Tensor:
    """Every record's validated mask as uint8 ``(N, 1, size, size)`` in {0, 1}; read before any
    image is decoded, so a bad mask stops the run early.

    Args:
        records: the images and their mask files.
        size: output height and width.
        cache_dir: where the masks are cached (``None``: no cache).
    """
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"masks-{_mask_cache_key(records, size)}.safetensors"
        cached = read_cached(cache_file, "masks", (len(records), 1, size, size))
        if cached is not None:
            return cached
    out = torch.empty((len(records), 1, size, size), dtype=torch.uint8)
    workers = max(1, min(4, os.cpu_count() or 1, len(records)))
    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL releases the GIL while decoding
        for i, mask in enumerate(pool.map(lambda r: _load_mask(r, size), records)):
            out[i] = mask
    if cache_file is not None:
        write_cached(cache_file, "masks", out)
    return out


def _nifti_image(path: Path, size: int) -> torch.Tensor:
    """A NIfTI image as uint8 ``(1, size, size)``, resized like ``decode_images`` resizes rasters."""
    from monai.transforms import Resize  # monai takes seconds to import: only for NIfTI images

    array = _read_array(path, "image")
    if array.dtype != np.uint8:
        # Scanner intensities have no fixed range; stretch each image to 0..255.
        array = array.astype(np.float64)
        low, high = float(array.min()), float(array.max())
        array = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
    t = pad_to_square(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None])
    if t.shape[-1] != size:
        resize = Resize((size, size), mode="area") if t.shape[-1] > size else Resize((size, size), mode="bilinear", align_corners=False)
        t = resize(t)
        t = t.as_tensor() if hasattr(t, "as_tensor") else t
    return t.round().clamp(0, 255).to(torch.uint8)


def load_images(records: list[LungRecord], size: int, cache_dir: Path | None, converted: dict[str, int] | None = None) -> torch.Tensor:
    """Every record's image as uint8 ``(N, 1, size, size)``: rasters through the shared
    decode-once loader, NIfTI files through nibabel.

    Args:
        records: the images.
        size: output height and width.
        cache_dir: where decoded rasters are cached (``None``: no cache).
        converted: filled with ``{source mode: count}`` of converted rasters (see ``decode_images``).
    """
    out = torch.empty((len(records), 1, size, size), dtype=torch.uint8)
    raster = [i for i, r in enumerate(records) if not is_nifti(r.image)]
    if raster:
        out[raster] = decode_images([records[i].image for i in raster], size, 1, cache_dir, converted=converted)
    for i, r in enumerate(records):
        if is_nifti(r.image):
            out[i] = _nifti_image(r.image, size)
    return out


def _mask_cache_key(records: list[LungRecord], size: int) -> str:
    digest = hashlib.sha256(f"{_MASK_CACHE_VERSION}|{size}".encode())
    for r in records:
        for f in (r.image,) + r.masks:  # the image too: its size decides padding
            stat = f.stat()
            digest.update(f"\n{f.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]
