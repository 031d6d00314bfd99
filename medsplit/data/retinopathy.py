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
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medsplit.data.duplicates import handle_duplicates
from medsplit.data.images import DataError, ImageSet, decode_images, utf8_csv
from medsplit.data.partition import patient_split, patient_subset
from medsplit.data.synthetic_fundus import fundus_sites, make_synthetic_fundus

__all__ = ["TARGETS", "Target", "RetinopathyData", "resolve_source", "load_retinopathy", "SOURCES"]

NUM_GRADES = 5
GRADE_NAMES = ("0 no DR", "1 mild", "2 moderate", "3 severe", "4 proliferative")


@dataclass(frozen=True)
class Target:
    """A task defined on the 0-4 DR grade.

    Attributes:
        name: key in :data:`TARGETS`.
        class_names: one name per class.
        threshold: label = grade >= threshold (binary targets); ``None``: label = grade.
        description: what the positive class means.
    """

    name: str
    class_names: tuple[str, ...]
    threshold: int | None
    description: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def labels(self, grades: torch.Tensor) -> torch.Tensor:
        """Task labels (int64) for 0-4 grades.

        Args:
            grades: int64 DR grades.
        """
        if self.threshold is None:
            return grades.to(torch.int64).clone()
        return (grades >= self.threshold).to(torch.int64)


TARGETS: dict[str, Target] = {
    "any": Target("any", ("no DR", "any DR"), 1, "any diabetic retinopathy: grade > 0"),
    "referable": Target("referable", ("non-referable", "referable"), 2, "referable DR: grade >= 2 (moderate or worse)"),
    "grade": Target("grade", GRADE_NAMES, None, "the 5-level grade 0-4"),
}

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
_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
# Preferred CSV names in a folder holding several (Kaggle ships trainLabels.csv and
# trainLabels_cropped.csv); any other CSV with image and level columns is accepted too.
_PREFERRED_CSVS = ("labels.csv", "trainlabels.csv")
_GROUP_COLUMNS = ("group", "site", "source")
# The synthetic set is a fixed data set, like a real one: only splits vary with the seed.
SYNTHETIC_SEED = 0


@dataclass
class RetinopathyData:
    """Train/val/test image sets for one retinopathy target.

    Attributes:
        train, val, test: patient-disjoint splits.
        num_classes, class_names: of the target.
        source: human-readable description of where the images came from.
        synthetic: True for the embedded generator (results are not clinical evidence).
        target: key of :data:`TARGETS`.
    """

    train: ImageSet
    val: ImageSet
    test: ImageSet
    num_classes: int
    class_names: list[str]
    source: str
    synthetic: bool
    target: str = "referable"
    notes: dict = field(default_factory=dict)
    """Facts about the input files for the run record: images whose pixel format was converted
    (``converted_images``), duplicate copies dropped (``duplicates_dropped``)."""

    def summary(self) -> dict:
        """JSON-able description: source, target, classes, and per split the number of
        images, class counts, grade counts (when known) and number of patients."""
        splits = {}
        for name in ("train", "val", "test"):
            part: ImageSet = getattr(self, name)
            info = {"n": len(part), "class_counts": part.class_counts(self.num_classes), "n_patients": len(set(part.patients))}
            if part.grades is not None:
                info["grade_counts"] = torch.bincount(part.grades.cpu(), minlength=NUM_GRADES).tolist()
            splits[name] = info
        return {
            "source": self.source,
            "synthetic": self.synthetic,
            "target": self.target,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "image_shape": list(self.train.images.shape[1:]),
            **self.notes,
            "splits": splits,
        }


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
        return _load_npz(path, spec, img_size, seed, max_images)
    if kind == "folder":
        assert path is not None
        table = _read_folder(path)
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
    _check_classes(result)
    return result


# ---------------------------------------------------------------------------- arguments


