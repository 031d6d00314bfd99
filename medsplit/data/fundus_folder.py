"""A folder of fundus photographs with a labels CSV: the EyePACS layout (``labels.csv`` with
``image,file,level,dr_binary,patient,eye``) or Kaggle's "diabetic-retinopathy-resized"
(``trainLabels.csv`` with ``image,level``; images ``<image>.jpeg`` somewhere below).

Reads and checks the CSV and finds every image's file; decoding is left to the caller.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medsplit.data.errors import DataError, utf8_csv
from medsplit.data.retinopathy_data import NUM_GRADES

__all__ = ["FundusTable", "read_folder"]

_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
# Preferred CSV names in a folder holding several (Kaggle ships trainLabels.csv and
# trainLabels_cropped.csv); any other CSV with image and level columns is accepted too.
_PREFERRED_CSVS = ("labels.csv", "trainlabels.csv")
_GROUP_COLUMNS = ("group", "site", "source")


@dataclass
class FundusTable:
    """The rows of a labels CSV: image ids, their files, grades, patients and groups."""

    csv: Path
    ids: list[str]
    files: list[Path]
    grades: torch.Tensor
    patients: list[str]
    groups: list[str] | None

    def subset(self, keep: np.ndarray) -> FundusTable:
        rows = keep.tolist()
        return FundusTable(
            self.csv,
            [self.ids[i] for i in rows],
            [self.files[i] for i in rows],
            self.grades[torch.as_tensor(keep)],
            [self.patients[i] for i in rows],
            None if self.groups is None else [self.groups[i] for i in rows],
        )


def read_folder(folder: Path, labels: Path | None = None) -> FundusTable:
    """The labels CSV of ``folder``, checked row by row, with every image's file found.

    Args:
        folder: the image folder (images are looked up anywhere below it).
        labels: a labels CSV elsewhere (external validation's ``--labels``); ``None``: the
            folder's own CSV (``labels.csv``, ``trainLabels.csv`` or any with image and level).

    Raises:
        DataError: no usable CSV, an empty or repeated image name, a bad level, or images
            without a file; each names the CSV row or the image.
    """
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
    return FundusTable(
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
