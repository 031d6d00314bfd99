"""Segmentation metrics (MONAI): per-image Dice, Jaccard and HD95 with the HD95 miss rate.
See :mod:`medsplit.metrics` for the accumulate-then-aggregate pattern both metrics share."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from medsplit.metrics.summary import finite_or_none, summarise

__all__ = ["SegmentationMetrics"]


class SegmentationMetrics:
    """Per-image Dice, Jaccard (IoU) and HD95 (MONAI) on sigmoid probabilities thresholded at 0.5.

    A pixel is foreground when ``sigmoid(logit) >= threshold`` (MONAI's ``AsDiscrete``
    convention). Scores are computed per image and kept with the image id, so a report can
    show the best and worst cases.

    Conventions for empty masks (the lung task rarely has them, synthetic data may):

    - prediction and ground truth both empty: Dice = Jaccard = 1.0 (perfect agreement) and
      HD95 = 0.0;
    - exactly one of them empty: Dice = Jaccard = 0.0 and HD95 is undefined (there is no
      surface to measure from). It is stored as ``None`` in ``per_image`` and left out of the
      HD95 mean; ``hd95["n_excluded"]`` counts such images. Because the HD95 mean is then over
      the other images only, the **miss rate** is reported beside it: ``hd95["miss_rate"]``
      (excluded / all images), with ``hd95["prediction_empty"]`` (the model found no lung where
      there is one) and ``hd95["ground_truth_empty"]`` (a false alarm on an empty mask).

    HD95 is the 95th percentile symmetric Hausdorff distance in pixels, or in physical units
    (millimetres for lung data) when a spacing is given: one for every image (``spacing``) or
    one per image (``spacing_by_id``, e.g. read from each NIfTI header and scaled to the
    model's input size). ``aggregate()["spacing"]`` says which: ``None`` (pixels), one number
    (every image had that isotropic spacing) or ``{"min": ..., "max": ...}`` over both axes
    of every image. ``std`` is the population standard deviation (ddof=0).

    Args:
        threshold: probability above which a pixel is foreground, in (0, 1).
        spacing: one pixel spacing for every image, isotropic (a number) or ``(row, column)``;
            ``None`` = 1 (pixels).
        spacing_by_id: ``{image id: (row, column) spacing}``; every scored image must be in it
            (a unit per image, never a mix of pixels and millimetres). Excludes ``spacing``.

    Example::

        metric = SegmentationMetrics()
        for batch in loader:
            metric.update(model(batch["image"]), batch["mask"], ids=batch["id"])
        result = metric.aggregate()   # {"dice": {"mean": ..., "std": ...}, ...}
    """

    def __init__(self, threshold: float = 0.5, spacing: float | Sequence[float] | None = None,
                 spacing_by_id: Mapping[str, Sequence[float]] | None = None) -> None:
        if not 0.0 < float(threshold) < 1.0:
            raise ValueError(f"threshold must lie strictly between 0 and 1, got {threshold!r}.")
        if spacing is not None and spacing_by_id is not None:
            raise ValueError("pass spacing (one for every image) or spacing_by_id (one per image), not both.")
        self.threshold = float(threshold)
        self.spacing = None if spacing is None else _row_column(spacing, "spacing")
        self.spacing_by_id = None if spacing_by_id is None else {
            str(k): _row_column(v, f"spacing of image {k!r}") for k, v in spacing_by_id.items()}
        self._rows: list[dict[str, Any]] = []
        self._spacings: list[tuple[float, float]] = []  # per scored image, when HD95 is in physical units
        self._hd95_missing: list[str | None] = []  # per image: which side was empty, or None

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._rows.clear()
        self._spacings.clear()
        self._hd95_missing.clear()

    def __len__(self) -> int:
        return len(self._rows)

    @staticmethod
    def _as_bchw(t: torch.Tensor, name: str) -> torch.Tensor:
        t = torch.as_tensor(t).detach().cpu()
        if t.ndim == 3:  # (B, H, W): add the channel
            t = t.unsqueeze(1)
        if t.ndim != 4 or t.shape[1] != 1:
            raise ValueError(f"{name} must have shape (B, 1, H, W) or (B, H, W), got {tuple(t.shape)}.")
        return t

    def update(self, logits: torch.Tensor, masks: torch.Tensor, ids: list[str] | None = None) -> None:
        """Score one batch, image by image.

        Args:
            logits: raw scores ``(B, 1, H, W)``; sigmoid and threshold are applied here.
            masks: ground truth ``(B, 1, H, W)`` with values in {0, 1}.
            ids: one identifier per image; defaults to the running index as a string.
        """
        logits = self._as_bchw(logits, "logits")
        masks = self._as_bchw(masks, "masks")
        if logits.shape != masks.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and masks {tuple(masks.shape)} differ in shape.")
        if masks.numel() and not torch.all((masks == 0) | (masks == 1)):
            raise ValueError("masks must contain only 0 and 1.")
        batch = logits.shape[0]
        if ids is None:
            ids = [str(len(self._rows) + i) for i in range(batch)]
        ids = [str(i) for i in ids]
        if len(ids) != batch:
            raise ValueError(f"{len(ids)} ids for a batch of {batch} images.")

        spacings = self._batch_spacings(ids)

        # Imported here: importing monai takes seconds, and classification does not need it.
        from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou

        pred = (torch.sigmoid(logits.double()) >= self.threshold).double()
        true = masks.double()
        dice = compute_dice(pred, true, include_background=True, ignore_empty=False)[:, 0]
        iou = compute_iou(pred, true, include_background=True, ignore_empty=False)[:, 0]

        pred_any = pred.flatten(1).any(dim=1)
        true_any = true.flatten(1).any(dim=1)
        both = pred_any & true_any
        hd95 = torch.full((batch,), float("nan"))
        hd95[~pred_any & ~true_any] = 0.0
        if both.any():
            measured = both.nonzero().flatten().tolist()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # MONAI warns about empty masks; handled above
                hd95[both] = compute_hausdorff_distance(
                    pred[both], true[both], include_background=True, percentile=95,
                    # one (row, column) pair per measured image; None = unit spacing (pixels)
                    spacing=None if spacings is None else [list(spacings[i]) for i in measured],
                )[:, 0].float()
        if spacings is not None:
            self._spacings.extend(spacings)

        for i in range(batch):
            missing = None
            if bool(pred_any[i]) != bool(true_any[i]):
                missing = "ground_truth_empty" if bool(pred_any[i]) else "prediction_empty"
            self._hd95_missing.append(missing)
            self._rows.append(
                {
                    "id": ids[i],
                    "dice": float(dice[i]),
                    "jaccard": float(iou[i]),
                    "hd95": finite_or_none(float(hd95[i])),
                }
            )

    def _batch_spacings(self, ids: list[str]) -> list[tuple[float, float]] | None:
        """The (row, column) spacing of each image of a batch, or ``None`` when HD95 is in pixels."""
        if self.spacing_by_id is None:
            return None if self.spacing is None else [self.spacing] * len(ids)
        unknown = [i for i in ids if i not in self.spacing_by_id]
        if unknown:
            raise ValueError(f"no pixel spacing for image(s) {unknown[:3]}: spacing_by_id must cover every scored image "
                             "(HD95 would mix millimetres and pixels)")
        return [self.spacing_by_id[i] for i in ids]

    def _spacing_summary(self) -> float | dict[str, float] | None:
        """``None`` (HD95 in pixels), the one isotropic spacing every image had, or its range."""
        if not self._spacings:
            return None
        values = {v for pair in self._spacings for v in pair}
        return values.pop() if len(values) == 1 else {"min": min(values), "max": max(values)}

    def _hd95_misses(self) -> dict[str, Any]:
        """Images HD95 leaves out (exactly one of prediction / ground truth empty), by side."""
        pred_empty = sum(m == "prediction_empty" for m in self._hd95_missing)
        true_empty = sum(m == "ground_truth_empty" for m in self._hd95_missing)
        return {"miss_rate": (pred_empty + true_empty) / len(self._hd95_missing),
                "prediction_empty": pred_empty, "ground_truth_empty": true_empty}

    def aggregate(self) -> dict[str, Any]:
        """Summaries of the per-image scores plus the per-image table itself."""
        if not self._rows:
            raise RuntimeError("SegmentationMetrics.aggregate() called before any update().")
        return {
            "n": len(self._rows),
            "dice": summarise([r["dice"] for r in self._rows]),
            "jaccard": summarise([r["jaccard"] for r in self._rows]),
            "hd95": {**summarise([r["hd95"] for r in self._rows]), **self._hd95_misses()},
            "threshold": self.threshold,
            "spacing": self._spacing_summary(),
            "per_image": [dict(r) for r in self._rows],
        }


def _row_column(spacing: float | Sequence[float], what: str) -> tuple[float, float]:
    """``(row, column)`` spacing of a 2-D image from one number (isotropic) or a pair, checked positive."""
    values = [spacing] if isinstance(spacing, numbers.Real) else list(spacing)
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(isinstance(v, numbers.Real) and float(v) > 0 for v in values):
        raise ValueError(f"{what} must be a positive number or a (row, column) pair of them, got {spacing!r}.")
    return float(values[0]), float(values[1])