def _check_arguments(
    target: str, img_size: int, val_fraction: float, test_fraction: float, max_images: int | None, synthetic_size: int
) -> Target:
    if target not in TARGETS:
        raise DataError(f"unknown retinopathy target {target!r}; valid targets: {', '.join(TARGETS)}")
    if img_size < 8:
        raise DataError(f"img_size must be at least 8 pixels, got {img_size}")
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


# ---------------------------------------------------------------------------- folder + CSV


@dataclass
class _Table:
    csv: Path
    ids: list[str]
    files: list[Path]
    grades: torch.Tensor
    patients: list[str]
    groups: list[str] | None

    def subset(self, keep: np.ndarray) -> _Table:
        rows = keep.tolist()
        return _Table(
            self.csv,
            [self.ids[i] for i in rows],
            [self.files[i] for i in rows],
            self.grades[torch.as_tensor(keep)],
            [self.patients[i] for i in rows],
            None if self.groups is None else [self.groups[i] for i in rows],
        )


def _read_folder(folder: Path, labels: Path | None = None) -> _Table:
    csv_path, header = _pick_csv(folder) if labels is None else _labels_csv(Path(labels))
    names, levels, files, patients, groups = [], [], [], [], []
    group_column = next((c for c in _GROUP_COLUMNS if c in header), None)
    seen: dict[str, int] = {}
    with csv_path.open(newline="", encoding="utf-8-sig") as handle, utf8_csv(csv_path):
        reader = csv.DictReader(handle)
        for row_number, row in enumerate(reader, start=1):
            where = f"{csv_path} row {row_number} (line {reader.line_num})"
            name = (row.get("image") or "").strip()
            if not name:
                raise DataError(f"{where}: empty image name")
            if name in seen:
                raise DataError(f"{where}: image {name!r} is listed twice (first at row {seen[name]})")
            seen[name] = row_number
            names.append(name)
            levels.append(_parse_level(row.get("level"), where, name))
            files.append((row.get("file") or "").strip())
            patients.append((row.get("patient") or "").strip() or _patient_from_name(name))
            if group_column:
                groups.append((row.get(group_column) or "").strip() or "unknown")
    if not names:
        raise DataError(f"{csv_path} lists no images")
    return _Table(
        csv=csv_path,
        ids=names,
        files=_locate_files(folder, csv_path, names, files),
        grades=torch.tensor(levels, dtype=torch.int64),
        patients=patients,
        groups=groups if group_column else None,
    )


def _pick_csv(folder: Path) -> tuple[Path, list[str]]:
    """The labels CSV of a folder: the first (preferred names first, then by name) with
    at least the ``image`` and ``level`` columns."""
    def preference(path: Path) -> tuple[int, str]:
        name = path.name.lower()
        return (_PREFERRED_CSVS.index(name) if name in _PREFERRED_CSVS else len(_PREFERRED_CSVS), path.name)

    candidates = sorted(folder.glob("*.csv"), key=preference)
    if not candidates:
        raise DataError(f"no labels CSV in {folder}: expected a .csv with at least the columns image, level")
    problems = []
    for path in candidates:
        with path.open(newline="", encoding="utf-8-sig") as handle, utf8_csv(path):
            header = [c.strip() for c in next(csv.reader(handle), [])]
        missing = [c for c in ("image", "level") if c not in header]
        if not missing:
            return path, header
        problems.append(f"{path} is missing required column(s) {', '.join(missing)} (has: {', '.join(header) or 'no header'})")
    raise DataError("no usable labels CSV: " + "; ".join(problems))


def _labels_csv(path: Path) -> tuple[Path, list[str]]:
    """A labels CSV given by path (external validation's ``--labels``), checked like a folder's."""
    if not path.is_file():
        raise DataError(f"labels CSV {path} does not exist")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        header = [c.strip() for c in next(csv.reader(handle), [])]
    missing = [c for c in ("image", "level") if c not in header]
    if missing:
        raise DataError(f"labels CSV {path} is missing required column(s) {', '.join(missing)} (has: {', '.join(header) or 'no header'})")
    return path, header


