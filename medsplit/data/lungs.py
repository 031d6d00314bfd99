"""Chest X-ray lung segmentation data: image/mask folders, the Kaggle Montgomery + Shenzhen
layout, NIfTI files, or synthetic phantoms.

Every source ends up as uint8 ``(N, 1, H, W)`` images and ``{0, 1}`` masks in memory,
decoded once (images through :func:`medsplit.data.images.decode_images`, which caches), and
split into train/val/test by patient with a seed. Everything that can be wrong with the
files is checked before training starts and reported as a :class:`DataError` naming the
file: an image without a mask, a mask of a different size than its image (compared at the
native size, before any resizing), a mask with more than two levels, an unreadable file.

Layouts understood (the set root may be nested up to three folders deep, as Kaggle zips are):

* ``images/*.png`` + ``masks/*.png`` with the same stems (``/work/shared/data/lungs/covid-cxr-v7``),
  optional ``manifest.csv`` (``stem`` column; ``source``/``site``/``view`` -> groups,
  ``patient`` or a case ``image_url`` -> patient);
* Kaggle "chest-xray-masks-and-labels": ``CXR_png/`` + ``masks/``, Shenzhen masks named
  ``<stem>_mask.png``; the original Montgomery layout ``ManualMask/leftMask`` +
  ``ManualMask/rightMask`` (merged by logical OR);
* the same folders holding ``.nii``/``.nii.gz`` files (2-D, or 3-D with a single slice).
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medsplit.data.cache import read_cached, write_cached
from medsplit.data.duplicates import handle_duplicates
from medsplit.data.images import DataError, decode_images, utf8_csv
from medsplit.data.partition import patient_split
from medsplit.data.synthetic_cxr import make_synthetic_cxr

__all__ = ["SegmentationSet", "SegmentationData", "resolve_lung_source", "combined_sites", "load_lungs", "download_kaggle_lungs", "DataError"]

KAGGLE_DATASET = "nikhilpandey360/chest-xray-masks-and-labels"
KAGGLE_DIR = "kaggle-lungs"
KAGGLE_ALIASES = ("montgomery-shenzhen", "kaggle")
IMAGE_DIRS = ("images", "CXR_png")
MASK_DIR = "masks"
MONTGOMERY_MASK_DIRS = (Path("ManualMask") / "leftMask", Path("ManualMask") / "rightMask")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
MISSING_MASK_POLICIES = ("error", "skip")
# Kaggle file-name prefixes -> the hospital they come from (groups for non-IID partitions)
_PREFIX_GROUPS = {"MCUCXR": "montgomery", "CHNCXR": "shenzhen"}
# A manifest URL shared by more images than this is a collection (a repository), not one patient's case.
_MAX_CASE_IMAGES = 10
_MASK_CACHE_VERSION = "lung-masks-squarepad-nearestexact-v1"


# ---------------------------------------------------------------------------------------------
# containers


@dataclass
class SegmentationSet:
    """Images and lung masks of one split, in memory.

    Attributes:
        images: uint8 ``(N, 1, H, W)``.
        masks: uint8 ``(N, 1, H, W)`` in ``{0, 1}``.
        ids: file stems.
        groups: image source or view per image, for non-IID client partitions.
        patients: patient (or case) per image; splits never separate a patient. ``None``: one per image.
    """

    images: torch.Tensor
    masks: torch.Tensor
    ids: list[str]
    groups: list[str]
    patients: list[str] | None = None

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        for name in ("images", "masks"):
            t = getattr(self, name)
            if t.dtype != torch.uint8 or t.ndim != 4 or t.shape[0] != n or t.shape[-2:] != self.images.shape[-2:]:
                raise DataError(f"SegmentationSet.{name} must be uint8 ({n}, C, H, W) matching the images, got {t.dtype} {tuple(t.shape)}")
        for name in ("ids", "groups", "patients"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise DataError(f"SegmentationSet.{name} has {len(value)} entries for {n} images")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, idx: Sequence[int] | np.ndarray | torch.Tensor) -> "SegmentationSet":
        """Rows ``idx`` (integer positions or a boolean mask) as a new set.

        Args:
            idx: integer positions or a boolean mask of length ``len(self)``.
        """
        index = torch.as_tensor(np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx))
        if index.dtype == torch.bool:
            if index.shape != (len(self),):
                raise DataError(f"boolean mask of shape {tuple(index.shape)} for a set of {len(self)} images")
            index = index.nonzero().flatten()
        index = index.to(torch.int64).flatten()
        rows = index.tolist()
        if rows and (min(rows) < -len(self) or max(rows) >= len(self)):
            raise DataError(f"subset index out of range for a set of {len(self)} images")
        return SegmentationSet(
            images=self.images[index.to(self.images.device)],
            masks=self.masks[index.to(self.masks.device)],
            ids=[self.ids[i] for i in rows],
            groups=[self.groups[i] for i in rows],
            patients=None if self.patients is None else [self.patients[i] for i in rows],
        )

    def lung_fraction(self) -> float:
        """Mean fraction of mask pixels that are lung (0 for an empty set)."""
        return float(self.masks.float().mean()) if len(self) else 0.0


@dataclass
class SegmentationData:
    """A lung segmentation task: three disjoint splits and where they came from.

    Attributes:
        train, val, test: the splits (disjoint by patient).
        source: set name (``"covid-cxr-v7"``, ``"kaggle-lungs"``, ``"synthetic"``, a folder name).
        synthetic: True for generated phantoms (results are then not clinical evidence).
        info: extra facts for the run record (image size, images skipped for lack of a mask).
    """

    train: SegmentationSet
    val: SegmentationSet
    test: SegmentationSet
    source: str
    synthetic: bool
    info: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """JSON-able description: source, per split ``n``, mean lung fraction and group counts."""
        splits = {}
        for name in ("train", "val", "test"):
            s = getattr(self, name)
            splits[name] = {"n": len(s), "n_patients": len(set(s.patients)) if s.patients else None,
                            "lung_fraction": round(s.lung_fraction(), 4), "groups": dict(sorted(Counter(s.groups).items()))}
        return {"source": self.source, "synthetic": self.synthetic, **self.info, "splits": splits}


# ---------------------------------------------------------------------------------------------
# where the data is


def resolve_lung_source(data: str, data_root: Path) -> tuple[str, Path | None]:
    """Turn the user's ``data=`` value into ``(source name, folder)``; ``folder`` is None for synthetic.

    Args:
        data: ``"auto"`` (the first lung set found under ``data_root/lungs/``, else synthetic),
            ``"synthetic"``, ``"montgomery-shenzhen"`` / ``"kaggle"`` (``data_root/lungs/kaggle-lungs``),
            the name of a set under ``data_root/lungs/``, or a path to a set folder.
        data_root: the data folder (``../shared/data`` in development, ``datasets/`` for users).

    Raises:
        DataError: a named set or path that does not exist or holds no lung set, with where it
            looked and how to get the data.
    """
    lungs_dir = Path(data_root) / "lungs"
    if data == "synthetic":
        return "synthetic", None
    if data == "auto":
        for folder in _subfolders(lungs_dir):
            if _find_set_root(folder) is not None:
                return folder.name, folder
        return "synthetic", None
    if data in KAGGLE_ALIASES:
        folder = lungs_dir / KAGGLE_DIR
        if _find_set_root(folder) is None:
            raise DataError(
                f"lung data {data!r} not found: looked for a Montgomery+Shenzhen set in {folder}. "
                f"Get it with `make data` (Kaggle dataset {KAGGLE_DATASET}, needs Kaggle credentials), "
                "or use data=synthetic"
            )
        return KAGGLE_DIR, folder
    named = lungs_dir / data
    for folder in (named, Path(data).expanduser()):
        if folder.is_dir() and _find_set_root(folder) is not None:
            return folder.name, folder
    available = [f.name for f in _subfolders(lungs_dir) if _find_set_root(f) is not None]
    raise DataError(
        f"lung data {data!r} not found: looked in {named} and {Path(data)} for a folder with "
        f"{' or '.join(IMAGE_DIRS)}/ and {MASK_DIR}/ (or ManualMask/). Valid choices: auto, synthetic, "
        f"{', '.join(KAGGLE_ALIASES)}, a path, or a set in {lungs_dir}: {available or 'none present'}. "
        "Get the Montgomery+Shenzhen set with `make data`."
    )


def _subfolders(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _find_set_root(folder: Path, depth: int = 3) -> Path | None:
    """The folder holding an image dir and a mask dir: ``folder`` itself or one nested in it."""
    if not folder.is_dir():
        return None
    has_images = any((folder / d).is_dir() for d in IMAGE_DIRS)
    has_masks = (folder / MASK_DIR).is_dir() or (folder / MONTGOMERY_MASK_DIRS[0]).is_dir()
    if has_images and has_masks:
        return folder
    if depth > 0:
        for sub in _subfolders(folder):
            found = _find_set_root(sub, depth - 1)
            if found is not None:
                return found
    return None


# ---------------------------------------------------------------------------------------------
# indexing a folder: which image goes with which mask(s), group and patient


@dataclass(frozen=True)
class _Record:
    id: str
    image: Path
    masks: tuple[Path, ...]  # more than one: Montgomery left + right, merged by OR
    group: str
    patient: str


def _stem(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES + RASTER_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _data_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    suffixes = RASTER_SUFFIXES + NIFTI_SUFFIXES
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(suffixes))


def _mask_index(folder: Path) -> dict[str, Path]:
    """Stem -> mask file; Shenzhen's ``<stem>_mask`` names map to ``<stem>``."""
    index: dict[str, Path] = {}
    for f in _data_files(folder):
        stem = _stem(f)
        key = stem[: -len("_mask")] if stem.endswith("_mask") else stem
        if key in index:
            raise DataError(f"two masks for image {key!r}: {index[key]} and {f}; keep one")
        index[key] = f
    return index


