"""Evaluation metrics for the two medsplit tasks: classification and segmentation.

Both classes follow MONAI's *accumulate, then aggregate* pattern: call :meth:`update`
once per batch (cheap: it only stores detached CPU copies or per-image scores), then
:meth:`aggregate` once at the end of an evaluation pass, and :meth:`reset` before the
next pass. Everything :meth:`aggregate` returns is JSON-able (plain ``int``, ``float``,
``str``, ``None``, lists and dicts; no NaN or infinity), so it can be written straight to
``metrics.json`` and fed to :mod:`medsplit.report`.

The numbers themselves come from scikit-learn (classification) and MONAI
(segmentation); these modules only fix the conventions around them: where softmax is
applied, what happens when a class or a mask is empty, and how undefined values are
reported.

* :mod:`medsplit.metrics.classification`: :class:`ClassificationMetrics` (accuracy, AUC, kappa, ...).
* :mod:`medsplit.metrics.segmentation`: :class:`SegmentationMetrics` (Dice, Jaccard, HD95).
* :mod:`medsplit.metrics.summary`: the JSON-safe summaries both share.
"""

from medsplit.metrics.classification import ClassificationMetrics
from medsplit.metrics.segmentation import SegmentationMetrics

__all__ = ["ClassificationMetrics", "SegmentationMetrics"]
