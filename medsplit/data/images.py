"""In-memory image sets and a decode-once image loader.

Every source in :mod:`medsplit.data` ends up as an :class:`ImageSet`: uint8 images decoded
once and kept in memory, so that training reads tensors (on the CPU or moved to a GPU)
instead of re-decoding JPEGs every epoch. On a GPU the data pipeline, not the model, sets
the speed, which is why decoding happens exactly once and augmentation works on batches
(:mod:`medsplit.data.augment`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from medsplit.data.cache import read_cached, read_cached_metadata, write_cached

__all__ = ["DataError", "ImageSet", "decode_images", "utf8_csv"]

# Bump when the decode pipeline changes, so stale caches are never reused.
_PIPELINE_VERSION = "monai-pil-draft-squarepad-v3-16bit-stretch"
_CHANNEL_MODES = {1: "L", 3: "RGB"}
# PIL modes of single-channel images deeper than 8 bits (16-bit PNG/TIFF X-rays, 32-bit integer or
# float TIFFs). PIL's convert("L") clips them at 255, which turned 16-bit chest X-rays all white.
_DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


class DataError(ValueError):
    """Bad input to the data layer; the message names the file, row, field or value at fault."""


@contextlib.contextmanager
def utf8_csv(path: Path):
    """Around reading a CSV as UTF-8: a file in another encoding (Latin-1 from a spreadsheet,
    say) stops with an error naming it and the encoding expected, not a bare codec message."""
    try:
        yield
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text (byte 0x{error.object[error.start]:02x} at position {error.start} "
                        "cannot be decoded); save it as UTF-8 (with or without a BOM), e.g. "
                        f"iconv -f latin1 -t utf-8 {path.name} > fixed.csv") from error


@dataclass
class ImageSet:
    """Decoded images with their labels and provenance.

    Attributes:
        images: uint8 ``(N, C, H, W)``, decoded once and kept in memory.
        labels: int64 ``(N,)``, the task target.
        ids: image names, e.g. ``"10_left"``.
        patients: patient id per image (splits and partitions never separate a patient).
        grades: int64 ``(N,)`` original 0-4 DR grade, when known.
        groups: per-image group such as image source or site, for non-IID partitions.
    """

    images: torch.Tensor
    labels: torch.Tensor
    ids: list[str]
    patients: list[str]
    grades: torch.Tensor | None = None
    groups: list[str] | None = None

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DataError(f"ImageSet.images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (n,):
            raise DataError(f"ImageSet.labels must be int64 ({n},), got {self.labels.dtype} {tuple(self.labels.shape)}")
        if self.grades is not None and (self.grades.dtype != torch.int64 or self.grades.shape != (n,)):
            raise DataError(f"ImageSet.grades must be int64 ({n},), got {self.grades.dtype} {tuple(self.grades.shape)}")
        for name in ("ids", "patients", "groups"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise DataError(f"ImageSet.{name} has {len(value)} entries for {n} images")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, idx: Sequence[int] | np.ndarray | torch.Tensor) -> ImageSet:
        """Rows ``idx`` (integer indices or a boolean mask) as a new ImageSet.

        Args:
            idx: integer positions or a boolean mask of length ``len(self)``.
        """
        index = torch.as_tensor(np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx))
        if index.dtype == torch.bool:
            if index.shape != (len(self),):
                raise DataError(f"boolean mask of shape {tuple(index.shape)} for an ImageSet of {len(self)} images")
            index = index.nonzero().flatten()
        index = index.to(torch.int64).flatten()
        if index.numel() and (int(index.min()) < -len(self) or int(index.max()) >= len(self)):
            raise DataError(f"subset index out of range for an ImageSet of {len(self)} images")
        rows = index.tolist()
        return ImageSet(
            images=self.images[index.to(self.images.device)],
            labels=self.labels[index.to(self.labels.device)],
            ids=[self.ids[i] for i in rows],
            patients=[self.patients[i] for i in rows],
            grades=None if self.grades is None else self.grades[index.to(self.grades.device)],
            groups=None if self.groups is None else [self.groups[i] for i in rows],
        )

    def class_counts(self, num_classes: int) -> list[int]:
        """Number of images per class ``0..num_classes-1``.

        Args:
            num_classes: number of target classes; a label outside the range is an error.
        """
        if len(self) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= num_classes):
            raise DataError(
                f"labels range {int(self.labels.min())}..{int(self.labels.max())} does not fit num_classes={num_classes}"
            )
        return torch.bincount(self.labels.cpu(), minlength=num_classes).tolist()

    def to(self, device: torch.device | str) -> ImageSet:
        """The same set with its tensors on ``device`` (lists are shared, not copied).

        Args:
            device: target device, e.g. ``"cuda"``.
        """
        return ImageSet(
            images=self.images.to(device),
            labels=self.labels.to(device),
            ids=self.ids,
            patients=self.patients,
            grades=None if self.grades is None else self.grades.to(device),
            groups=self.groups,
        )


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
        from monai.data import PILReader
        from monai.transforms import CastToTyped, Compose, EnsureChannelFirstd, Lambdad, LoadImaged, Resized

        # reverse_indexing=False keeps PIL's (H, W) order; MONAI's default transposes to (W, H).
        self.converter = _PilConverter(_CHANNEL_MODES[channels], size)
        reader = PILReader(converter=self.converter, reverse_indexing=False)
        self.load = Compose(
            [
                LoadImaged("image", reader=reader, image_only=True),
                EnsureChannelFirstd("image", channel_dim=-1 if channels == 3 else "no_channel"),
                Lambdad("image", _pad_to_square),
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
    from PIL import Image

    array = np.asarray(image, dtype=np.float64)
    low, high = float(array.min()), float(array.max())
    array = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
    return Image.fromarray(np.round(array).astype(np.uint8), mode="L")


def _pad_to_square(img: Any) -> Any:
    from monai.transforms import SpatialPad

    h, w = img.shape[-2:]
    if h == w:
        return img
    side = max(h, w)
    return SpatialPad((side, side), method="symmetric")(img)


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