def _index_folder(root: Path, set_name: str, missing_masks: str) -> tuple[list[_Record], list[str]]:
    """Records for every image under ``root`` and the ids skipped for lack of a mask."""
    image_dir = next(root / d for d in IMAGE_DIRS if (root / d).is_dir())
    images = _data_files(image_dir)
    if not images:
        raise DataError(f"no images in {image_dir} (looked for {', '.join(RASTER_SUFFIXES + NIFTI_SUFFIXES)})")
    merged = _mask_index(root / MASK_DIR)
    halves = [_mask_index(root / d) for d in MONTGOMERY_MASK_DIRS]
    manifest = _read_manifest(root, set_name)

    records, skipped = [], []
    for image in images:
        stem = _stem(image)
        masks = _masks_for(stem, image, root, merged, halves)
        if masks is None:
            if missing_masks == "error":
                raise DataError(
                    f"image {image} has no mask: looked for {root / MASK_DIR}/{stem}.* , {stem}_mask.* and "
                    f"{root / MONTGOMERY_MASK_DIRS[0]}/{stem}.* (pass missing_masks='skip' to leave such images out)"
                )
            skipped.append(stem)
            continue
        group, patient = manifest.get(stem, (_default_group(stem, set_name), stem))
        records.append(_Record(stem, image, masks, group, patient))
    if not records:
        raise DataError(f"no image in {image_dir} has a mask")
    return records, skipped


