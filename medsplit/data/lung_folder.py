"""Lung image/mask folders: where a set is, and which image goes with which mask(s), group and patient.

Layouts understood (the set root may be nested up to three folders deep, as Kaggle zips are):

* ``images/*.png`` + ``masks/*.png`` with the same stems (``/work/shared/data/lungs/covid-cxr-v7``),
  optional ``manifest.csv`` (``stem`` column; ``source``/``site``/``view`` -> groups,
  ``patient`` or a case ``image_url`` -> patient);
* Kaggle "chest-xray-masks-and-labels": ``CXR_png/`` + ``masks/``, Shenzhen masks named
  ``<stem>_mask.png``; the original Montgomery layout ``ManualMask/leftMask`` +
  ``ManualMask/rightMask`` (merged by logical OR);
* the same folders holding ``.nii``/``.nii.gz`` files (2-D, or 3-D with a single slice).

Only file names and the manifest are read here; pixels are read by :mod:`medsplit.data.lung_pixels`.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from medsplit.data.errors import DataError, utf8_csv

__all__ = ["KAGGLE_LUNGS_DATASET", "KAGGLE_DIR", "KAGGLE_ALIASES", "IMAGE_DIRS", "MASK_DIR", "MONTGOMERY_MASK_DIRS",
           "RASTER_SUFFIXES", "NIFTI_SUFFIXES", "LungRecord", "resolve_lung_source", "find_set_root", "index_folder", "is_nifti"]

KAGGLE_LUNGS_DATASET = "nikhilpandey360/chest-xray-masks-and-labels"
KAGGLE_DIR = "kaggle-lungs"
KAGGLE_ALIASES = ("montgomery-shenzhen", "kaggle")
IMAGE_DIRS = ("images", "CXR_png")
MASK_DIR = "masks"
MONTGOMERY_MASK_DIRS = (Path("ManualMask") / "leftMask", Path("ManualMask") / "rightMask")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
# Kaggle file-name prefixes -> the hospital they come from (groups for non-IID partitions)
_PREFIX_GROUPS = {"MCUCXR": "montgomery", "CHNCXR": "shenzhen"}
# A manifest URL shared by more images than this is a collection (a repository), not one patient's case.
_MAX_CASE_IMAGES = 10


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
            if find_set_root(folder) is not None:
                return folder.name, folder
        return "synthetic", None
    if data in KAGGLE_ALIASES:
        folder = lungs_dir / KAGGLE_DIR
        if find_set_root(folder) is None:
            raise DataError(
                f"lung data {data!r} not found: looked for a Montgomery+Shenzhen set in {folder}. "
                f"Get it with `make data` (Kaggle dataset {KAGGLE_LUNGS_DATASET}, needs Kaggle credentials), "
                "or use data=synthetic"
            )
        return KAGGLE_DIR, folder
    named = lungs_dir / data
    for folder in (named, Path(data).expanduser()):
        if folder.is_dir() and find_set_root(folder) is not None:
            return folder.name, folder
    available = [f.name for f in _subfolders(lungs_dir) if find_set_root(f) is not None]
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


def find_set_root(folder: Path, depth: int = 3) -> Path | None:
    """The folder holding an image dir and a mask dir: ``folder`` itself or one nested in it.

    Args:
        folder: where to look.
        depth: how many folder levels below ``folder`` to search (Kaggle zips nest the set).
    """
    if not folder.is_dir():
        return None
    has_images = any((folder / d).is_dir() for d in IMAGE_DIRS)
    has_masks = (folder / MASK_DIR).is_dir() or (folder / MONTGOMERY_MASK_DIRS[0]).is_dir()
    if has_images and has_masks:
        return folder
    if depth > 0:
        for sub in _subfolders(folder):
            found = find_set_root(sub, depth - 1)
            if found is not None:
                return found
    return None


# ---------------------------------------------------------------------------------------------
# indexing a folder: which image goes with which mask(s), group and patient


@dataclass(frozen=True)
class LungRecord:
    """One image of a lung set and the mask file(s) that go with it."""

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


def is_nifti(path: Path) -> bool:
    """Whether ``path`` is a NIfTI file (``.nii`` or ``.nii.gz``, any case)."""
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


def index_folder(root: Path, set_name: str, missing_masks: str) -> tuple[list[LungRecord], list[str]]:
    """Records for every image under ``root`` and the ids skipped for lack of a mask.

    Args:
        root: a set root (see :func:`find_set_root`).
        set_name: the source name, the group of images that neither a manifest nor a Kaggle
            file-name prefix assigns to one.
        missing_masks: ``"error"`` (an image without a mask is a DataError) or ``"skip"``.
    """
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
        records.append(LungRecord(stem, image, masks, group, patient))
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
