"""RetinaMNIST (MedMNIST v2) ``.npz`` archives: 28 px fundus images with official splits, which are kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medsplit.data.errors import DataError
from medsplit.data.partition import patient_subset
from medsplit.data.retinopathy_data import NUM_GRADES, RetinopathyData, Target, check_classes
from medsplit.data.sets import ImageSet

__all__ = ["load_npz"]


def load_npz(path: Path, spec: Target, img_size: int, seed: int, max_images: int | None) -> RetinopathyData:
    """A MedMNIST-format ``.npz`` with its official train/val/test splits.

    Args:
        path: the ``.npz`` (keys ``{train,val,test}_{images,labels}``).
        spec: the target the grades become labels of.
        img_size: images are resized (bilinear) to this size.
        seed: seeds the ``max_images`` subset.
        max_images: if set, a patient-level subset of each official split in proportion to its size.
    """
    try:
        archive = np.load(path)
    except Exception as error:
        raise DataError(f"cannot read {path} as a .npz archive: {error}") from error
    with archive:
        needed = [f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels")]
        missing = [k for k in needed if k not in archive.files]
        if missing:
            raise DataError(f"{path} is missing key(s) {', '.join(missing)} (MedMNIST format; has: {', '.join(archive.files)})")
        raw = {s: (archive[f"{s}_images"], archive[f"{s}_labels"]) for s in ("train", "val", "test")}
    total = sum(len(labels) for _, labels in raw.values())
    sets = {}
    for split, (images, labels) in raw.items():
        grades = _npz_grades(labels, path, split)
        ids = [f"{split}_{i:04d}" for i in range(len(grades))]
        part = ImageSet(_npz_images(images, img_size, path, split), spec.labels(grades), ids, list(ids), grades)
        if max_images is not None:
            budget = max(1, round(max_images * len(grades) / total))
            part = part.subset(patient_subset(grades, ids, budget, seed))
        sets[split] = part
    source = f"RetinaMNIST {path} (official splits)"
    if max_images is not None:
        source += f", subset of {sum(len(s) for s in sets.values())} of {total} images (max_images={max_images}, seed={seed})"
    data = RetinopathyData(sets["train"], sets["val"], sets["test"], spec.num_classes, list(spec.class_names), source, False, spec.name)
    check_classes(data)
    return data


def _npz_grades(labels: np.ndarray, path: Path, split: str) -> torch.Tensor:
    flat = np.asarray(labels).reshape(len(labels), -1)
    if flat.shape[1] != 1 or not np.issubdtype(flat.dtype, np.integer):
        raise DataError(f"{path}: {split}_labels must be integer grades of shape (N, 1), got {flat.dtype} {np.asarray(labels).shape}")
    bad = np.flatnonzero((flat[:, 0] < 0) | (flat[:, 0] >= NUM_GRADES))
    if len(bad):
        raise DataError(f"{path}: {split}_labels[{bad[0]}] = {flat[bad[0], 0]} is not a grade in 0..{NUM_GRADES - 1}")
    return torch.from_numpy(flat[:, 0].astype(np.int64))


def _npz_images(images: np.ndarray, img_size: int, path: Path, split: str) -> torch.Tensor:
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise DataError(f"{path}: {split}_images must be uint8 (N, H, W[, C]), got {images.dtype} {images.shape}")
    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)  # the models take RGB; greyscale MedMNIST variants still load
    if x.shape[-1] != img_size or x.shape[-2] != img_size:
        # Bilinear keeps the 28 px images smooth when enlarged (nearest would show blocks).
        x = F.interpolate(x.float(), size=(img_size, img_size), mode="bilinear", align_corners=False, antialias=img_size < x.shape[-1])
        x = x.round().clamp(0, 255).to(torch.uint8)
    return x.contiguous()
