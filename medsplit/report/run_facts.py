"""The fact sections of a run report: the data it used, its resolved configuration, the files it left."""

from __future__ import annotations

from typing import Any

import yaml

from medsplit.report.html import Report, format_value
from medsplit.report.run_summary import selection_metric
from medsplit.tasks import TASKS

__all__ = ["artifacts_section", "config_section", "data_section"]


def _class_columns(counts: Any, class_names: list[str]) -> dict[str, Any]:
    """``[c0, c1, ...]`` -> ``{"name0": c0, ...}``, or one column when names do not fit."""
    if not isinstance(counts, (list, tuple)):
        return {}
    if class_names and len(class_names) == len(counts):
        total = sum(counts) or 1
        return {name: f"{c} ({100 * c / total:.0f}%)" for name, c in zip(class_names, counts)}
    return {"class counts": list(counts)}


def data_section(report: Report, data: dict) -> None:
    """Data source, split sizes and what each client holds.

    Args:
        report: the report to add the section to.
        data: the record's ``data`` entry.
    """
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
        held = [w for w, present in (("class", bool(class_names)),
                                     ("image source or view", any(c.get("groups") for c in clients))) if present]
        report.table(rows, caption="Training images held by each client" + (f" (by {' and by '.join(held)})" if held else ""))


def _resolved_settings(record: dict) -> dict[str, str]:
    """Dotted key -> what an ``auto`` (or empty) setting turned into in this run."""
    config = record.get("config") or {}
    get = lambda key: (config.get(key.split(".")[0]) or {}).get(key.split(".")[1])  # noqa: E731
    out = {}
    if get("data.source") == "auto" and (record.get("data") or {}).get("source"):
        out["data.source"] = str(record["data"]["source"])
    if get("train.device") == "auto" and record.get("device"):
        out["train.device"] = str(record["device"])
    if get("train.select_on") == "auto":
        out["train.select_on"] = selection_metric(record).lower() + " (validation)"
    if get("output.name") == "" and record.get("run"):
        out["output.name"] = str(record["run"])
    return out


def _config_yaml(record: dict) -> tuple[str, list[str]]:
    """The saved config as YAML, ``auto`` values annotated with what they resolved to, and
    settings the task does not use left out (returned as the second value)."""
    config = {k: dict(v) if isinstance(v, dict) else v for k, v in (record.get("config") or {}).items()}
    dropped = []
    task = TASKS.get(str(record.get("task")))
    # settings that do nothing for the run's task are left out of the listing
    for key in task.unused_settings if task else ():
        section, name = key.split(".")
        if name in (config.get(section) or {}):
            del config[section][name]
            dropped.append(key)
    resolved = _resolved_settings(record)
    lines, section = [], ""
    for line in yaml.safe_dump(config, sort_keys=False).splitlines():
        if not line.startswith(" "):
            section = line.rstrip(":")
        else:
            key = f"{section}.{line.strip().split(':', 1)[0]}"
            if key in resolved:
                line += f"  # resolved: {resolved[key]}"
        lines.append(line)
    return "\n".join(lines) + "\n", dropped



def config_section(report: Report, record: dict) -> None:
    """The resolved configuration as YAML, ``auto`` settings annotated with what they became.

    Args:
        report: the report to add the section to.
        record: the run record (``config`` or ``config_yaml``).
    """
    report.section("Resolved configuration")
    report.text("Every setting the run used, after defaults and command-line overrides were applied; a setting "
                "left to be chosen at run time (auto) shows what it became as a comment.")
    if record.get("config"):
        text, dropped = _config_yaml(record)
        caption = "config.yaml (as saved in the run directory)"
        if dropped:
            caption += f"; not shown because a {record.get('task')} run does not use them: {', '.join(dropped)}"
        report.code(text, caption=caption)
    elif record.get("config_yaml"):
        report.code(str(record["config_yaml"]), caption="config.yaml")


def artifacts_section(report: Report, artifacts: dict) -> None:
    """The files of the run directory and what each holds.

    Args:
        report: the report to add the section to.
        artifacts: the record's ``artifacts`` entry.
    """
    report.section("Artifacts")
    files = artifacts.get("files")
    if not isinstance(files, dict):  # older records: a flat mapping
        report.kv(artifacts)
        return
    run_dir = artifacts.get("run_dir", "the run directory")
    report.text(f"Run directory: {run_dir}. The files below are in it (paths relative to it), as the run left "
                "them." + (f" A copy of metrics.json sits beside this report: {artifacts['metrics_copy']}."
                                         if artifacts.get("metrics_copy") else ""))
    report.table([{"file": name, "what it holds": info.get("what"), "size": _size(info.get("MB"))}
                  for name, info in files.items()])


def _size(mb: Any) -> str:
    if not isinstance(mb, (int, float)):
        return format_value(mb)
    return f"{mb:,.1f} MB" if mb >= 1 else f"{mb * 1e3:,.1f} kB"
