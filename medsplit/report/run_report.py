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
      "test": ClassificationMetrics.aggregate() or SegmentationMetrics.aggregate(),
      "bytes": [{"epoch", "link": "client0->server", "kind": "activation" | "gradient" | "label" | "weights",
                 "bytes": int}, ...],
      "examples": {"images": (N, H, W), "pred": bool (N, H, W), "true": bool (N, H, W), "titles": [...]},
      "artifacts": {"metrics_json": "metrics.json", "tensorboard": "tb/", "checkpoint": "..."},
    }

``examples`` holds NumPy arrays (segmentation only) and is not part of the JSON record.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from medsplit.report import figures
from medsplit.report.html import Report, format_value

__all__ = ["write_run_report", "build_run_report", "HISTORY_METRICS"]

#: History keys drawn as learning curves, in panel order (others starting with train_/val_ follow).
HISTORY_METRICS = (
    "train_loss",
    "val_loss",
    "val_auc",
    "val_accuracy",
    "val_kappa",
    "val_dice",
    "val_jaccard",
)

SYNTHETIC_NOTICE = (
    "Synthetic data: these images were generated, not acquired. The numbers below test the "
    "software; they say nothing about real patients."
)

_MB = 1e6  # reports use decimal megabytes, as network links are rated


def _duration(seconds: Any) -> str:
    """``3725.4`` -> ``"1 h 02 min 05 s"``."""
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return format_value(seconds)
    if s < 60:
        return f"{s:.1f} s"
    h, rem = divmod(int(round(s)), 3600)
    m, sec = divmod(rem, 60)
    return f"{h} h {m:02d} min {sec:02d} s" if h else f"{m} min {sec:02d} s"


def _fmt(value: Any, digits: int = 3) -> str:
    return format_value(value, "{:.%df}" % digits)


def _is_classification(test: dict) -> bool:
    return "confusion" in test or "accuracy" in test


def _is_segmentation(test: dict) -> bool:
    return "dice" in test


def _headline(test: dict) -> dict[str, str]:
    """The few test numbers a reader looks for first."""
    if _is_segmentation(test):
        out = {}
        for key, label in (("dice", "Dice"), ("jaccard", "Jaccard"), ("hd95", "HD95")):
            summary = test.get(key) or {}
            if isinstance(summary, dict) and summary.get("mean") is not None:
                std = summary.get("std")
                out[f"test {label}"] = _fmt(summary["mean"]) + (f" ± {_fmt(std)}" if std is not None else "")
        return out
    if _is_classification(test):
        names = (("auc", "AUC"), ("accuracy", "accuracy"), ("kappa", "quadratic kappa"),
                 ("sensitivity", "sensitivity"), ("specificity", "specificity"))
        return {f"test {label}": _fmt(test.get(key)) for key, label in names if key in test}
    return {}


def _class_columns(counts: Any, class_names: list[str]) -> dict[str, Any]:
    """``[c0, c1, ...]`` -> ``{"name0": c0, ...}``, or one column when names do not fit."""
    if not isinstance(counts, (list, tuple)):
        return {}
    if class_names and len(class_names) == len(counts):
        total = sum(counts) or 1
        return {name: f"{c} ({100 * c / total:.0f}%)" for name, c in zip(class_names, counts)}
    return {"class counts": list(counts)}


def _role(party: str) -> str:
    """``"client3"`` -> ``"client"``: the kind of party at one end of a link."""
    return re.sub(r"\d+$", "", party.strip()) or party


def _direction(link: str) -> str:
    if "->" not in link:
        return link
    src, dst = link.split("->", 1)
    return f"{_role(src)} \u2192 {_role(dst)}"


# -- sections ---------------------------------------------------------------------------


