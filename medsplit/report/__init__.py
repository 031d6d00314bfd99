"""Self-contained HTML reports: one file per run, sweep or attack, viewable offline.

- :class:`~medsplit.report.html.Report`: the generic page builder every report uses.
- :mod:`~medsplit.report.figures`: matplotlib figures (learning curves, ROC, overlays ...).
- :func:`~medsplit.report.run_report.write_run_report`: the report of one training run.
"""

from medsplit.report.html import Report, figure_to_data_uri
from medsplit.report.run_report import build_run_report, write_run_report

__all__ = ["Report", "figure_to_data_uri", "build_run_report", "write_run_report"]
