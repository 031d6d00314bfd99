"""The HTML report for one training run.

:func:`write_run_report` turns a *run record* (a JSON-able dict a training run writes
beside its checkpoint) into one self-contained HTML page. Every key is optional; a
section is drawn only from what is present, so the same function serves a finished run,
a run that crashed after two epochs, and a centralised baseline without traffic.

Record schema (all keys optional)::

    {
      "title": str, "task": "retinopathy" | "lungs", "created": iso str, "medsplit_version": str,
      "protocol": "sequential" | "splitfed" | "centralised" | "fedavg", "cut": int | None,
      "clients": int, "device": str, "wall_time_s": float,
      "config": {...resolved nested config...}, "config_yaml": str,
      "data": {"source": str, "synthetic": bool, "num_classes": int, "class_names": [...],
               "splits": {"train": {"n", "patients", "class_counts"}, "val": {...}, "test": {...}},
               "clients": [{"name": "client0", "n": int, "class_counts": [...]}]},
      "history": [{"epoch", "client", "train_loss", "val_loss", "val_auc", "val_accuracy",
                   "val_dice", "val_jaccard", "seconds"}, ...],
      "selected_epoch": int (1-based; the epoch whose model was tested),
      "test": ClassificationMetrics.aggregate() or SegmentationMetrics.aggregate(),
      "test_intervals": medsplit.uncertainty.test_intervals(...) (95% patient-bootstrap CIs),
      "bytes": [{"epoch", "link": "client0->server", "kind": "activation" | "gradient" | "label" | "weights",
                 "sender", "receiver", "bytes": int}, ...],
      "examples": {"images": (N, H, W), "pred": bool (N, H, W), "true": bool (N, H, W), "titles": [...]},
      "artifacts": {"run_dir": str, "metrics_copy": str, "files": {"model.safetensors": {"what", "MB"}, ...}},
    }

``examples`` holds NumPy arrays (segmentation only) and is not part of the JSON record.

The sections live in their own modules, in the order the page shows them:
:mod:`~medsplit.report.run_summary` (Summary), :mod:`~medsplit.report.run_facts` (Data,
Resolved configuration, Artifacts), :mod:`~medsplit.report.run_metrics` (Learning curves,
Test metrics), :mod:`~medsplit.report.run_communication` (Communication, Transport).
"""

from __future__ import annotations

from pathlib import Path

from medsplit.report.html import Report
from medsplit.report.run_communication import communication_section, transport_section
from medsplit.report.run_dropouts import dropouts_section
from medsplit.report.run_facts import artifacts_section, config_section, data_section
from medsplit.report.run_metrics import curves_section, evaluation_section
from medsplit.report.run_summary import summary_section

__all__ = ["build_run_report", "write_run_report"]

SYNTHETIC_NOTICE = (
    "Synthetic data: these images were generated, not acquired. The numbers below test the "
    "software; they say nothing about real patients."
)


def build_run_report(record: dict) -> Report:
    """Build (but do not write) the :class:`Report` for one run record.

    Args:
        record: the run record (schema in this module's docstring; every key optional).
    """
    task = record.get("task")
    protocol = record.get("protocol")
    default_title = " \u2013 ".join(str(x) for x in (task, protocol) if x) or "medsplit run"
    if record.get("cut") is not None:
        default_title += f", cut {record['cut']}"
    subtitle = " \u00b7 ".join(
        str(x) for x in (record.get("created"), record.get("device")) if x
    )
    report = Report(str(record.get("title") or default_title), subtitle=subtitle)
    data = record.get("data") or {}
    if data.get("synthetic"):
        report.banner(SYNTHETIC_NOTICE, level="warning")

    summary_section(report, record)
    if data:
        data_section(report, data)
    if record.get("history"):
        curves_section(report, list(record["history"]), record.get("selected_epoch"), record.get("test"))
    if "dropouts" in record:  # split.min_hospitals let hospitals drop out
        dropouts_section(report, record)
    test = record.get("test")
    if isinstance(test, dict) and test:
        evaluation_section(report, record)
    if record.get("bytes"):
        communication_section(report, list(record["bytes"]), record)
    if record.get("transport"):
        transport_section(report, record["transport"])
    if record.get("config_yaml") or record.get("config"):
        config_section(report, record)
    if record.get("artifacts"):
        artifacts_section(report, dict(record["artifacts"]))
    return report


def write_run_report(record: dict, out_path: Path) -> Path:
    """Write the self-contained HTML report of one run to ``out_path`` and return the path.

    Args:
        record: the run record (see :func:`build_run_report`).
        out_path: where the HTML file goes; missing parent folders are created.
    """
    return build_run_report(record).write(Path(out_path))
