"""The Summary section of a run report, and the readings of a run record other sections share.

The shared readings: which kind of test metrics a record holds, which epoch was tested and
chosen on what, what the confidence intervals cover, and durations in words.
"""

from __future__ import annotations

from typing import Any

from medsplit.protocol_names import known_protocol_facts
from medsplit.report.explain import KAPPA_WORDS, cut_words, degenerate_classifier, hd95_unit
from medsplit.report.html import Report, format_value
from medsplit.tasks import task_of_record
from medsplit.uncertainty import format_interval, resampling_text

__all__ = [
    "format_duration",
    "interval_text",
    "is_classification",
    "is_segmentation",
    "selection_metric",
    "selection_text",
    "summary_section",
]


def format_duration(seconds: Any) -> str:
    """``3725.4`` -> ``"1 h 02 min 05 s"``; a value that is not a number is shown as it is.

    Args:
        seconds: a duration in seconds.
    """
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


def is_classification(test: dict) -> bool:
    """Whether ``test`` holds classification metrics.

    Args:
        test: the record's ``test`` entry.
    """
    return "confusion" in test or "accuracy" in test


def is_segmentation(test: dict) -> bool:
    """Whether ``test`` holds segmentation metrics.

    Args:
        test: the record's ``test`` entry.
    """
    return "dice" in test


def _headline(test: dict) -> dict[str, str]:
    """The few test numbers a reader looks for first."""
    if is_segmentation(test):
        out = {}
        hd_unit = hd95_unit(test)[0]
        for key, label in (("dice", "Dice"), ("jaccard", "Jaccard"), ("hd95", f"HD95 ({hd_unit})")):
            summary = test.get(key) or {}
            if isinstance(summary, dict) and summary.get("mean") is not None:
                std = summary.get("std")
                out[f"test {label}"] = _fmt(summary["mean"]) + (f" ± {_fmt(std)}" if std is not None else "")
        return out
    if is_classification(test):
        names = (("auc", "AUC"), ("accuracy", "accuracy"), ("kappa", "quadratic kappa"),
                 ("sensitivity", "sensitivity"), ("specificity", "specificity"))
        return {f"test {label}": _fmt(test.get(key)) for key, label in names if key in test}
    return {}


#: Headline card label -> the key of its interval in ``test_intervals``.
_INTERVAL_OF = {"test AUC": "auc", "test sensitivity": "sensitivity", "test specificity": "specificity",
                "test Dice": "dice"}


#: Headline card label -> what the number means, where the label alone does not say.
_MEANING_OF = {"test quadratic kappa": "agreement beyond chance: 0 = chance, 1 = perfect"}


def _interval_notes(intervals: dict | None) -> dict[str, str]:
    notes = dict(_MEANING_OF)
    if not intervals:
        return notes
    return notes | {label: f"95% CI {format_interval(intervals.get(key))}" for label, key in _INTERVAL_OF.items()
                    if isinstance(intervals.get(key), dict)}


def interval_text(intervals: dict) -> str:
    """What the 95% confidence intervals cover and what they do not, in one paragraph.

    Args:
        intervals: the record's ``test_intervals`` entry.
    """
    unit = "images" if intervals.get("unit") == "image" else "patients"
    return (f"95% confidence intervals (CI): {intervals.get('method', 'bootstrap')}, {resampling_text(intervals)}. "
            f"They cover which {unit} happened to be in the test set, for this trained model; they do not cover "
            "training randomness (seed), which a sweep over seeds shows.")


def selection_text(record: dict) -> str | None:
    """One sentence: which epoch's model was tested and how it was chosen (``None`` when unknown).

    Args:
        record: the run record.
    """
    epoch = record.get("selected_epoch")
    if not isinstance(epoch, int) or epoch < 1:
        return None
    train = (record.get("config") or {}).get("train") or {}
    epochs = train.get("epochs")
    metric = selection_metric(record)
    later = f"; epochs {epoch + 1}-{epochs} were trained but their models were not tested" if epochs and epoch < epochs else ""
    return (f"The test metrics come from the model of epoch {epoch}" + (f" of {epochs}" if epochs else "") +
            f", the epoch with the highest validation {metric} (train.select_on){later}. "
            "The test split was used once, after training.")


def selection_metric(record: dict) -> str:
    """The validation metric the tested epoch was chosen on (``train.select_on``, or the task's).

    Args:
        record: the run record.
    """
    select_on = ((record.get("config") or {}).get("train") or {}).get("select_on", "auto")
    if select_on and select_on != "auto":
        return str(select_on)
    return task_of_record(record).metric_label


def summary_section(report: Report, record: dict) -> None:
    """Headline test numbers, the tested epoch, wall time and the run's identity.

    Args:
        report: the report to add the section to.
        record: the run record.
    """
    report.section("Summary")
    test = record.get("test") or {}
    degenerate = degenerate_classifier(test) if isinstance(test, dict) and is_classification(test) else None
    if degenerate:  # first, above the numbers it puts in doubt
        report.banner(degenerate, level="warning")
    cards = _headline(test) if isinstance(test, dict) else {}
    notes = _interval_notes(record.get("test_intervals"))
    epoch, epochs = record.get("selected_epoch"), ((record.get("config") or {}).get("train") or {}).get("epochs")
    if isinstance(epoch, int) and epoch > 0:
        cards["tested model: epoch"] = f"{epoch}" + (f" of {epochs}" if epochs else "")
        notes["tested model: epoch"] = f"best validation {selection_metric(record)}"
    if "wall_time_s" in record:
        cards["wall time"] = format_duration(record["wall_time_s"])
    if cards:
        report.cards(cards, notes=notes)
    if record.get("test_intervals"):
        report.text(interval_text(record["test_intervals"]))
    if isinstance(test, dict) and test.get("kappa") is not None:
        report.text(KAPPA_WORDS)
    selection = selection_text(record)
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
        facts["wall time"] = f"{format_duration(record['wall_time_s'])} ({format_value(record['wall_time_s'], '{:.1f}')} s)"
    data = record.get("data") or {}
    if "source" in data:
        facts["data source"] = data["source"]
    if "synthetic" in data:
        facts["synthetic data"] = bool(data["synthetic"])
    if facts:
        report.kv(facts)
    cut = cut_words(record)
    if cut:
        report.text(cut)
    protocol = known_protocol_facts(str(record.get("protocol")))
    if protocol is not None and protocol.pooled:
        report.text("Centralised baseline: the whole model trains in one place; nothing crosses a cut.")
