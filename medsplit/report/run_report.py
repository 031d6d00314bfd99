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
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from medsplit.report import figures
from medsplit.report.html import Report, format_value
from medsplit.tasks import TASKS, task_of_record
from medsplit.train.protocols import PROTOCOLS
from medsplit.uncertainty import format_interval

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
        hd_unit = "pixels" if test.get("spacing") is None else "physical units"
        for key, label in (("dice", "Dice"), ("jaccard", "Jaccard"), ("hd95", f"HD95 ({hd_unit})")):
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


#: Headline card label -> the key of its interval in ``test_intervals``.
_INTERVAL_OF = {"test AUC": "auc", "test sensitivity": "sensitivity", "test specificity": "specificity",
                "test Dice": "dice"}


def _interval_notes(intervals: dict | None) -> dict[str, str]:
    if not intervals:
        return {}
    return {label: f"95% CI {format_interval(intervals.get(key))}" for label, key in _INTERVAL_OF.items()
            if isinstance(intervals.get(key), dict)}


def _interval_text(intervals: dict) -> str:
    return (f"95% confidence intervals (CI): {intervals.get('method', 'bootstrap')}, {intervals.get('n_resamples')} "
            f"resamples of the {intervals.get('n_patients')} test patients ({intervals.get('n_images')} images; all "
            "images of a drawn patient come along). They cover which patients happened to be in the test set, for this "
            "trained model; they do not cover training randomness (seed), which a sweep over seeds shows.")


def _selection_text(record: dict) -> str | None:
    """One sentence: which epoch's model was tested and how it was chosen."""
    epoch = record.get("selected_epoch")
    if not isinstance(epoch, int) or epoch < 1:
        return None
    train = (record.get("config") or {}).get("train") or {}
    epochs = train.get("epochs")
    metric = _selection_metric(record)
    later = f"; epochs {epoch + 1}-{epochs} were trained but their models were not tested" if epochs and epoch < epochs else ""
    return (f"The test metrics come from the model of epoch {epoch}" + (f" of {epochs}" if epochs else "") +
            f", the epoch with the highest validation {metric} (train.select_on){later}. "
            "The test split was used once, after training.")


def _selection_metric(record: dict) -> str:
    select_on = ((record.get("config") or {}).get("train") or {}).get("select_on", "auto")
    if select_on and select_on != "auto":
        return str(select_on)
    return task_of_record(record).metric_label


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
    notes = _interval_notes(record.get("test_intervals"))
    epoch, epochs = record.get("selected_epoch"), ((record.get("config") or {}).get("train") or {}).get("epochs")
    if isinstance(epoch, int) and epoch > 0:
        cards["tested model: epoch"] = f"{epoch}" + (f" of {epochs}" if epochs else "")
        notes["tested model: epoch"] = f"best validation {_selection_metric(record)}"
    if "wall_time_s" in record:
        cards["wall time"] = _duration(record["wall_time_s"])
    if cards:
        report.cards(cards, notes=notes)
    if record.get("test_intervals"):
        report.text(_interval_text(record["test_intervals"]))
    selection = _selection_text(record)
    if selection:
        report.text(selection)
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
    protocol = PROTOCOLS.get(str(record.get("protocol")))
    if protocol is not None and protocol.pooled:
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
        held = [w for w, present in (("class", bool(class_names)),
                                     ("image source or view", any(c.get("groups") for c in clients))) if present]
        report.table(rows, caption="Training images held by each client" + (f" (by {' and by '.join(held)})" if held else ""))


