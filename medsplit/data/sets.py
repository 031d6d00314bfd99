"""In-memory image sets: rows of decoded images with their per-image provenance.

Every source ends up as one of these: :class:`ImageSet` for classification (a label per
image) and :class:`SegmentationSet` for segmentation (a mask per image). Both are rows of the
same kind, so what rows have in common (a length, a subset of rows, image ids, groups and
patients) lives once in :class:`BaseImageSet`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Self

import numpy as np
import torch

from medsplit.data.errors import DataError

__all__ = ["BaseImageSet", "ImageSet", "SegmentationSet", "SegmentationData"]


class BaseImageSet:
    """Rows of images: uint8 ``(N, C, H, W)`` tensors plus one list entry per image.

    A subclass is a dataclass naming its per-row fields in ``row_tensors`` (tensors indexed
    along their first dimension) and ``row_lists`` (lists, ``None`` allowed); ``subset`` keeps
    the same rows of every one of them.

    Attributes:
        images: uint8 ``(N, C, H, W)``.
        ids: image names (file stems).
        groups: per-image group (image source, site, view) for non-IID partitions, or ``None``.
        patients: patient per image (splits and partitions never separate a patient), or ``None``.
    """

    images: torch.Tensor
    ids: list[str]
    groups: list[str] | None
    patients: list[str] | None

    row_tensors: ClassVar[tuple[str, ...]] = ("images",)
    row_lists: ClassVar[tuple[str, ...]] = ("ids", "groups", "patients")
    # How error messages name a set of this kind ("an ImageSet", "a set").
    described_as: ClassVar[str] = "a set"

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, idx: Sequence[int] | np.ndarray | torch.Tensor) -> Self:
        """Rows ``idx`` (integer positions or a boolean mask) as a new set of the same kind.

        Args:
            idx: integer positions or a boolean mask of length ``len(self)``.
        """
        index = torch.as_tensor(np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx))
        if index.dtype == torch.bool:
            if index.shape != (len(self),):
                raise DataError(f"boolean mask of shape {tuple(index.shape)} for {self.described_as} of {len(self)} images")
            index = index.nonzero().flatten()
        index = index.to(torch.int64).flatten()
        rows = index.tolist()
        if rows and (min(rows) < -len(self) or max(rows) >= len(self)):
            raise DataError(f"subset index out of range for {self.described_as} of {len(self)} images")
        fields = {}
        for name in self.row_tensors:
            value = getattr(self, name)
            fields[name] = None if value is None else value[index.to(value.device)]
        for name in self.row_lists:
            value = getattr(self, name)
            fields[name] = None if value is None else [value[i] for i in rows]
        return type(self)(**fields)

    def _check_row_lists(self) -> None:
        n = len(self)
        for name in self.row_lists:
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise DataError(f"{type(self).__name__}.{name} has {len(value)} entries for {n} images")


@dataclass
class ImageSet(BaseImageSet):
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

    row_tensors: ClassVar[tuple[str, ...]] = ("images", "labels", "grades")
    row_lists: ClassVar[tuple[str, ...]] = ("ids", "patients", "groups")
    described_as: ClassVar[str] = "an ImageSet"

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DataError(f"ImageSet.images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (n,):
            raise DataError(f"ImageSet.labels must be int64 ({n},), got {self.labels.dtype} {tuple(self.labels.shape)}")
        if self.grades is not None and (self.grades.dtype != torch.int64 or self.grades.shape != (n,)):
            raise DataError(f"ImageSet.grades must be int64 ({n},), got {self.grades.dtype} {tuple(self.grades.shape)}")
        self._check_row_lists()

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


@dataclass
class SegmentationSet(BaseImageSet):
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

    row_tensors: ClassVar[tuple[str, ...]] = ("images", "masks")

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        for name in ("images", "masks"):
            t = getattr(self, name)
            if t.dtype != torch.uint8 or t.ndim != 4 or t.shape[0] != n or t.shape[-2:] != self.images.shape[-2:]:
                raise DataError(f"SegmentationSet.{name} must be uint8 ({n}, C, H, W) matching the images, got {t.dtype} {tuple(t.shape)}")
        self._check_row_lists()

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
        spacing: ``{image id: (row mm, column mm)}`` at the stored image size, for HD95 in
            millimetres; ``None`` when any image's spacing is unknown (PNG/JPEG files).
    """

    train: SegmentationSet
    val: SegmentationSet
    test: SegmentationSet
    source: str
    synthetic: bool
    info: dict = field(default_factory=dict)
    spacing: dict[str, tuple[float, float]] | None = None

    def summary(self) -> dict:
        """JSON-able description: source, per split ``n``, mean lung fraction and group counts."""
        splits = {}
        for name in ("train", "val", "test"):
            s = getattr(self, name)
            splits[name] = {"n": len(s), "n_patients": len(set(s.patients)) if s.patients else None,
                            "lung_fraction": round(s.lung_fraction(), 4), "groups": dict(sorted(Counter(s.groups).items()))}
        return {"source": self.source, "synthetic": self.synthetic, **self.info, "splits": splits}
