"""Classification test figures: ROC curves and the confusion matrix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from medsplit.report.figures.axes import is_finite, mark_empty

__all__ = ["confusion_figure", "roc_figure"]


def roc_figure(roc: Mapping[str, Any], auc: Any = None) -> Figure:
    """ROC curve(s) from :meth:`ClassificationMetrics.aggregate`'s ``roc`` entry.

    ``roc`` is either binary (``{"fpr": [...], "tpr": [...]}``) or per class
    (``{name: {"fpr", "tpr", "auc"}}``); ``auc`` is the headline (macro) AUC or ``None``.

    Args:
        roc: the curve(s), as above.
        auc: the headline AUC, or ``None`` when undefined.
    """
    fig = Figure(figsize=(5.0, 4.6), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="#999", linewidth=1, label="chance")
    auc_text = f"{float(auc):.3f}" if is_finite(auc) else "undefined"
    if "fpr" in roc and "tpr" in roc:
        ax.plot(roc["fpr"], roc["tpr"], linewidth=2, color="#1f5fa8", label=f"AUC = {auc_text}")
        title = "ROC curve"
    else:
        for name, curve in roc.items():
            label = f"{name} (AUC {curve['auc']:.3f})" if is_finite(curve.get("auc")) else str(name)
            ax.plot(curve["fpr"], curve["tpr"], linewidth=1.6, label=label)
        title = f"One-vs-rest ROC curves (macro AUC {auc_text})"
        if not roc:
            mark_empty(ax, "ROC undefined")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def confusion_figure(confusion: Sequence[Sequence[int]], class_names: Sequence[str] | None = None) -> Figure:
    """Confusion matrix (rows = true class, columns = predicted).

    Cells show counts and the row percentage; the colour is the row-normalised fraction so a
    rare class's errors are as visible as a common class's.

    Args:
        confusion: ``(K, K)`` counts, rows = true class.
        class_names: one name per class; indices when ``None``.
    """
    cm = np.asarray(confusion, dtype=np.int64)
    k = cm.shape[0]
    names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(k)]
    totals = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, totals, out=np.zeros(cm.shape, dtype=float), where=totals > 0)
    size = 2.2 + 0.75 * k
    fig = Figure(figsize=(size + 0.8, size), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            colour = "white" if frac[i, j] > 0.55 else "#1d2433"
            ax.text(j, i, f"{cm[i, j]}\n{100 * frac[i, j]:.0f}%", ha="center", va="center", color=colour, fontsize=9)
    ax.set_xticks(range(k), names, rotation=30 if max(map(len, names)) > 6 else 0, ha="right" if max(map(len, names)) > 6 else "center")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (colour: fraction of the true class)", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return fig