def _history_metrics(history: list[dict]) -> list[str]:
    present = {k for row in history for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    ordered = [m for m in HISTORY_METRICS if m in present]
    extra = sorted(m for m in present if m.startswith(("train_", "val_")) and m not in ordered)
    return ordered + extra


def _curves_section(report: Report, history: list[dict], selected: int | None = None) -> None:
    report.section("Learning curves")
    metrics = _history_metrics(history)
    if not metrics:
        report.text("The history holds no metric values.")
        return
    clients = list(dict.fromkeys(str(r.get("client", "all")) for r in history))
    per_client = len(clients) > 1
    caption = ("Training loss: one line per client (each hospital's own batches); validation metrics: the model "
               "after the epoch, on the shared validation split." if per_client else "x = epoch.")
    if selected:
        caption += f" Dashed vertical line: epoch {selected}, whose model was tested."
    report.figure(figures.learning_curves(history, metrics, selected_epoch=selected), caption=caption)
    epochs = sorted({int(r["epoch"]) for r in history if isinstance(r.get("epoch"), int)})
    if not epochs:
        return
    last = epochs[-1]
    shown = sorted({e for e in (selected, last) if e in epochs})
    val_keys = [m for m in metrics if not m.startswith("train_")]
    # One column per epoch shown, one row per quantity: narrow however many clients there are.
    heads = {e: f"epoch {e}" + " (" + " and ".join(r for r, hit in (("selected, tested", e == selected),
                                                                       ("last", e == last)) if hit) + ")" for e in shown}
    values: dict[str, dict[str, Any]] = {}
    for e in shown:
        for r in history:
            if r.get("epoch") != e:
                continue
            if isinstance(r.get("train_loss"), (int, float)):
                label = f"training loss, {r.get('client', 'all')}" if per_client else "training loss"
                values.setdefault(label, {})[heads[e]] = r["train_loss"]
            for m in val_keys:
                if m in r:
                    values.setdefault(figures.metric_label(m), {})[heads[e]] = r[m]
    rows = [{"quantity": name, **cells} for name, cells in values.items()]
    total = sum(float(r["seconds"]) for r in history if isinstance(r.get("seconds"), (int, float)))
    caption = "The selected epoch (its model produced the test metrics) beside the last epoch"
    if total:
        caption += f"; all {len(epochs)} epochs took {_duration(total)} of training and validation"
    report.table(rows, columns=["quantity", *heads.values()], caption=caption)


def _classification_test(report: Report, test: dict, intervals: dict | None = None) -> None:
    if test.get("auc") is None and test.get("auc_note"):
        report.banner(str(test["auc_note"]), level="info")
    multi = test.get("num_classes", 2) > 2
    intervals = intervals or {}
    rows = [
        {"metric": label, "value": test.get(key), "95% CI": format_interval(intervals.get(key)) if key in intervals else "",
         "what it means": meaning}
        for key, label, meaning in (
            ("auc", "ROC AUC" + (" (macro one-vs-rest)" if multi else ""),
             "chance that a random positive image scores above a random negative one (0.5 = chance, 1 = perfect)"),
            ("accuracy", "accuracy", "share of test images whose predicted class is right"),
            ("kappa", "Cohen's kappa (quadratic weights)",
             "agreement between predicted and true class beyond chance (0 = chance, 1 = perfect); with grades, "
             "a prediction two grades off costs four times one grade off"),
            ("sensitivity", "sensitivity" + (" (macro recall)" if multi else " (positive class)"),
             "share of diseased images flagged" if not multi else "mean over classes of the share of that class found"),
            ("specificity", "specificity" + (" (macro)" if multi else ""),
             "share of healthy images left unflagged" if not multi else "mean over classes of the share of other classes kept out"),
            ("n", "test images", ""),
        )
        if key in test
    ]
    report.table(rows, caption="Test-set metrics (argmax decision for accuracy, kappa, sensitivity, specificity)")
    if test.get("per_class"):
        report.table(test["per_class"], caption="Per class (one-vs-rest: the class against all others)")
    roc = test.get("roc")
    if roc:
        report.figure(figures.roc_figure(roc, test.get("auc")), caption="ROC on the test set.")
    if test.get("confusion"):
        report.figure(
            figures.confusion_figure(test["confusion"], test.get("class_names")),
            caption="Confusion matrix on the test set (rows: true class).",
        )


def _segmentation_test(report: Report, test: dict, examples: dict | None, intervals: dict | None = None) -> None:
    intervals = intervals or {}
    rows = []
    hd_unit = "pixels" if test.get("spacing") is None else f"physical units, spacing {test['spacing']:g}"
    for key, label in (("dice", "Dice"), ("jaccard", "Jaccard (IoU)"), ("hd95", f"HD95 ({hd_unit})")):
        summary = test.get(key)
        if isinstance(summary, dict):
            rows.append(
                {
                    "metric": label,
                    "mean": summary.get("mean"),
                    "95% CI of the mean": format_interval(intervals.get(key)) if key in intervals else "",
                    "std": summary.get("std"),
                    "median": summary.get("median"),
                    "images": summary.get("n"),
                    "excluded": summary.get("n_excluded"),
                }
            )
    report.table(rows, caption=f"Test-set metrics over {format_value(test.get('n'))} images (mean ± population std)")
    report.text(
        "Dice and Jaccard measure the overlap of the predicted and true lung masks (1 = identical, 0 = disjoint); "
        "HD95 is the 95th-percentile distance between their outlines (0 = outlines coincide; lower is better). "
        "Conventions: a pixel is foreground when its sigmoid probability is at least the threshold. "
        "When prediction and ground truth are both empty Dice and Jaccard are 1 and HD95 is 0; when exactly one "
        "is empty Dice and Jaccard are 0 and HD95 is undefined, so that image is excluded from the HD95 mean "
        "(counted under 'excluded')."
    )
    hd = test.get("hd95") if isinstance(test.get("hd95"), dict) else {}
    if isinstance(hd.get("miss_rate"), (int, float)):
        report.text(f"HD95 miss rate: {hd['miss_rate']:.1%} of the test images have no HD95 (the model found no lung "
                    f"on {hd.get('prediction_empty', 0)}, the ground truth has none on {hd.get('ground_truth_empty', 0)}); "
                    "read the HD95 mean together with it, since a model that misses whole lungs is not penalised by it.")
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


#: Party roles as a reader knows them.
_PARTY = {"client": "hospital", "server": "server"}

#: Kinds sent on every training step; the others (weights, optimiser state) are hand-overs.
_PER_STEP_KINDS = ("activation", "gradient", "label")


def _link_name(link: str) -> str:
    """``"client_encoder->server_encoder"`` -> ``"client_encoder → server_encoder"``."""
    return link.replace("->", " → ")


def _steps_per_epoch(record: dict) -> int | None:
    """Training steps (batches, over all clients) per epoch, as the loop draws them: a last
    batch of one image is dropped (BatchNorm cannot train on it)."""
    batch = ((record.get("config") or {}).get("train") or {}).get("batch_size")
    clients = (record.get("data") or {}).get("clients") or []
    if not batch or not clients or not all(isinstance(c.get("n"), int) for c in clients):
        return None
    steps = 0
    for c in clients:
        n = c["n"]
        k = -(-n // batch)
        if k > 1 and n % batch == 1:
            k -= 1
        steps += k
    return steps or None


def _link_explanations(links: set[str]) -> list[str]:
    notes = []
    if any("encoder" in l or "decoder" in l for l in links):
        notes.append("The U-shaped split has four parts: the hospital keeps the first layers (client_encoder) and the "
                     "last ones (client_decoder), so both the X-ray and its mask stay at the hospital; the server runs "
                     "the middle (server_encoder, server_decoder). A link is named after the parts at its two ends: "
                     "client_encoder → server_encoder carries the hospital's encoder features to the server, "
                     "server_decoder → client_decoder returns the server's decoder output; the reverse links carry "
                     "gradients back.")
    elif any("->" in l for l in links):
        notes.append("client → server carries the activations of the hospital's layers up to the cut; "
                     "server → client returns their gradients.")
    if "labels" in links:
        notes.append("labels: the diagnosis labels of each batch, sent to the server, which computes the loss.")
    if "weights" in links or "optimizer state" in links:
        notes.append("weights and optimizer state: a hospital's model part (and its Adam moments) handed to the next "
                     "hospital (relay) or averaged through the server (SplitFed, FedAvg), once per epoch and client.")
    if "server weights" in links or "server optimizer state" in links:
        notes.append("server weights and server optimizer state (SplitFed V1): the server's per-hospital copies "
                     "averaged at the end of each round. In the paper the copies live on the main server, so these "
                     "bytes cross a network only if the copies run on separate machines; they are counted on their "
                     "own links so that they can be left out of a comparison.")
    return notes


def _communication_section(report: Report, rows: list[dict], record: dict | None = None) -> None:
    record = record or {}
    report.section("Communication")
    links = {str(r.get("link", "?")) for r in rows}
    report.text(
        "Bytes counted by the channel for everything that crossed between parties during training (encoded size, "
        "as a real transport would send it). 1 MB = 10^6 bytes. " + " ".join(_link_explanations(links))
    )
    per_epoch: dict[tuple[str, str], dict[int, float]] = defaultdict(lambda: defaultdict(float))
    epochs: set[int] = set()
    for r in rows:
        key = (str(r.get("link", "?")), str(r.get("kind", "")))
        epoch = int(r.get("epoch", 0))
        per_epoch[key][epoch] += float(r.get("bytes", 0))
        epochs.add(epoch)
    n_epochs = max(len(epochs), 1)
    total = sum(sum(v.values()) for v in per_epoch.values())
    steps = _steps_per_epoch(record)

    cards = {"total": f"{total / _MB:,.1f} MB", "per epoch": f"{total / _MB / n_epochs:,.1f} MB"}
    notes = {"total": f"{n_epochs} epoch(s)", "per epoch": "mean over epochs"}
    if steps:
        step_bytes = sum(sum(v.values()) for (link, kind), v in per_epoch.items() if kind in _PER_STEP_KINDS) / n_epochs / steps
        cards["per training step"] = f"{step_bytes / _MB:,.2f} MB"
        notes["per training step"] = f"{steps} steps per epoch"
    report.cards(cards, notes=notes)

    # The figure's bars are directions between kinds of party (what one physical link carries
    # both ways), its segments the logical links.
    direction_of: dict[tuple[str, str], str] = {}
    for r in rows:
        link = str(r.get("link", "?"))
        if "sender" in r and "receiver" in r:
            sender, receiver = _role(str(r["sender"])), _role(str(r["receiver"]))
        else:  # older records: the link names its ends
            sender, _, receiver = (_role(p) for p in link.partition("->")) if "->" in link else ("?", "", "?")
        direction_of[(link, str(r.get("kind", "")))] = \
            f"{_PARTY.get(sender, sender)} \u2192 {_PARTY.get(receiver, receiver)}"
    table, step_traffic, handover = [], defaultdict(dict), defaultdict(dict)
    for (link, kind), by_epoch in sorted(per_epoch.items()):
        values = [by_epoch.get(e, 0.0) for e in sorted(epochs)]
        mean = sum(values) / n_epochs
        constant = max(values) - min(values) <= 1e-9 * max(1.0, max(values))
        name = _link_name(link)
        row: dict[str, Any] = {"link": name, "kind": kind,
                               "MB per epoch": f"{mean / _MB:,.2f}" if constant else
                               f"{mean / _MB:,.2f} (mean; {min(values) / _MB:,.2f}–{max(values) / _MB:,.2f})",
                               "MB, all epochs": sum(values) / _MB}
        segment = name if not kind or kind[:4] in link else f"{name} ({kind})"
        direction = direction_of.get((link, kind), "?")
        if steps and kind in _PER_STEP_KINDS:
            row["kB per step"] = mean / steps / 1e3
            step_traffic[direction][segment] = step_traffic[direction].get(segment, 0.0) + mean / steps
        else:
            row["kB per step"] = None
            handover[direction][segment] = handover[direction].get(segment, 0.0) + mean
        for speed, bps in figures.LINK_SPEEDS.items():
            row[f"s per epoch at {speed}"] = mean * 8 / bps
        table.append(row)
    report.table(table, caption="Traffic per link and kind of tensor. Seconds: bytes × 8 / link speed, "
                                "bandwidth only (no latency, no protocol overhead)." +
                                ("" if all(not str(r["MB per epoch"]).endswith(")") for r in table)
                                 else " Where epochs differ, the mean and the range are given."),
                 float_fmt="{:,.3f}")
    if step_traffic:
        report.figure(figures.step_traffic_figure(step_traffic),
                      caption=f"Bytes per training step in each direction, stacked by link and kind of tensor "
                              f"({steps} steps per epoch), and the time one step's bytes take on a 100 Mbit/s and a "
                              "1 Gbit/s link (bandwidth only).")
    if handover:
        report.figure(figures.step_traffic_figure(handover, unit="per epoch"),
                      caption="Hand-overs per epoch (all clients together), and their time at 100 Mbit/s and 1 Gbit/s.")


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
        out["train.select_on"] = _selection_metric(record).lower() + " (validation)"
    if get("output.name") == "" and record.get("run"):
        out["output.name"] = str(record["run"])
    return out


def _config_yaml(record: dict) -> tuple[str, list[str]]:
    """The saved config as YAML, ``auto`` values annotated with what they resolved to, and
    settings the task does not use left out (returned as the second value)."""
    import yaml

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
                 caption="Measured per link (sender side; the wall time in send includes waiting until the receiver takes the message)",
                 float_fmt="{:,.3f}")


def _config_section(report: Report, record: dict) -> None:
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


def _artifacts_section(report: Report, artifacts: dict) -> None:
    report.section("Artifacts")
    files = artifacts.get("files")
    if not isinstance(files, dict):  # older records: a flat mapping
        report.kv(artifacts)
        return
    run_dir = artifacts.get("run_dir", "the run directory")
    report.text(f"Run directory: {run_dir}. The files below are in it (paths relative to it), as they were when this "
                "report was written." + (f" A copy of metrics.json sits beside this report: {artifacts['metrics_copy']}."
                                         if artifacts.get("metrics_copy") else ""))
    report.table([{"file": name, "what it holds": info.get("what"), "size": _size(info.get("MB"))}
                  for name, info in files.items()])


def _size(mb: Any) -> str:
    if not isinstance(mb, (int, float)):
        return format_value(mb)
    return f"{mb:,.1f} MB" if mb >= 1 else f"{mb * 1e3:,.1f} kB"


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
        _curves_section(report, list(record["history"]), record.get("selected_epoch"))
    test = record.get("test")
    if isinstance(test, dict) and test:
        report.section("Test metrics")
        selection = _selection_text(record)
        if selection:
            report.text(selection)
        if _is_segmentation(test):
            _segmentation_test(report, test, record.get("examples"), record.get("test_intervals"))
        elif _is_classification(test):
            _classification_test(report, test, record.get("test_intervals"))
        else:
            report.kv(test)
        if record.get("test_intervals"):
            report.text(_interval_text(record["test_intervals"]))
    if record.get("bytes"):
        _communication_section(report, list(record["bytes"]), record)
    if record.get("transport"):
        _transport_section(report, record["transport"])
    if record.get("config_yaml") or record.get("config"):
        _config_section(report, record)
    if record.get("artifacts"):
        _artifacts_section(report, dict(record["artifacts"]))
    return report


def write_run_report(record: dict, out_path: Path) -> Path:
    """Write the self-contained HTML report of one run to ``out_path`` and return the path."""
    return build_run_report(record).write(Path(out_path))
