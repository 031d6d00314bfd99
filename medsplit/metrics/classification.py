"""Classification metrics (scikit-learn): accuracy, per-class and macro AUC with ROC curves,
quadratic kappa, sensitivity/specificity and the confusion matrix, from logits or probabilities.
See :mod:`medsplit.metrics` for the accumulate-then-aggregate pattern both metrics share."""

from __future__ import annotations

import warnings
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

from medsplit.metrics.summary import finite_or_none

__all__ = ["ClassificationMetrics"]

_INPUT_KINDS = ("logits", "probabilities")


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
        result["kappa"] = finite_or_none(kappa)

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