def _masks_for(stem: str, image: Path, root: Path, merged: dict[str, Path], halves: list[dict[str, Path]]) -> tuple[Path, ...] | None:
    if stem in merged:
        return (merged[stem],)
    found = [h.get(stem) for h in halves]
    if all(f is None for f in found):
        return None
    if any(f is None for f in found):
        missing = MONTGOMERY_MASK_DIRS[found.index(None)]
        raise DataError(f"image {image} has only half of its Montgomery mask: no {root / missing}/{stem}.*")
    return tuple(found)  # type: ignore[arg-type]


def _default_group(stem: str, set_name: str) -> str:
    for prefix, group in _PREFIX_GROUPS.items():
        if stem.startswith(prefix):
            return group
    return set_name


def _read_manifest(root: Path, set_name: str) -> dict[str, tuple[str, str]]:
    """``stem -> (group, patient)`` from ``manifest.csv`` when there is one."""
    path = root / "manifest.csv"
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8-sig") as f, utf8_csv(path):
        rows = list(csv.DictReader(f))
    if not rows or "stem" not in rows[0]:
        raise DataError(f"{path} needs a 'stem' column naming each image file's stem; columns are {list(rows[0]) if rows else []}")
    group_column = next((c for c in ("source", "site", "view") if c in rows[0]), None)
    url_counts = Counter(r.get("image_url", "") for r in rows)
    out = {}
    for r in rows:
        group = (r[group_column] or "unknown") if group_column else _default_group(r["stem"], set_name)
        out[r["stem"]] = (group, _patient_of(r, url_counts))
    return out


