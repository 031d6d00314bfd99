"""Chest X-ray lung segmentation data: image/mask folders, the Kaggle Montgomery + Shenzhen
layout, NIfTI files, combined sites or synthetic phantoms; the entry point :func:`load_lungs`.

Every source ends up as uint8 ``(N, 1, H, W)`` images and ``{0, 1}`` masks in memory,
decoded once (images through :func:`medsplit.data.images.decode_images`, which caches), and
split into train/val/test by patient with a seed. Everything that can be wrong with the
files is checked before training starts and reported as a :class:`DataError` naming the
file: an image without a mask, a mask of a different size than its image (compared at the
native size, before any resizing), a mask with more than two levels, an unreadable file.

The pieces: :mod:`~medsplit.data.lung_folder` (layouts, which image goes with which mask),
:mod:`~medsplit.data.lung_pixels` (reading and validating pixels),
:mod:`~medsplit.data.lung_sites` (``a+b`` combined sources),
:mod:`~medsplit.data.lung_spacing` (pixel spacing from NIfTI headers, for HD95 in mm),
:mod:`~medsplit.data.synthetic_cxr` (phantoms); the Kaggle download is in
:mod:`~medsplit.data.download`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsplit.data.duplicates import handle_duplicates
from medsplit.data.errors import DataError
from medsplit.data.image_size import check_image_size
from medsplit.data.lung_folder import KAGGLE_DIR, find_set_root, index_folder, resolve_lung_source
from medsplit.data.lung_pixels import load_images, load_masks
from medsplit.data.lung_sites import combine_sites, combined_sites
from medsplit.data.lung_spacing import set_spacing, spacing_range
from medsplit.data.partition import patient_split
from medsplit.data.sets import SegmentationData, SegmentationSet
from medsplit.data.synthetic_cxr import make_synthetic_cxr

__all__ = ["SegmentationSet", "SegmentationData", "resolve_lung_source", "combined_sites", "load_lungs", "split_by_patient",
           "DataError", "MISSING_MASK_POLICIES"]

MISSING_MASK_POLICIES = ("error", "skip")


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
        test_fraction, val_fraction: shares of all images, each in [0, 1), sum below 1
            (the default 0.2/0.1 gives 70/10/20). A zero share leaves that split empty; both
            zero keep every image in train (external validation scores a folder whole).
    """
    if not (0 <= test_fraction < 1 and 0 <= val_fraction < 1 and test_fraction + val_fraction < 1):
        raise DataError(f"need 0 <= test_fraction, val_fraction and test_fraction + val_fraction < 1; got {test_fraction}, {val_fraction}")
    names = sorted(set(groups))
    strata = np.array([names.index(g) for g in groups], dtype=np.int64)
    fractions = (1 - test_fraction - val_fraction, val_fraction, test_fraction)
    used = [i for i, f in enumerate(fractions) if f > 0]  # patient_split takes positive shares only
    parts = [np.empty(0, dtype=np.int64)] * len(fractions)
    for i, rows in zip(used, patient_split(strata, patients, [fractions[i] for i in used], seed)):
        parts[i] = rows
    train, val, test = parts
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
        test_fraction: share of all images in the test split (80/20 train+val/test by default);
            0 leaves the test split empty.
        val_fraction: share of all images carved out of the training part for validation (0: none).
        cache_dir: where decoded images and masks are cached (``None``: no cache).
        synthetic_size: number of phantoms when the source is synthetic.
        max_images: keep a seeded random subset of this many images (quick runs, tests).
        missing_masks: ``"error"`` (an image without a mask stops the run) or ``"skip"``
            (leave it out; counted in ``summary()["skipped_unmasked"]``). ``None``: ``"skip"``
            for the Kaggle Montgomery+Shenzhen download, whose public release has unannotated
            Shenzhen images, ``"error"`` for every other folder.
        duplicates: images of identical content: ``"error"`` (stop, naming both files) or
            ``"drop"`` (keep the first; listed in ``summary()["duplicates_dropped"]``).

    Returns:
        the splits; ``spacing`` holds every image's pixel spacing in mm at ``img_size`` when
        every image is a NIfTI file whose header states it (HD95 is then in mm), else ``None``.

    Raises:
        DataError: missing set, image without mask, mask/image size mismatch, non-binary
            mask or unreadable file, each naming the file.
    """
    check_image_size(img_size)
    if missing_masks not in MISSING_MASK_POLICIES + (None,):
        raise DataError(f"missing_masks must be one of {list(MISSING_MASK_POLICIES)}, got {missing_masks!r}")
    sites = combined_sites(data, Path(data_root))
    if sites:
        parts = [load_lungs(site, data_root, img_size, seed, test_fraction, val_fraction, cache_dir, synthetic_size,
                            None, missing_masks) for site in sites]
        return combine_sites(parts, seed, max_images)
    source, folder = resolve_lung_source(data, Path(data_root))
    info: dict = {"image_size": img_size}
    spacing = None  # mm per pixel by image id, where every image's header states it (NIfTI)
    if folder is None:
        images, masks = make_synthetic_cxr(synthetic_size, img_size, seed)
        ids = [f"synthetic-{i:04d}" for i in range(synthetic_size)]
        full = SegmentationSet(images, masks, ids, ["synthetic"] * synthetic_size, list(ids))
    else:
        root = find_set_root(folder)
        assert root is not None  # resolve_lung_source only returns folders holding a set
        policy = missing_masks or ("skip" if source == KAGGLE_DIR else "error")
        records, skipped = index_folder(root, source, policy)
        if skipped:
            info["skipped_unmasked"] = len(skipped)
        unique, dropped = handle_duplicates([r.image for r in records], duplicates)
        if dropped:
            records = [records[i] for i in unique]
            info["duplicates_dropped"] = [{"kept": a, "dropped": b} for a, b in dropped]
        if max_images is not None and max_images < len(records):
            keep = np.sort(np.random.default_rng(seed).choice(len(records), size=max_images, replace=False))
            records = [records[i] for i in keep]
        masks = load_masks(records, img_size, cache_dir)  # validates before any image is decoded
        converted: dict[str, int] = {}
        images = load_images(records, img_size, cache_dir, converted)
        if converted:  # e.g. RGB screenshots or 16-bit X-rays among 8-bit greyscale ones
            info["converted_images"] = {"to": "L", "from_modes": converted}
        spacing = set_spacing(records, img_size)
        if spacing is not None:
            info["pixel_spacing_mm"] = spacing_range(spacing)
        full = SegmentationSet(images, masks, [r.id for r in records], [r.group for r in records], [r.patient for r in records])
    train, val, test = split_by_patient(full.patients or full.ids, full.groups, seed, test_fraction, val_fraction)
    return SegmentationData(full.subset(train), full.subset(val), full.subset(test), source, folder is None, info, spacing)
