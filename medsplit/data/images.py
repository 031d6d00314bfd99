"""The decode-once image loader.

Every source in :mod:`medsplit.data` ends up as uint8 images decoded once and kept in memory
(an :class:`~medsplit.data.sets.ImageSet` or :class:`~medsplit.data.sets.SegmentationSet`),
so that training reads tensors (on the CPU or moved to a GPU) instead of re-decoding JPEGs
every epoch. On a GPU the data pipeline, not the model, sets the speed, which is why
decoding happens exactly once and augmentation works on batches (:mod:`medsplit.data.augment`).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from medsplit.data.cache import read_cached, read_cached_metadata, write_cached

# Re-exported: they lived here before sets.py and errors.py existed, and callers import them from here.
from medsplit.data.errors import DataError, utf8_csv
from medsplit.data.sets import ImageSet

__all__ = ["DataError", "ImageSet", "decode_images", "pad_to_square", "utf8_csv"]

# Bump when the decode pipeline changes, so stale caches are never reused.
_PIPELINE_VERSION = "monai-pil-draft-squarepad-v3-16bit-stretch"
_CHANNEL_MODES = {1: "L", 3: "RGB"}
# PIL modes of single-channel images deeper than 8 bits (16-bit PNG/TIFF X-rays, 32-bit integer or
# float TIFFs). PIL's convert("L") clips them at 255, which turned 16-bit chest X-rays all white.
_DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def decode_images(files: list[Path], size: int, channels: int, cache_dir: Path | None,
                  converted: dict[str, int] | None = None) -> torch.Tensor:
    """Decode every file once into a uint8 ``(N, channels, size, size)`` tensor.

    Each file goes through a MONAI dictionary-transform pipeline: ``LoadImaged`` with the
    PIL reader (which lets libjpeg decode large JPEGs at a reduced scale, still at least
    twice the final size), ``EnsureChannelFirstd``, symmetric zero-padding of non-square
    images to a square so fundus discs are not squashed, ``Resized`` with area
    interpolation when shrinking and bilinear when enlarging, then rounding to uint8.
    Files are decoded on a small thread pool: PIL releases the GIL while decoding JPEGs.

    Args:
        files: image files (JPEG, PNG, ... anything PIL reads).
        size: output height and width in pixels.
        channels: 3 for RGB, 1 for greyscale.
        cache_dir: if given, the decoded tensor is stored there as safetensors, keyed by a
            hash of (file paths, sizes, mtimes, size, channels), and reused next time.
        converted: if given, filled with ``{source mode: count}`` of the files whose pixel
            format was converted (greyscale or RGBA among RGB fundus photographs, 16-bit
            greyscale stretched to 8 bits), so a data summary can report them.

    Images deeper than 8 bits (16-bit PNG or TIFF, PIL modes ``I;16``, ``I``, ``F``) are
    stretched from their own minimum..maximum to 0..255, as NIfTI images are: their stored
    range (12 bits in 16? full 16?) is not known, and a plain 8-bit conversion clips them white.

    Raises:
        DataError: a file is missing, corrupt or truncated (the message names it), or
            ``size``/``channels`` are invalid.
    """
    if size < 1:
        raise DataError(f"image size must be a positive number of pixels, got {size}")
    if channels not in _CHANNEL_MODES:
        raise DataError(f"channels must be one of {sorted(_CHANNEL_MODES)}, got {channels}")
    files = [Path(f) for f in files]
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"decoded-{_cache_key(files, size, channels)}.safetensors"
        cached = read_cached(cache_file, "images", (len(files), channels, size, size))
        modes = read_cached_metadata(cache_file).get("converted") if cached is not None else None
        if cached is not None and modes is not None:
            if converted is not None:
                converted.update(json.loads(modes))
            return cached
    found: dict[str, int] = {}
    images = _decode_all(files, size, channels, found)
    if cache_file is not None:
        write_cached(cache_file, "images", images, {"pipeline": _PIPELINE_VERSION, "converted": json.dumps(found)})
    if converted is not None:
        converted.update(found)
    return images


def _decode_all(files: list[Path], size: int, channels: int, converted: dict[str, int]) -> torch.Tensor:
    out = torch.empty((len(files), channels, size, size), dtype=torch.uint8)
    if not files:
        return out
    decode_one = _DecodePipeline(size, channels)
    workers = max(1, min(4, os.cpu_count() or 1, len(files)))
    # Parallelism comes from the file-level thread pool; torch's own intra-op threads on
    # top of it oversubscribe the cores (measured 2-5x slower on 2 cores), so turn them off.
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _decode_into(out, files, decode_one, workers)
    finally:
        torch.set_num_threads(torch_threads)
    converted.update(decode_one.converter.converted())
    return out


def _decode_into(out: torch.Tensor, files: list[Path], decode_one: _DecodePipeline, workers: int) -> None:
    with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(
        total=len(files), desc=f"decoding {len(files)} images @ {out.shape[-1]}px", unit="img", leave=False
    ) as bar:
        # map() keeps input order; the first exception is re-raised when its result is read.
        for i, image in enumerate(pool.map(decode_one, files)):
            out[i] = image
            bar.update(1)


class _DecodePipeline:
    """One file -> uint8 (C, size, size) via MONAI dictionary transforms."""

    def __init__(self, size: int, channels: int):
        # monai takes seconds to import: only for the MONAI loading pipeline
        from monai.data import PILReader
        from monai.transforms import CastToTyped, Compose, EnsureChannelFirstd, Lambdad, LoadImaged, Resized

        # reverse_indexing=False keeps PIL's (H, W) order; MONAI's default transposes to (W, H).
        self.converter = _PilConverter(_CHANNEL_MODES[channels], size)
        reader = PILReader(converter=self.converter, reverse_indexing=False)
        self.load = Compose(
            [
                LoadImaged("image", reader=reader, image_only=True),
                EnsureChannelFirstd("image", channel_dim=-1 if channels == 3 else "no_channel"),
                Lambdad("image", pad_to_square),
            ]
        )
        self.size = size
        self.shrink = Resized("image", (size, size), mode="area")
        self.enlarge = Resized("image", (size, size), mode="bilinear", align_corners=False)
        # Truncating casts would darken every image by half a grey level on average.
        self.to_uint8 = Compose([Lambdad("image", lambda x: x.round().clamp(0, 255)), CastToTyped("image", torch.uint8)])

    def __call__(self, file: Path) -> torch.Tensor:
        try:
            item = self.load({"image": str(file)})
            if item["image"].shape[-1] != self.size:
                item = (self.shrink if item["image"].shape[-1] > self.size else self.enlarge)(item)
            item = self.to_uint8(item)
        except Exception as error:  # MONAI wraps reader errors in RuntimeError chains
            raise DataError(f"cannot decode image {file}: {_root_cause(error)}") from error
        return torch.as_tensor(item["image"]).as_subclass(torch.Tensor)


class _PilConverter:
    """Applied by MONAI's PILReader to each freshly opened (not yet decoded) image.

    For JPEGs it first asks libjpeg for a reduced-scale decode (``draft``: 1/2, 1/4 or 1/8)
    that stays at least twice the final size, so that area resampling still does the last
    (>= 2x) reduction and the result is as smooth as a full decode, while large sources
    (Kaggle's 1024 px images at 128 px) decode several times faster.
    """

    def __init__(self, mode: str, size: int):
        self.mode = mode
        self.size = size
        self._converted: Counter = Counter()
        self._lock = threading.Lock()  # called from the decoding thread pool

    def converted(self) -> dict[str, int]:
        """``{source mode: count}`` of the images converted so far."""
        return dict(sorted(self._converted.items()))

    def __call__(self, image: Any) -> Any:
        width, height = image.size
        side, keep = max(width, height), 2 * self.size
        if image.mode != self.mode and not (image.mode == "P" and self.mode == "RGB"):
            # "P" (palette) RGB is how PIL stores many ordinary colour PNGs: not worth reporting
            with self._lock:
                self._converted[image.mode] += 1
        if image.mode in _DEEP_MODES:
            return _stretch_to_8bit(image).convert(self.mode)
        if side >= 2 * keep:  # a 1/2 (or smaller) scale still leaves `keep` pixels
            image.draft(self.mode, (-(-keep * width // side), -(-keep * height // side)))
        return image.convert(self.mode)


def _stretch_to_8bit(image: Any) -> Any:
    """A single-channel image deeper than 8 bits as 8-bit greyscale, its own min..max -> 0..255."""
    array = np.asarray(image, dtype=np.float64)
    low, high = float(array.min()), float(array.max())
    array = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
    return Image.fromarray(np.round(array).astype(np.uint8), mode="L")


def pad_to_square(t: torch.Tensor) -> torch.Tensor:
    """Zero-pad a ``(C, H, W)`` image symmetrically to a square (fundus discs and lungs are not
    squashed by the resize that follows); the one padding every image and mask goes through.

    Args:
        t: channel-first image or mask.
    """
    from monai.transforms import SpatialPad  # monai takes seconds to import: only for the MONAI loading pipeline

    h, w = t.shape[-2:]
    if h == w:
        return t
    side = max(h, w)
    out = SpatialPad((side, side), method="symmetric")(t)
    return out.as_tensor() if hasattr(out, "as_tensor") else out


def _root_cause(error: BaseException) -> str:
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"{type(error).__name__}: {text}"


def _cache_key(files: list[Path], size: int, channels: int) -> str:
    digest = hashlib.sha256(f"{_PIPELINE_VERSION}|{size}|{channels}|{len(files)}".encode())
    for file in files:
        try:
            stat = file.stat()
        except OSError as error:
            raise DataError(f"cannot read image {file}: {error.strerror}") from error
        digest.update(f"\n{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