def _patient_of(row: dict[str, str], url_counts: Counter) -> str:
    """Patient key: an explicit column, else the case page the image came from.

    Public COVID-19 sets hold several radiographs of one patient (day 1, day 7, ...) under one
    case URL; keeping them on one side of the split avoids leaking a patient into the test set.
    """
    for column in ("patient", "patient_id"):
        if row.get(column):
            return row[column]
    url = row.get("image_url", "")
    if url and url_counts[url] <= _MAX_CASE_IMAGES:
        return url
    return row["stem"]


# ---------------------------------------------------------------------------------------------
# reading and validating masks, reading NIfTI images


def _native_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` of an image file from its header, without decoding the pixels."""
    try:
        if _is_nifti(path):
            import nibabel as nib

            shape = nib.load(str(path)).shape  # header only
            plane = tuple(d for d in shape if d != 1)
            if len(plane) != 2:
                raise DataError(f"{path} has shape {shape}; expected a 2-D image or a single slice")
            return plane  # type: ignore[return-value]
        from PIL import Image

        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"cannot read image {path}: {type(error).__name__}: {error}") from error


def _as_2d(array: np.ndarray, path: Path) -> np.ndarray:
    squeezed = np.squeeze(array)
    if squeezed.ndim != 2:
        raise DataError(f"{path} has shape {array.shape}; expected a 2-D image or a single slice")
    return squeezed


def _read_array(path: Path, what: str) -> np.ndarray:
    """Pixel values of a 2-D raster or NIfTI file as stored (first axis = rows)."""
    try:
        if _is_nifti(path):
            import nibabel as nib

            return _as_2d(np.asanyarray(nib.load(str(path)).dataobj), path)
        from PIL import Image

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


def _pad_to_square(t: torch.Tensor) -> torch.Tensor:
    """Zero-pad ``(C, H, W)`` symmetrically to a square, exactly as ``decode_images`` does for images."""
    from monai.transforms import SpatialPad

    h, w = t.shape[-2:]
    if h == w:
        return t
    side = max(h, w)
    out = SpatialPad((side, side), method="symmetric")(t)
    return out.as_tensor() if hasattr(out, "as_tensor") else out


def _load_mask(record: _Record, size: int) -> torch.Tensor:
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
    t = _pad_to_square(torch.from_numpy(np.ascontiguousarray(merged, dtype=np.uint8))[None].float())
    # nearest-exact samples each output pixel's centre; plain "nearest" samples its top-left
    # corner, shifting the mask by up to half a source block against the area-resized image.
    t = F.interpolate(t[None], size=(size, size), mode="nearest-exact")[0]
    return t.to(torch.uint8)


def _load_masks(records: list[_Record], size: int, cache_dir: Path | None) -> torch.Tensor:
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
    from monai.transforms import Resize

    array = _read_array(path, "image")
    if array.dtype != np.uint8:
        # Scanner intensities have no fixed range; stretch each image to 0..255.
        array = array.astype(np.float64)
        low, high = float(array.min()), float(array.max())
        array = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
    t = _pad_to_square(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None])
    if t.shape[-1] != size:
        resize = Resize((size, size), mode="area") if t.shape[-1] > size else Resize((size, size), mode="bilinear", align_corners=False)
        t = resize(t)
        t = t.as_tensor() if hasattr(t, "as_tensor") else t
    return t.round().clamp(0, 255).to(torch.uint8)


def _load_images(records: list[_Record], size: int, cache_dir: Path | None, converted: dict[str, int] | None = None) -> torch.Tensor:
    """Rasters through the shared decode-once loader; NIfTI files through nibabel."""
    out = torch.empty((len(records), 1, size, size), dtype=torch.uint8)
    raster = [i for i, r in enumerate(records) if not _is_nifti(r.image)]
    if raster:
        out[raster] = decode_images([records[i].image for i in raster], size, 1, cache_dir, converted=converted)
    for i, r in enumerate(records):
        if _is_nifti(r.image):
            out[i] = _nifti_image(r.image, size)
    return out


def _mask_cache_key(records: list[_Record], size: int) -> str:
    digest = hashlib.sha256(f"{_MASK_CACHE_VERSION}|{size}".encode())
    for r in records:
        for f in (r.image,) + r.masks:  # the image too: its size decides padding
            stat = f.stat()
            digest.update(f"\n{f.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


# ---------------------------------------------------------------------------------------------
# splitting and the entry point


def split_by_patient(patients: list[str], groups: list[str], seed: int, test_fraction: float,
                     val_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train/val/test indices with every patient on one side only: the project's one
    patient-split algorithm (:func:`medsplit.data.partition.patient_split`), stratified by the
    image's group (its source set, e.g. Montgomery or Shenzhen in the Kaggle download) so each
    split holds every group in proportion.

    Args:
        patients: patient key per image.
        groups: group per image (the strata).
        seed: the same seed gives the same split.
        test_fraction, val_fraction: shares of all images, each in (0, 1), sum below 1
            (the default 0.2/0.1 gives 70/10/20).
    """
    if not (0 < test_fraction < 1 and 0 < val_fraction < 1 and test_fraction + val_fraction < 1):
        raise DataError(f"need 0 < test_fraction, val_fraction and test_fraction + val_fraction < 1; got {test_fraction}, {val_fraction}")
    names = sorted(set(groups))
    strata = np.array([names.index(g) for g in groups], dtype=np.int64)
    train, val, test = patient_split(strata, patients, (1 - test_fraction - val_fraction, val_fraction, test_fraction), seed)
    if not len(train):
        raise DataError(f"{len(patients)} images leave nothing to train on with test_fraction={test_fraction}, val_fraction={val_fraction}")
    return train, val, test


def load_lungs(data: str, data_root: Path, img_size: int = 128, seed: int = 0, test_fraction: float = 0.2,
               val_fraction: float = 0.1, cache_dir: Path | None = None, synthetic_size: int = 120,
               max_images: int | None = None, missing_masks: str | None = None, duplicates: str = "error") -> SegmentationData:
    """Load, validate and split a lung segmentation set.

    Args:
        data: which set; see :func:`resolve_lung_source`.
        data_root: the data folder holding ``lungs/``.
        img_size: output height and width (images are zero-padded to square first).
        seed: split seed (and the phantom seed for synthetic data).
        test_fraction: share of all images in the test split (80/20 train+val/test by default).
        val_fraction: share of all images carved out of the training part for validation.
        cache_dir: where decoded images and masks are cached (``None``: no cache).
        synthetic_size: number of phantoms when the source is synthetic.
        max_images: keep a seeded random subset of this many images (quick runs, tests).
        missing_masks: ``"error"`` (an image without a mask stops the run) or ``"skip"``
            (leave it out; counted in ``summary()["skipped_unmasked"]``). ``None``: ``"skip"``
            for the Kaggle Montgomery+Shenzhen download, whose public release has unannotated
            Shenzhen images, ``"error"`` for every other folder.
        duplicates: images of identical content: ``"error"`` (stop, naming both files) or
            ``"drop"`` (keep the first; listed in ``summary()["duplicates_dropped"]``).

    Raises:
        DataError: missing set, image without mask, mask/image size mismatch, non-binary
            mask or unreadable file, each naming the file.
    """
    if img_size < 16:
        raise DataError(f"img_size must be at least 16 pixels, got {img_size}")
    if missing_masks not in MISSING_MASK_POLICIES + (None,):
        raise DataError(f"missing_masks must be one of {list(MISSING_MASK_POLICIES)}, got {missing_masks!r}")
    sites = combined_sites(data, Path(data_root))
    if sites:
        parts = [load_lungs(site, data_root, img_size, seed, test_fraction, val_fraction, cache_dir, synthetic_size,
                            None, missing_masks) for site in sites]
        return _combine_sites(parts, seed, max_images)
    source, folder = resolve_lung_source(data, Path(data_root))
    info: dict = {"image_size": img_size}
    if folder is None:
        images, masks = make_synthetic_cxr(synthetic_size, img_size, seed)
        ids = [f"synthetic-{i:04d}" for i in range(synthetic_size)]
        full = SegmentationSet(images, masks, ids, ["synthetic"] * synthetic_size, list(ids))
    else:
        root = _find_set_root(folder)
        assert root is not None  # resolve_lung_source only returns folders holding a set
        policy = missing_masks or ("skip" if source == KAGGLE_DIR else "error")
        records, skipped = _index_folder(root, source, policy)
        if skipped:
            info["skipped_unmasked"] = len(skipped)
        unique, dropped = handle_duplicates([r.image for r in records], duplicates)
        if dropped:
            records = [records[i] for i in unique]
            info["duplicates_dropped"] = [{"kept": a, "dropped": b} for a, b in dropped]
        if max_images is not None and max_images < len(records):
            keep = np.sort(np.random.default_rng(seed).choice(len(records), size=max_images, replace=False))
            records = [records[i] for i in keep]
        masks = _load_masks(records, img_size, cache_dir)  # validates before any image is decoded
        converted: dict[str, int] = {}
        images = _load_images(records, img_size, cache_dir, converted)
        if converted:  # e.g. RGB screenshots or 16-bit X-rays among 8-bit greyscale ones
            info["converted_images"] = {"to": "L", "from_modes": converted}
        full = SegmentationSet(images, masks, [r.id for r in records], [r.group for r in records], [r.patient for r in records])
    train, val, test = split_by_patient(full.patients or full.ids, full.groups, seed, test_fraction, val_fraction)
    return SegmentationData(full.subset(train), full.subset(val), full.subset(test), source, folder is None, info)


def combined_sites(data: str, data_root: Path) -> list[str]:
    """The set names in a combined source such as ``covid-cxr-v7+shenzhen``; ``[]`` for one set.

    A folder that exists under that exact name (``+`` in a path) is one set, not a combination.

    Args:
        data: the ``data.source`` value.
        data_root: the data folder holding ``lungs/``.

    Raises:
        DataError: an empty name (``a++b``), a repeated set, or ``auto``/``synthetic`` inside a combination.
    """
    if "+" not in data or (Path(data_root) / "lungs" / data).is_dir() or Path(data).expanduser().is_dir():
        return []
    sites = [s.strip() for s in data.split("+")]
    if any(not s for s in sites):
        raise DataError(f"lung data {data!r}: a combined source names sets joined by '+', e.g. covid-cxr-v7+shenzhen; one name is empty")
    if len(set(sites)) != len(sites):
        raise DataError(f"lung data {data!r} names the same set twice")
    for s in sites:
        if s in ("auto", "synthetic"):
            raise DataError(f"lung data {data!r}: {s!r} cannot be part of a combined source; name real sets (folders under {Path(data_root) / 'lungs'})")
    return sites


def _combine_sites(parts: list[SegmentationData], seed: int, max_images: int | None) -> SegmentationData:
    """Pool sets split one by one: each site keeps its own patient-level train/val/test split
    (so each site's test split can be scored on its own) and every image's group is its set name,
    which ``data.partition=group`` turns into one hospital per site."""
    def site_rows(name: str) -> list[SegmentationSet]:
        out = []
        for d in parts:
            s = getattr(d, name)
            out.append(SegmentationSet(s.images, s.masks, list(s.ids), [d.source] * len(s),
                                       [f"{d.source}/{p}" for p in (s.patients or s.ids)]))
        return out

    def concat(sets: list[SegmentationSet]) -> SegmentationSet:
        return SegmentationSet(torch.cat([s.images for s in sets]), torch.cat([s.masks for s in sets]),
                               [i for s in sets for i in s.ids], [g for s in sets for g in s.groups],
                               [p for s in sets for p in (s.patients or [])])

    splits = {name: concat(site_rows(name)) for name in ("train", "val", "test")}
    all_ids = [i for s in splits.values() for i in s.ids]
    clash = [i for i, n in Counter(all_ids).items() if n > 1]
    if clash:
        raise DataError(f"sets {[d.source for d in parts]} share image stems (e.g. {clash[0]!r}); rename the files of one set")
    if max_images is not None:
        # the same seeded share of every split, so a quick run keeps every site in every split
        total = sum(len(s) for s in splits.values())
        rng = np.random.default_rng(seed)
        for name, s in splits.items():
            keep = max(2, round(len(s) * max_images / total)) if max_images < total else len(s)
            if keep < len(s):
                splits[name] = s.subset(np.sort(rng.choice(len(s), size=keep, replace=False)))
    source = "+".join(d.source for d in parts)
    info = {"image_size": parts[0].info.get("image_size"), "sites": {d.source: {k: v for k, v in d.info.items() if k != "image_size"} for d in parts}}
    return SegmentationData(splits["train"], splits["val"], splits["test"], source, False, info)


def download_kaggle_lungs(data_root: Path) -> Path:
    """Download Montgomery + Shenzhen lung masks from Kaggle into ``data_root/lungs/kaggle-lungs``.

    Uses the ``kaggle`` package (dataset ``nikhilpandey360/chest-xray-masks-and-labels``); needs
    ``~/.kaggle/kaggle.json`` or ``KAGGLE_USERNAME``/``KAGGLE_KEY`` (or ``KAGGLE_API_TOKEN``).
    Returns at once when the set is already there.

    Args:
        data_root: the data folder; the set lands in ``data_root/lungs/kaggle-lungs``.

    Raises:
        DataError: no ``kaggle`` package, no credentials, no network, or an unexpected archive layout.
    """
    target = Path(data_root) / "lungs" / KAGGLE_DIR
    if _find_set_root(target) is not None:
        return target
    how = f"or download {KAGGLE_DATASET} by hand and unzip it into {target}"
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError as error:
        # a broken install (e.g. kaggle 2.x without its `six` dependency) lands here too: name the cause
        raise DataError(f"the Kaggle download needs a working `kaggle` package (pip install kaggle; import failed: {error}), {how}") from error
    api = KaggleApi()
    try:
        api.authenticate()
    except (Exception, SystemExit) as error:  # the kaggle package calls exit(1) without credentials
        raise DataError(
            "Kaggle credentials not found: put kaggle.json in ~/.kaggle/ (or set KAGGLE_USERNAME and KAGGLE_KEY, "
            f"or KAGGLE_API_TOKEN), {how}"
        ) from error
    target.mkdir(parents=True, exist_ok=True)
    try:
        api.dataset_download_files(KAGGLE_DATASET, path=str(target), unzip=True, quiet=False)
    except (Exception, SystemExit) as error:
        raise DataError(f"downloading {KAGGLE_DATASET} failed ({type(error).__name__}: {error}); check the network, {how}") from error
    if _find_set_root(target) is None:
        raise DataError(f"{target} holds no folder with CXR_png/ (or images/) and masks/ after the download; {how}")
    return target
