"""Diabetic retinopathy data: three sources, one result.

Sources (see :func:`resolve_source`):

- a folder with a labels CSV and fundus images: the EyePACS layout (``labels.csv`` with
  ``image,file,level,dr_binary,patient,eye``) or Kaggle's "diabetic-retinopathy-resized"
  (``trainLabels.csv`` with ``image,level``; images ``<image>.jpeg`` somewhere below);
- a RetinaMNIST ``.npz`` (MedMNIST v2), whose official splits are kept;
- the embedded synthetic fundus generator, the default when no real data is present.

Every source becomes a :class:`RetinopathyData` of three :class:`ImageSet` splits with the
requested target. Splits are patient-level (both eyes of a patient on the same side),
seeded and stratified by DR grade. All input problems raise :class:`DataError` here,
before any training starts.

The pieces: :mod:`~medsplit.data.retinopathy_data` (targets, the split container),
:mod:`~medsplit.data.fundus_folder` (folder + CSV: EyePACS, Kaggle),
:mod:`~medsplit.data.retinamnist` (``.npz``), :mod:`~medsplit.data.synthetic_fundus`
(generator); downloads are in :mod:`~medsplit.data.download`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch

from medsplit.data.duplicates import handle_duplicates
from medsplit.data.errors import DataError
from medsplit.data.fundus_folder import read_folder
from medsplit.data.image_size import check_image_size
from medsplit.data.images import decode_images
from medsplit.data.partition import patient_split, patient_subset
from medsplit.data.retinamnist import load_npz
from medsplit.data.retinopathy_data import GRADE_NAMES, NUM_GRADES, TARGETS, RetinopathyData, Target, check_classes
from medsplit.data.sets import ImageSet
from medsplit.data.synthetic_fundus import fundus_sites, make_synthetic_fundus

__all__ = ["TARGETS", "Target", "RetinopathyData", "resolve_source", "load_retinopathy", "load_for_evaluation", "SOURCES",
           "NUM_GRADES", "GRADE_NAMES", "DataError"]

# Named sources: (kind, path below data_root, how to get it).
SOURCES: dict[str, tuple[str, str, str]] = {
    "eyepacs": (
        "folder",
        "retinopathy/eyepacs256",
        "put a folder there with labels.csv (columns image,level and optionally file,patient) and the fundus images",
    ),
    "kaggle": (
        "folder",
        "retinopathy/kaggle",
        "run `make data` (python -m medsplit data) with Kaggle credentials to download tanlikesmath/diabetic-retinopathy-resized",
    ),
    "retinamnist": (
        "npz",
        "retinopathy/retinamnist/retinamnist.npz",
        "run `make data` (python -m medsplit data) to download RetinaMNIST from Zenodo",
    ),
}
_AUTO_ORDER = ("eyepacs", "kaggle", "retinamnist")
# The synthetic set is a fixed data set, like a real one: only splits vary with the seed.
SYNTHETIC_SEED = 0


def resolve_source(data: str, data_root: Path) -> tuple[str, Path | None]:
    """Find the retinopathy source named by ``data``.

    Args:
        data: ``"eyepacs"`` (``data_root/retinopathy/eyepacs256``), ``"kaggle"``
            (``data_root/retinopathy/kaggle``), ``"retinamnist"``
            (``data_root/retinopathy/retinamnist/retinamnist.npz``), ``"synthetic"``,
            ``"auto"`` (the first of eyepacs, kaggle, retinamnist present, else synthetic),
            or a path to a folder with a labels CSV or to a ``.npz`` file.
        data_root: root of the data tree.

    Returns:
        ``(kind, path)`` with kind ``"folder"``, ``"npz"`` or ``"synthetic"`` (path None).

    Raises:
        DataError: a named source is not present (says where it looked and how to get
            it), or ``data`` is neither a known name nor an existing path.
    """
    data_root = Path(data_root)
    if data == "synthetic":
        return "synthetic", None
    if data == "auto":
        for name in _AUTO_ORDER:
            kind, rel, _ = SOURCES[name]
            if _present(kind, data_root / rel):
                return kind, data_root / rel
        return "synthetic", None
    if data in SOURCES:
        kind, rel, how = SOURCES[data]
        path = data_root / rel
        if not _present(kind, path):
            what = "a folder with a labels CSV" if kind == "folder" else "a .npz file"
            raise DataError(f"retinopathy source {data!r} not found: looked for {what} at {path}; to get it, {how}")
        return kind, path
    path = Path(data).expanduser()
    if path.is_dir():
        return "folder", path
    if path.is_file() and path.suffix == ".npz":
        return "npz", path
    raise DataError(
        f"unknown retinopathy source {data!r}: use one of auto, synthetic, {', '.join(SOURCES)}, "
        f"or a path to a folder with a labels CSV or to a .npz file (no such folder or .npz at {path})"
    )


def load_retinopathy(
    data: str,
    data_root: Path,
    target: str = "referable",
    img_size: int = 128,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    max_images: int | None = None,
    cache_dir: Path | None = None,
    synthetic_size: int = 600,
    duplicates: str = "error",
) -> RetinopathyData:
    """Load, decode and split a retinopathy source.

    Args:
        data: source name or path, see :func:`resolve_source`.
        data_root: root of the data tree.
        target: ``"any"`` (grade > 0), ``"referable"`` (grade >= 2) or ``"grade"`` (0-4).
        img_size: images are resized to ``img_size`` x ``img_size``.
        seed: seeds the patient-level subset and split (not the synthetic images).
        val_fraction, test_fraction: shares of images for validation and test (ignored for
            RetinaMNIST, whose official splits are kept).
        max_images: if set, a seeded, grade-stratified, patient-level subset of at most this
            many images is taken before splitting (for RetinaMNIST: from each official split
            in proportion to its size).
        cache_dir: where decoded images are cached (folder sources only).
        synthetic_size: number of images of the synthetic set.
        duplicates: what to do with files of identical content in a folder source: ``"error"``
            (stop, naming both) or ``"drop"`` (keep the first; listed in the summary).

    Raises:
        DataError: bad arguments, missing or malformed source, or a split missing a class.
    """
    spec = _check_arguments(target, img_size, val_fraction, test_fraction, max_images, synthetic_size)
    kind, path = resolve_source(data, data_root)
    if kind == "npz":
        assert path is not None
        return load_npz(path, spec, img_size, seed, max_images)
    if kind == "folder":
        assert path is not None
        table = read_folder(path)
        source = f"EyePACS folder {path} ({table.csv.name})"
        notes: dict = {}
        unique, dropped = handle_duplicates(table.files, duplicates)
        if dropped:
            table = table.subset(np.asarray(unique))
            notes["duplicates_dropped"] = [{"kept": a, "dropped": b} for a, b in dropped]
        keep = _subset(table.grades, table.patients, max_images, seed)
        if keep is not None:
            source += f", subset of {len(keep)} of {len(table.ids)} images (max_images={max_images}, seed={seed})"
            table = table.subset(keep)
        converted: dict[str, int] = {}
        images = decode_images(table.files, img_size, 3, cache_dir, converted=converted)
        if converted:  # greyscale or RGBA photographs among RGB ones: converted to RGB, and said so
            notes["converted_images"] = {"to": "RGB", "from_modes": converted}
        full = ImageSet(images, spec.labels(table.grades), table.ids, table.patients, table.grades, table.groups)
        synthetic = False
    else:
        images, grades, patients = make_synthetic_fundus(synthetic_size, img_size, SYNTHETIC_SEED)
        full = ImageSet(images, spec.labels(grades), _eye_ids(patients), patients, grades, fundus_sites(patients))
        source = f"synthetic fundus generator ({synthetic_size} images, generator seed {SYNTHETIC_SEED})"
        keep = _subset(grades, patients, max_images, seed)
        if keep is not None:
            source += f", subset of {len(keep)} (max_images={max_images}, seed={seed})"
            full = full.subset(keep)
        synthetic = True
        notes = {}
    train, val, test = _split(full, val_fraction, test_fraction, seed)
    result = RetinopathyData(train, val, test, spec.num_classes, list(spec.class_names), source, synthetic, spec.name, notes)
    check_classes(result)
    return result


# ---------------------------------------------------------------------------- arguments


def _check_arguments(
    target: str, img_size: int, val_fraction: float, test_fraction: float, max_images: int | None, synthetic_size: int
) -> Target:
    if target not in TARGETS:
        raise DataError(f"unknown retinopathy target {target!r}; valid targets: {', '.join(TARGETS)}")
    check_image_size(img_size)
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(
            "need 0 < val_fraction, 0 < test_fraction and val_fraction + test_fraction < 1, "
            f"got val_fraction={val_fraction} and test_fraction={test_fraction}"
        )
    if max_images is not None and max_images < 3:
        raise DataError(f"max_images must be at least 3 (one image per split) or None, got {max_images}")
    if synthetic_size < 10:
        raise DataError(f"synthetic_size must be at least 10, got {synthetic_size}")
    return TARGETS[target]


def _present(kind: str, path: Path) -> bool:
    if kind == "npz":
        return path.is_file()
    return path.is_dir() and any(path.glob("*.csv"))


# ---------------------------------------------------------------------------- splits


def _subset(grades: torch.Tensor, patients: list[str], max_images: int | None, seed: int) -> np.ndarray | None:
    if max_images is None or max_images >= len(patients):
        return None
    return patient_subset(grades, patients, max_images, seed)


def _split(full: ImageSet, val_fraction: float, test_fraction: float, seed: int) -> tuple[ImageSet, ImageSet, ImageSet]:
    # Stratify by grade rather than the binary target: it balances every target at once.
    strata = full.grades if full.grades is not None else full.labels
    fractions = (1.0 - val_fraction - test_fraction, val_fraction, test_fraction)
    train, val, test = (full.subset(idx) for idx in patient_split(strata, full.patients, fractions, seed))
    return train, val, test


def _eye_ids(patients: list[str]) -> list[str]:
    seen: Counter[str] = Counter()
    ids = []
    for p in patients:
        ids.append(f"{p}_{'left' if seen[p] == 0 else 'right'}")
        seen[p] += 1
    return ids


def load_for_evaluation(data: str, data_root: Path, target: str, img_size: int, cache_dir: Path | None = None,
                        labels: Path | str | None = None) -> tuple[ImageSet, str]:
    """Every image of a folder source (or a RetinaMNIST ``.npz``'s official test split), unsplit,
    for scoring a trained model on external data. ``labels``: a CSV outside the folder naming its
    images (``image,level``; images are found below the folder, or by the ``file`` column).

    Raises:
        DataError: the synthetic source (external validation needs real images) or a bad source.
    """
    spec = TARGETS[target]  # the run's config already validated the target
    kind, path = resolve_source(data, data_root)
    if labels is not None and kind != "folder":
        raise DataError(f"--labels names the grades of an image folder; {data!r} is not a folder")
    if kind == "folder":
        table = read_folder(path, None if labels is None else Path(labels))
        images = decode_images(table.files, img_size, 3, cache_dir)
        full = ImageSet(images, spec.labels(table.grades), table.ids, table.patients, table.grades, table.groups)
        return full, f"{path} ({table.csv.name})"
    if kind == "npz":
        return load_npz(path, spec, img_size, 0, None).test, f"{path} (official test split)"
    raise DataError("external validation needs real images: pass a folder or .npz, not the synthetic source")
