"""Self-contained HTML reports: one file per run, sweep or attack, viewable offline.

- :class:`~medsplit.report.html.Report`: the generic page builder every report uses.
- :mod:`~medsplit.report.figures`: matplotlib figures, one module per family
  (learning curves, ROC, traffic, overlays, trade-offs ...).
- :func:`~medsplit.report.run_report.write_run_report`: the report of one training run (its
  sections in ``run_summary``, ``run_facts``, ``run_metrics``, ``run_communication``).
"""

from medsplit.report.html import Report, figure_to_data_uri
from medsplit.report.run_report import build_run_report, write_run_report

__all__ = ["Report", "figure_to_data_uri", "build_run_report", "write_run_report"]
