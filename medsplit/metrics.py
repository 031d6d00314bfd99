"""Evaluation metrics for the two medsplit tasks.

Both classes follow MONAI's *accumulate, then aggregate* pattern: call :meth:`update`
once per batch (cheap: it only stores detached CPU copies or per-image scores), then
:meth:`aggregate` once at the end of an evaluation pass, and :meth:`reset` before the
next pass. Everything :meth:`aggregate` returns is JSON-able (plain ``int``, ``float``,
``str``, ``None``, lists and dicts; no NaN or infinity), so it can be written straight to
``metrics.json`` and fed to :mod:`medsplit.report`.

The numbers themselves come from scikit-learn (classification) and MONAI
(segmentation); this module only fixes the conventions around them: where softmax is
applied, what happens when a class or a mask is empty, and how undefined values are
reported.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    roc_auc_score,
    roc_curve,
)

__all__ = ["ClassificationMetrics", "SegmentationMetrics"]

_INPUT_KINDS = ("logits", "probabilities")


def _finite_or_none(value: float | None) -> float | None:
    """``float(value)`` when finite, else ``None`` (JSON has no NaN or infinity)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _summary(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean, std (population, ddof=0), median, min, max over the finite values.

    ``n`` counts the values used; ``n_excluded`` counts the ``None``/non-finite ones left
    out, so a mean over fewer images than expected is visible in the output.
    """
    finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    out: dict[str, Any] = {"n": int(finite.size), "n_excluded": int(len(values) - finite.size)}
    if finite.size:
        out.update(
            mean=float(finite.mean()),
            std=float(finite.std()),
            median=float(np.median(finite)),
            min=float(finite.min()),
            max=float(finite.max()),
        )
    else:
        out.update(mean=None, std=None, median=None, min=None, max=None)
    return out


class ClassificationMetrics:
    """Accumulates per-batch logits (or probabilities) and labels; ``aggregate()`` returns a dict.

    Models in medsplit return raw scores; softmax is applied here, exactly once, in float64.
    For a binary task a single-logit output of shape ``(B,)`` or ``(B, 1)`` is also accepted
    and turned into class-1 probabilities with a sigmoid.

    Conventions of :meth:`aggregate`:

    - ``auc``: binary, ROC AUC of the class-1 probability; multi-class, the macro average of
      the one-vs-rest ROC AUCs (as MedMNIST reports, equal to scikit-learn's
      ``roc_auc_score(multi_class="ovr", average="macro")``). If a class has no positive or
      no negative example among the labels, its AUC is undefined: ``auc`` is ``None`` and
      ``auc_note`` says why (``auc_per_class`` still lists the classes that are defined).
    - ``kappa``: Cohen's kappa with quadratic weights (for two classes this equals the
      unweighted kappa). ``None`` when undefined (e.g. a single class in labels and predictions).
    - ``sensitivity`` / ``specificity``: binary, of the positive class (1) with the argmax
      decision; multi-class, macro averages over classes of per-class recall and per-class
      specificity (TN / (TN + FP)); classes where the ratio is 0/0 are left out of the mean.
    - ``confusion``: ``confusion[true][predicted]`` counts.
    - ``per_sample``: ``{"ids", "labels", "probabilities"}`` (probabilities rounded to 6
      decimals), so :mod:`medsplit.uncertainty` can bootstrap over patients.
    - ``roc``: binary, ``{"fpr": [...], "tpr": [...]}``; multi-class,
      ``{class_name: {"fpr", "tpr", "auc"}}`` for the classes whose curve is defined.

    Args:
        num_classes: number of classes, at least 2.
        class_names: display names, one per class; defaults to ``["0", "1", ...]``.
        inputs: ``"logits"`` (default; softmax applied here) or ``"probabilities"`` (rows
            already sum to one, used as they are).

    Example::

        metric = ClassificationMetrics(num_classes=2, class_names=["non-referable", "referable"])
        for images, labels in loader:
            metric.update(model(images), labels)
        result = metric.aggregate()   # {"accuracy": ..., "auc": ..., ...}
        metric.reset()
    """

    def __init__(self, num_classes: int, class_names: list[str] | None = None, inputs: str = "logits") -> None:
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}.")
        if class_names is None:
            class_names = [str(i) for i in range(num_classes)]
        class_names = [str(name) for name in class_names]
        if len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} entries but num_classes is {num_classes}.")
        if len(set(class_names)) != num_classes:
            raise ValueError(f"class_names must be unique, got {class_names}.")
        if inputs not in _INPUT_KINDS:
            raise ValueError(f"inputs must be one of {_INPUT_KINDS}, got {inputs!r}.")
        self.num_classes = num_classes
        self.class_names = class_names
        self.inputs = inputs
        self._probs: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self._ids: list[str] = []

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._probs.clear()
        self._labels.clear()
        self._ids.clear()

    def __len__(self) -> int:
        return sum(len(t) for t in self._labels)

    def _to_probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.detach().to("cpu", torch.float64)
        if scores.ndim == 1 or (scores.ndim == 2 and scores.shape[1] == 1 and self.num_classes == 2):
            if self.num_classes != 2:
                raise ValueError(f"a single score per sample only makes sense for 2 classes, not {self.num_classes}.")
            p1 = scores.reshape(-1)
            if self.inputs == "logits":
                p1 = torch.sigmoid(p1)
            return torch.stack([1.0 - p1, p1], dim=1)
        if scores.ndim != 2 or scores.shape[1] != self.num_classes:
            raise ValueError(
                f"expected scores of shape (B, {self.num_classes}), got {tuple(scores.shape)}."
            )
        if self.inputs == "logits":
            return torch.softmax(scores, dim=1)
        return scores

    def update(self, logits: torch.Tensor, labels: torch.Tensor, ids: list[str] | None = None) -> None:
        """Add one batch.

        Args:
            logits: raw class scores ``(B, C)`` (or probabilities when ``inputs="probabilities"``).
            labels: integer class indices ``(B,)`` or ``(B, 1)``, or one-hot ``(B, C)``.
            ids: one identifier per image; defaults to the running index. Kept in
                ``per_sample`` so intervals can resample patients (:mod:`medsplit.uncertainty`).
        """
        probs = self._to_probabilities(torch.as_tensor(logits))
        labels = torch.as_tensor(labels).detach().cpu()
        if labels.ndim == 2 and labels.shape[1] == self.num_classes:  # one-hot
            labels = labels.argmax(dim=1)
        labels = labels.reshape(-1)
        if labels.is_floating_point():
            if not torch.equal(labels, labels.round()):
                raise ValueError("labels must be integer class indices, got non-integer values.")
        labels = labels.long()
        if labels.shape[0] != probs.shape[0]:
            raise ValueError(f"{probs.shape[0]} score rows but {labels.shape[0]} labels.")
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes - 1}], got {labels.unique().tolist()}.")
        if ids is None:
            ids = [str(len(self._ids) + i) for i in range(labels.shape[0])]
        if len(ids) != labels.shape[0]:
            raise ValueError(f"{len(ids)} ids for a batch of {labels.shape[0]} labels.")
        self._probs.append(probs)
        self._labels.append(labels)
        self._ids.extend(str(i) for i in ids)

    def aggregate(self) -> dict[str, Any]:
        """Compute all metrics over everything accumulated since the last :meth:`reset`."""
        if not self._labels or len(self) == 0:
            raise RuntimeError("ClassificationMetrics.aggregate() called before any update().")
        probs = torch.cat(self._probs).numpy()
        y = torch.cat(self._labels).numpy()
        pred = probs.argmax(axis=1)
        classes = list(range(self.num_classes))
        cm = confusion_matrix(y, pred, labels=classes)

        # Per-class one-vs-rest rates straight from the confusion matrix.
        tp = np.diag(cm).astype(np.float64)
        fn = cm.sum(axis=1) - tp
        fp = cm.sum(axis=0) - tp
        tn = cm.sum() - tp - fn - fp
        recall = [float(t / (t + f)) if t + f > 0 else None for t, f in zip(tp, fn)]
        spec = [float(t / (t + f)) if t + f > 0 else None for t, f in zip(tn, fp)]

        result: dict[str, Any] = {
            "n": int(y.size),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "accuracy": float(accuracy_score(y, pred)),
        }
        result.update(self._auc_and_roc(y, probs))

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # 0/0 when kappa is undefined
            kappa = cohen_kappa_score(y, pred, labels=classes, weights="quadratic")
        result["kappa"] = _finite_or_none(kappa)

        if self.num_classes == 2:
            result["sensitivity"], result["specificity"] = recall[1], spec[1]
        else:
            defined_r = [r for r in recall if r is not None]
            defined_s = [s for s in spec if s is not None]
            result["sensitivity"] = float(np.mean(defined_r)) if defined_r else None
            result["specificity"] = float(np.mean(defined_s)) if defined_s else None
        result["per_class"] = [
            {
                "class": name,
                "support": int(tp[i] + fn[i]),
                "predicted": int(tp[i] + fp[i]),
                "sensitivity": recall[i],
                "specificity": spec[i],
                "auc": result["auc_per_class"][i],
            }
            for i, name in enumerate(self.class_names)
        ]
        result["confusion"] = cm.astype(int).tolist()
        # What a patient-level bootstrap needs (medsplit.uncertainty); 6 decimals keep JSON small.
        result["per_sample"] = {"ids": list(self._ids), "labels": y.astype(int).tolist(),
                                "probabilities": np.round(probs, 6).tolist()}
        return result

    def _auc_and_roc(self, y: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
        """ROC AUC and ROC curves; undefined classes become ``None`` with a reason, never a crash."""
        out: dict[str, Any] = {"auc": None, "auc_note": None}
        per_class: list[float | None] = []
        curves: dict[str, dict[str, Any]] = {}
        missing: list[str] = []
        for c, name in enumerate(self.class_names):
            positives = int((y == c).sum())
            if positives == 0 or positives == y.size:
                per_class.append(None)
                missing.append(name if positives == 0 else f"{name} (only class present)")
                continue
            target = (y == c).astype(int)
            per_class.append(float(roc_auc_score(target, probs[:, c])))
            fpr, tpr, _ = roc_curve(target, probs[:, c])
            curves[name] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": per_class[-1]}
        out["auc_per_class"] = per_class

        if self.num_classes == 2:
            # Binary AUC is defined by the class-1 score; both classes must be present.
            out["auc"] = per_class[1]
            positive = self.class_names[1]
            out["roc"] = {"fpr": curves[positive]["fpr"], "tpr": curves[positive]["tpr"]} if positive in curves else {}
        else:
            out["roc"] = curves
            if not missing:
                out["auc"] = float(np.mean(per_class))
        if out["auc"] is None:
            out["auc_note"] = (
                "AUC undefined: every class needs positive and negative examples in the labels; "
                f"missing for: {', '.join(missing)}."
            )
        return out


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
                    "hd95": _finite_or_none(float(hd95[i])),
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
            "dice": _summary([r["dice"] for r in self._rows]),
            "jaccard": _summary([r["jaccard"] for r in self._rows]),
            "hd95": {**_summary([r["hd95"] for r in self._rows]), **self._hd95_misses()},
            "threshold": self.threshold,
            "spacing": self.spacing,
            "per_image": [dict(r) for r in self._rows],
        }