def _parse_level(value: str | None, where: str, name: str) -> int:
    text = (value or "").strip()
    if not re.fullmatch(r"[+-]?\d+", text) or not 0 <= int(text) < NUM_GRADES:
        raise DataError(f"{where}: level {value!r} of image {name!r} is not an integer grade in 0..{NUM_GRADES - 1}")
    return int(text)


def _patient_from_name(name: str) -> str:
    # Kaggle/EyePACS names are <patient>_left / <patient>_right.
    return re.sub(r"_(left|right)$", "", name, flags=re.IGNORECASE)


def _locate_files(folder: Path, csv_path: Path, names: list[str], given: list[str]) -> list[Path]:
    """Resolve each image's file: the ``file`` column when given (relative to the CSV's
    folder), else ``<image>.{jpeg,jpg,png}`` anywhere below ``folder``."""
    found: list[Path | None] = []
    index: _ImageIndex | None = None
    for name, file in zip(names, given):
        if file:
            path = Path(file) if os.path.isabs(file) else csv_path.parent / file
            found.append(path if path.is_file() else None)
            continue
        index = index or _ImageIndex(folder)
        found.append(index.find(name))
    missing = [name for name, path in zip(names, found) if path is None]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5])
        raise DataError(
            f"{len(missing)} image(s) listed in {csv_path} have no file under {folder} "
            f"(file column, or <image>{{{','.join(_IMAGE_SUFFIXES)}}} anywhere below): {shown}"
            + (" ..." if len(missing) > 5 else "")
        )
    return [p for p in found if p is not None]


class _ImageIndex:
    """Image stem (case-insensitive) -> files, over the whole tree below a folder."""

    def __init__(self, folder: Path):
        self.paths: dict[str, list[Path]] = {}
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            for file in sorted(files):
                stem, suffix = os.path.splitext(file)
                if suffix.lower() in _IMAGE_SUFFIXES:
                    self.paths.setdefault(stem.lower(), []).append(Path(root) / file)
        # Kaggle ships every image twice (resized_train/ and resized_train_cropped/): an
        # image found more than once is taken from the folder holding the most images
        # (then by name), so one data set is read from one consistent folder.
        per_folder = Counter(p.parent for group in self.paths.values() for p in group)
        self.rank = {d: i for i, (d, _) in enumerate(sorted(per_folder.items(), key=lambda kv: (-kv[1], str(kv[0]))))}

    def find(self, name: str) -> Path | None:
        paths = self.paths.get(name.lower(), [])
        return min(paths, key=lambda p: (self.rank[p.parent], str(p)), default=None)


# ---------------------------------------------------------------------------- RetinaMNIST


def _load_npz(path: Path, spec: Target, img_size: int, seed: int, max_images: int | None) -> RetinopathyData:
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
    _check_classes(data)
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


def _check_classes(data: RetinopathyData) -> None:
    for name in ("train", "val", "test"):
        part: ImageSet = getattr(data, name)
        counts = part.class_counts(data.num_classes)
        for c, n in enumerate(counts):
            if n == 0:
                raise DataError(
                    f"the {name} split ({len(part)} images) has no images of class {c} ({data.class_names[c]!r}) "
                    f"for target {data.target!r}; source: {data.source}. Use more images (max_images), "
                    f"larger val/test fractions, or a coarser target (valid: {', '.join(TARGETS)})"
                )
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = set(getattr(data, a).patients) & set(getattr(data, b).patients)
        if shared:  # the splitter guarantees this; a failure here is a bug, not bad input
            raise AssertionError(f"patients {sorted(shared)[:5]} are in both {a} and {b}")


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
        table = _read_folder(path, None if labels is None else Path(labels))
        images = decode_images(table.files, img_size, 3, cache_dir)
        full = ImageSet(images, spec.labels(table.grades), table.ids, table.patients, table.grades, table.groups)
        return full, f"{path} ({table.csv.name})"
    if kind == "npz":
        return _load_npz(path, spec, img_size, 0, None).test, f"{path} (official test split)"
    raise DataError("external validation needs real images: pass a folder or .npz, not the synthetic source")
