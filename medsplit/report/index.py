"""``reports/index.html``: one page linking every report, with its headline numbers.

Every report is an ``.html`` file with a JSON record of the same stem beside it (runs:
``reports/<run>.json``, a copy of the run's ``metrics.json``; sweeps:
``reports/sweep-<axis>-<task>.json``). The index reads only those JSON files, so it is
cheap to rebuild after every run::

    python -m medsplit.report.index [reports_dir]

Reports are grouped by kind: ``runs``, ``sweeps``, ``attacks`` and ``other``. A record
says its kind with a top-level ``"kind"`` key (``"run"``, ``"sweep"``, ``"attack"``);
records without one are classified by file name and content. Any record may carry a
``"headline"`` mapping of a few scalars, which the index shows as they are (that is how
sweeps and attack reports choose their headline numbers).
"""

from __future__ import annotations

import json
import math
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from markupsafe import escape

from medsplit.report.html import Report, format_value
from medsplit.tasks import task_of_record
from medsplit.train.console import format_duration
from medsplit.uncertainty import format_interval

__all__ = ["write_index", "run_headline", "run_columns", "classify", "KINDS", "INDEX_NAME"]

INDEX_NAME = "index.html"
#: Groups on the page, in order, with the heading each gets.
KINDS = {"runs": "Training runs", "sweeps": "Sweeps", "attacks": "Attacks and defences", "other": "Other reports"}
_MAX_GENERIC = 6  # scalars shown for a record that names no headline


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _mean_of(value: Any) -> float | None:
    """A metric that is either a number or a ``{"mean": ...}`` summary (segmentation metrics)."""
    return _number(value.get("mean")) if isinstance(value, dict) else _number(value)


def run_headline(record: dict) -> dict[str, float | None]:
    """The test metrics a run is judged by, most important first.

    Classification (``test.auc``): ``AUC`` then ``accuracy``; segmentation
    (``test.dice.mean``): ``Dice`` then ``Jaccard``. Values are ``None`` where a metric is
    undefined (e.g. AUC on a test split holding one class).

    Args:
        record: a run's ``metrics.json`` (or the report JSON copied from it).
    """
    test = record.get("test") or {}
    return {label: _mean_of(test.get(key)) for label, key in task_of_record(record).index_columns}


def classify(stem: str, record: dict | None) -> str:
    """Which group of the index a report belongs to (a key of :data:`KINDS`)."""
    kind = str((record or {}).get("kind", ""))
    if f"{kind}s" in KINDS:
        return f"{kind}s"
    name = stem.lower()
    if name.startswith("sweep"):
        return "sweeps"
    if "attack" in name or "defence" in name or "defense" in name:
        return "attacks"
    if record and "test" in record and "protocol" in record:
        return "runs"
    return "other"


def run_columns(record: dict) -> dict[str, Any]:
    """What a run was and what it scored, as the index shows it: data, image size, epochs,
    protocol, cut, clients, the selected epoch, the headline test metrics with the first one's
    95% interval, the device and the wall time (``3 min 15 s``)."""
    data = record.get("data") or {}
    config = record.get("config") or {}
    data_config, train_config = config.get("data") or {}, config.get("train") or {}
    source = data.get("source") or data_config.get("source")
    row: dict[str, Any] = {
        "task": record.get("task"),
        "data": ("SYNTHETIC" if not source or "synthetic" in str(source) else f"SYNTHETIC ({source})") if data.get("synthetic") else source,
        "image size": f"{data_config['img_size']} px" if data_config.get("img_size") else None,
        "epochs": train_config.get("epochs"),
        "protocol": record.get("protocol"), "cut": record.get("cut"), "clients": record.get("clients"),
        "selected epoch": record.get("selected_epoch"),
    }
    headline = run_headline(record)
    row.update(headline)
    name = next(iter(headline))  # AUC or Dice: its 95% patient-bootstrap interval, when the run has one
    row[f"{name} 95% CI"] = format_interval((record.get("test_intervals") or {}).get(name.lower())) \
        if record.get("test_intervals") else None
    wall = _number(record.get("wall_time_s"))
    row.update({"device": record.get("device"), "wall time": format_duration(wall) if wall is not None else None})
    return row