def _summary_section(report: Report, record: dict) -> None:
    report.section("Summary")
    test = record.get("test") or {}
    cards = _headline(test) if isinstance(test, dict) else {}
    if "wall_time_s" in record:
        cards["wall time"] = _duration(record["wall_time_s"])
    if cards:
        report.cards(cards)
    facts = {}
    for key, label in (
        ("task", "task"),
        ("protocol", "protocol"),
        ("cut", "cut"),
        ("clients", "clients"),
        ("device", "device"),
        ("created", "created"),
        ("medsplit_version", "medsplit version"),
    ):
        if key in record:
            facts[label] = record[key]
    if "wall_time_s" in record:
        facts["wall time"] = f"{_duration(record['wall_time_s'])} ({format_value(record['wall_time_s'], '{:.1f}')} s)"
    data = record.get("data") or {}
    if "source" in data:
        facts["data source"] = data["source"]
    if "synthetic" in data:
        facts["synthetic data"] = bool(data["synthetic"])
    if facts:
        report.kv(facts)
    if record.get("protocol") == "centralised":
        report.text("Centralised baseline: the whole model trains in one place; nothing crosses a cut.")


def _data_section(report: Report, data: dict) -> None:
    report.section("Data")
    class_names = [str(c) for c in data.get("class_names") or []]
    facts = {k: data[k] for k in ("source", "synthetic", "num_classes") if k in data}
    if class_names:
        facts["class names"] = ", ".join(class_names)
    if facts:
        report.kv(facts)
    splits = data.get("splits") or {}
    if splits:
        rows = []
        for name, split in splits.items():
            split = split or {}
            row: dict[str, Any] = {"split": name, "images": split.get("n"), "patients": split.get("patients", split.get("n_patients"))}
            row.update(_class_columns(split.get("class_counts"), class_names))
            rows.append(row)
        report.table(rows, caption="Split sizes (patient-level splits: no patient appears in two splits)")
    clients = data.get("clients") or []
    if clients:
        rows = []
        for client in clients:
            row = {"client": client.get("name"), "images": client.get("n")}
            if class_names:
                row.update(_class_columns(client.get("class_counts"), class_names))
            row.update({f"from {g}": n for g, n in (client.get("groups") or {}).items()})
            rows.append(row)
        report.table(rows, caption="Training images held by each client (by class, and by image source or view)")


