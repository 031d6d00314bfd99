"""What a retinopathy task is: the targets defined on the 0-4 DR grade, and the train/val/test
container every retinopathy source becomes."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from medsplit.data.errors import DataError
from medsplit.data.sets import ImageSet

__all__ = ["NUM_GRADES", "GRADE_NAMES", "Target", "TARGETS", "RetinopathyData", "check_classes"]

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



def check_classes(data: RetinopathyData) -> None:
    """Every split holds every class of the target (else a DataError saying what to change) and
    no patient is in two splits.

    Args:
        data: the split set to check.
    """
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
