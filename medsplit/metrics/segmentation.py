"""Segmentation metrics (MONAI): per-image Dice, Jaccard and HD95 with the HD95 miss rate.
See :mod:`medsplit.metrics` for the accumulate-then-aggregate pattern both metrics share."""

from __future__ import annotations

import warnings
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
    when ``spacing`` is given. ``std`` is the population standard deviation (ddof=0).

    Args:
        threshold: probability above which a pixel is foreground, in (0, 1).
        spacing: isotropic pixel spacing passed to MONAI's Hausdorff distance; ``None`` = 1.

    Example::

        metric = SegmentationMetrics()
        for batch in loader:
            metric.update(model(batch["image"]), batch["mask"], ids=batch["id"])
        result = metric.aggregate()   # {"dice": {"mean": ..., "std": ...}, ...}
    """

    def __init__(self, threshold: float = 0.5, spacing: float | None = None) -> None:
        if not 0.0 < float(threshold) < 1.0:
            raise ValueError(f"threshold must lie strictly between 0 and 1, got {threshold!r}.")
        if spacing is not None and not float(spacing) > 0:
            raise ValueError(f"spacing must be positive or None, got {spacing!r}.")
        self.threshold = float(threshold)
        self.spacing = None if spacing is None else float(spacing)
        self._rows: list[dict[str, Any]] = []
        self._hd95_missing: list[str | None] = []  # per image: which side was empty, or None

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._rows.clear()
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
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # MONAI warns about empty masks; handled above
                hd95[both] = compute_hausdorff_distance(
                    pred[both], true[both], include_background=True, percentile=95, spacing=self.spacing
                )[:, 0].float()

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
            "spacing": self.spacing,
            "per_image": [dict(r) for r in self._rows],
        }