def _history_metrics(history: list[dict]) -> list[str]:
    present = {k for row in history for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    ordered = [m for m in HISTORY_METRICS if m in present]
    extra = sorted(m for m in present if m.startswith(("train_", "val_")) and m not in ordered)
    return ordered + extra


def _curves_section(report: Report, history: list[dict]) -> None:
    report.section("Learning curves")
    metrics = _history_metrics(history)
    if not metrics:
        report.text("The history holds no metric values.")
        return
    report.figure(figures.learning_curves(history, metrics), caption="One line per client; x = epoch.")
    last: dict[str, dict] = {}
    seconds: dict[str, float] = defaultdict(float)
    for row in history:
        client = str(row.get("client", "all"))
        if client not in last or row.get("epoch", 0) >= last[client].get("epoch", 0):
            last[client] = row
        if isinstance(row.get("seconds"), (int, float)):
            seconds[client] += float(row["seconds"])
    rows = []
    for client, row in last.items():
        out = {"client": client, "epoch": row.get("epoch")}
        out.update({m: row.get(m) for m in metrics})
        if client in seconds:
            out["seconds (all epochs)"] = seconds[client]
        rows.append(out)
    report.table(rows, caption="Last recorded epoch per client")


def _classification_test(report: Report, test: dict) -> None:
    if test.get("auc") is None and test.get("auc_note"):
        report.banner(str(test["auc_note"]), level="info")
    rows = [
        {"metric": label, "value": test.get(key)}
        for key, label in (
            ("auc", "ROC AUC" + (" (macro one-vs-rest)" if test.get("num_classes", 2) > 2 else "")),
            ("accuracy", "accuracy"),
            ("kappa", "Cohen's kappa (quadratic weights)"),
            ("sensitivity", "sensitivity" + (" (macro recall)" if test.get("num_classes", 2) > 2 else " (positive class)")),
            ("specificity", "specificity" + (" (macro)" if test.get("num_classes", 2) > 2 else "")),
            ("n", "test images"),
        )
        if key in test
    ]
    report.table(rows, caption="Test-set metrics (argmax decision for accuracy, kappa, sensitivity, specificity)")
    if test.get("per_class"):
        report.table(test["per_class"], caption="Per class (one-vs-rest)")
    roc = test.get("roc")
    if roc:
        report.figure(figures.roc_figure(roc, test.get("auc")), caption="ROC on the test set.")
    if test.get("confusion"):
        report.figure(
            figures.confusion_figure(test["confusion"], test.get("class_names")),
            caption="Confusion matrix on the test set (rows: true class).",
        )


def _segmentation_test(report: Report, test: dict, examples: dict | None) -> None:
    rows = []
    hd_unit = "pixels" if test.get("spacing") is None else f"physical units, spacing {test['spacing']:g}"
    for key, label in (("dice", "Dice"), ("jaccard", "Jaccard (IoU)"), ("hd95", f"HD95 ({hd_unit})")):
        summary = test.get(key)
        if isinstance(summary, dict):
            rows.append(
                {
                    "metric": label,
                    "mean": summary.get("mean"),
                    "std": summary.get("std"),
                    "median": summary.get("median"),
                    "images": summary.get("n"),
                    "excluded": summary.get("n_excluded"),
                }
            )
    report.table(rows, caption=f"Test-set metrics over {format_value(test.get('n'))} images (mean ± population std)")
    report.text(
        "Conventions: a pixel is foreground when its sigmoid probability is at least the threshold. "
        "When prediction and ground truth are both empty Dice and Jaccard are 1 and HD95 is 0; when exactly one "
        "is empty Dice and Jaccard are 0 and HD95 is undefined, so that image is excluded from the HD95 mean "
        "(counted under 'excluded')."
    )
    per_image = test.get("per_image") or []
    if per_image:
        ranked = sorted(per_image, key=lambda r: (r.get("dice") is None, r.get("dice") or 0.0))
        columns = ["id", "dice", "jaccard", "hd95"]
        if len(ranked) <= 12:
            report.table(ranked, columns=columns, caption="Every test image, worst Dice first")
        else:
            report.table(ranked[:6], columns=columns, caption="The 6 images with the lowest Dice")
            report.table(ranked[::-1][:6], columns=columns, caption="The 6 images with the highest Dice")
    if examples and all(k in examples for k in ("images", "pred", "true")):
        n = min(12, len(examples["images"]))
        titles = list(examples.get("titles") or [])[:n] or None
        report.figure(
            figures.overlay_grid(examples["images"][:n], examples["pred"][:n], examples["true"][:n], titles),
            caption="Test images: ground-truth outline in green, prediction in red (dashed).",
        )


def _communication_section(report: Report, rows: list[dict]) -> None:
    report.section("Communication")
    report.text(
        "Bytes counted by the channel for everything that crossed a cut (encoded size, as a real transport "
        "would send it). 1 MB = 10^6 bytes."
    )
    total = sum(float(r.get("bytes", 0)) for r in rows)
    by_direction: dict[str, float] = defaultdict(float)
    by_epoch_direction: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    by_link_kind: dict[tuple[str, str], list[float]] = defaultdict(list)
    per_epoch_link_kind: dict[tuple[str, str, int], float] = defaultdict(float)
    for r in rows:
        b = float(r.get("bytes", 0))
        link, kind, epoch = str(r.get("link", "?")), str(r.get("kind", "")), int(r.get("epoch", 0))
        by_direction[_direction(link)] += b
        by_epoch_direction[epoch][_direction(link)] += b
        per_epoch_link_kind[(link, kind, epoch)] += b
    for (link, kind, _), b in per_epoch_link_kind.items():
        by_link_kind[(link, kind)].append(b)
    epochs = sorted(by_epoch_direction)

    cards = {"total": f"{total / _MB:,.1f} MB"}
    for direction, b in sorted(by_direction.items()):
        cards[direction] = f"{b / _MB:,.1f} MB"
    if epochs:
        cards["per epoch (mean)"] = f"{total / _MB / len(epochs):,.1f} MB"
    report.cards(cards)

    directions = sorted(by_direction)
    table = []
    for epoch in epochs:
        row: dict[str, Any] = {"epoch": epoch}
        row.update({f"{d} (MB)": by_epoch_direction[epoch].get(d, 0.0) / _MB for d in directions})
        row["total (MB)"] = sum(by_epoch_direction[epoch].values()) / _MB
        table.append(row)
    report.table(table, caption="MB per epoch per direction", float_fmt="{:,.2f}")
    report.table(
        [
            {
                "link": link,
                "kind": kind,
                "epochs": len(values),
                "MB per epoch (mean)": sum(values) / len(values) / _MB,
                "total MB": sum(values) / _MB,
            }
            for (link, kind), values in sorted(by_link_kind.items())
        ],
        caption="Per link and kind of tensor",
        float_fmt="{:,.2f}",
    )
    report.figure(figures.bytes_figure(rows), caption="MB per epoch for each link and kind of tensor.")


def _transport_section(report: Report, info: dict) -> None:
    """Parties as processes: which transport, one line per party, measured wall time per link."""
    report.section("Transport")
    report.text(
        f"Transport {info.get('name')}: every party ran in its own process (protocol version "
        f"{info.get('protocol_version')}, config hash {info.get('config_hash')}). Payload bytes are the Channel's "
        "counts; framing (8 bytes per message) and control messages (batch sizes, losses, best-epoch flags: "
        "protocol metadata, no tensors) are listed separately."
    )
    report.table([{"rank": p.get("rank"), "party": p.get("name"), "host": p.get("host"), "pid": p.get("pid"),
                   "opened data": "yes" if p.get("data_loaded") else "no"} for p in info.get("parties", [])],
                 caption="Parties")
    report.table([{"link": f"{r['party']}->{r['peer']}", "messages": r.get("messages"),
                   "payload MB": r.get("payload_bytes", 0) / _MB, "framing bytes": r.get("framing_bytes"),
                   "wall s in send": r.get("seconds")}
                  for r in info.get("links", []) if r.get("direction") == "send"],
                 caption="Measured per link (sender side)", float_fmt="{:,.3f}")


def _config_section(report: Report, record: dict) -> None:
    report.section("Resolved configuration")
    report.text("Every setting the run used, after defaults and command-line overrides were applied.")
    if record.get("config_yaml"):
        report.code(str(record["config_yaml"]), caption="config.yaml")
    elif record.get("config"):
        report.kv(record["config"])


# -- entry points -----------------------------------------------------------------------


def build_run_report(record: dict) -> Report:
    """Build (but do not write) the :class:`Report` for one run record."""
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

    _summary_section(report, record)
    if data:
        _data_section(report, data)
    if record.get("history"):
        _curves_section(report, list(record["history"]))
    test = record.get("test")
    if isinstance(test, dict) and test:
        report.section("Test metrics")
        if _is_segmentation(test):
            _segmentation_test(report, test, record.get("examples"))
        elif _is_classification(test):
            _classification_test(report, test)
        else:
            report.kv(test)
    if record.get("bytes"):
        _communication_section(report, list(record["bytes"]))
    if record.get("transport"):
        _transport_section(report, record["transport"])
    if record.get("config_yaml") or record.get("config"):
        _config_section(report, record)
    if record.get("artifacts"):
        report.section("Artifacts")
        report.text("Files written by this run, relative to its run directory.")
        report.kv(record["artifacts"])
    return report


def write_run_report(record: dict, out_path: Path) -> Path:
    """Write the self-contained HTML report of one run to ``out_path`` and return the path."""
    return build_run_report(record).write(Path(out_path))