def _row(html: Path, record: dict | None, kind: str) -> dict[str, Any]:
    """Columns shown for one report (the link is added when rendering)."""
    row: dict[str, Any] = {}
    if record is None:
        row["note"] = "no JSON record beside this report"
    elif kind == "runs":
        row.update(run_columns(record))
    elif isinstance(record.get("headline"), dict):
        row.update({k: v for k, v in record["headline"].items() if not isinstance(v, (dict, list))})
    else:  # an unknown record: show its first few scalars rather than nothing
        scalars = [(k, v) for k, v in record.items() if isinstance(v, (int, float, str)) and len(str(v)) <= 40]
        row.update(dict(scalars[:_MAX_GENERIC]))
    created = (record or {}).get("created")
    row["created"] = created if isinstance(created, str) else datetime.fromtimestamp(html.stat().st_mtime).isoformat(timespec="seconds")
    return row


def _link_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    """An HTML table (the template's table style) whose first column links each report.

    Built here rather than with ``Report.table`` because cells there are plain text; every
    value is escaped, so a file name cannot inject markup.
    """
    columns: list[str] = []
    for _, row in rows:
        columns.extend(c for c in row if c not in columns)
    head = "".join(f"<th>{escape(c)}</th>" for c in ["report", *columns])
    body = []
    for href, row in rows:
        cells = [f'<td class="long"><a href="{escape(href)}">{escape(href)}</a></td>']
        for c in columns:
            value = row.get(c)
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            text = format_value(value, '{:.4f}')
            long = max((len(w) for w in text.split()), default=0) > 22  # may wrap anywhere (see html._cell)
            attr = ' class="num"' if numeric else (' class="long"' if long else "")
            cells.append(f"<td{attr}>{escape(format_value(value, '{:.4f}'))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _read_record(html: Path) -> dict | None:
    path = html.with_suffix(".json")
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # a half-written JSON must not break the index of everything else
    return record if isinstance(record, dict) else None


def write_index(reports_dir: Path) -> Path:
    """Write ``reports_dir/index.html`` linking every other ``*.html`` report there.

    Args:
        reports_dir: the folder holding reports and their JSON records (``reports/``).

    Returns:
        The path of the index page.
    """
    reports_dir = Path(reports_dir)
    if not reports_dir.is_dir():
        raise FileNotFoundError(f"reports folder {reports_dir} does not exist; run a training or sweep first")
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {k: [] for k in KINDS}
    synthetic = 0
    for html in sorted(reports_dir.glob("*.html")):
        if html.name == INDEX_NAME:
            continue
        record = _read_record(html)
        kind = classify(html.stem, record)
        synthetic += bool(kind == "runs" and record and (record.get("data") or {}).get("synthetic"))
        groups[kind].append((html.name, _row(html, record, kind)))

    report = Report("medsplit reports", subtitle=f"{reports_dir.resolve()}")
    total = sum(len(v) for v in groups.values())
    report.cards({KINDS[k]: str(len(v)) for k, v in groups.items() if v} or {"reports": "0"})
    if synthetic:
        report.banner(f"{synthetic} run(s) below used synthetic data (marked SYNTHETIC): their numbers say nothing about patients.")
    if not total:
        report.text("No reports yet. Train a model (make retinopathy) or run a sweep (make sweep-cut), then rebuild this page.")
    for kind, rows in groups.items():
        if not rows:
            continue
        report.section(KINDS[kind])
        if kind != "runs":
            report.html(_link_table(rows))
            continue
        # one table per task: retinopathy and lung runs have different metric columns
        tasks = list(dict.fromkeys(str(row.get("task")) for _, row in rows))
        for task in tasks:
            if len(tasks) > 1:
                report.text(f"{task}:")
            report.html(_link_table([(href, row) for href, row in rows if str(row.get("task")) == task]))
    return report.write(reports_dir / INDEX_NAME)


def main(argv: list[str] | None = None) -> int:
    """``python -m medsplit.report.index [reports_dir]`` (default ``reports``)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        print("usage: python -m medsplit.report.index [reports_dir]", file=sys.stderr)
        return 2
    try:
        path = write_index(Path(argv[0] if argv else "reports"))
    except FileNotFoundError as e:
        print(f"medsplit index: error: {e}", file=sys.stderr)
        return 2
    print(f"index: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
