"""Figures for medsplit reports, one module per figure family.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot, so no
global figure state is touched, nothing needs a display, and nothing leaks when a sweep
draws hundreds of figures; the figure is rasterised with the Agg renderer when a
:class:`~medsplit.report.html.Report` embeds it (``report.figure(fig)``) or when you call
``fig.savefig(...)`` yourself.

Inputs are plain Python / NumPy values as they appear in run records (see
:mod:`medsplit.report.run_report`), so the functions also work on records read back from
JSON.

- :mod:`~medsplit.report.figures.curves`: learning curves, history key labels.
- :mod:`~medsplit.report.figures.classification`: ROC curves, confusion matrix.
- :mod:`~medsplit.report.figures.traffic`: bytes per epoch, bytes and link time per step.
- :mod:`~medsplit.report.figures.images`: segmentation overlays, attack reconstructions.
- :mod:`~medsplit.report.figures.tradeoffs`: line plots over a swept value, Pareto scatters.
- :mod:`~medsplit.report.figures.axes`: helpers they share.

The names below are re-exported so that reports write ``figures.roc_figure(...)``.
"""

from medsplit.report.figures.classification import confusion_figure, roc_figure
from medsplit.report.figures.curves import METRIC_LABELS, learning_curves, metric_label
from medsplit.report.figures.images import overlay_grid, reconstruction_grid
from medsplit.report.figures.tradeoffs import line_plot, scatter_frontier
from medsplit.report.figures.traffic import (
    LINK_SPEEDS,
    bytes_figure,
    step_traffic_figure,
)

__all__ = [
    "LINK_SPEEDS",
    "METRIC_LABELS",
    "bytes_figure",
    "confusion_figure",
    "learning_curves",
    "line_plot",
    "metric_label",
    "overlay_grid",
    "reconstruction_grid",
    "roc_figure",
    "scatter_frontier",
    "step_traffic_figure",
]
