"""The metric sections of a run report: learning curves, and the test metrics with their figures."""

from __future__ import annotations

from typing import Any

from medsplit.report import figures
from medsplit.report.explain import hd95_unit
from medsplit.report.html import Report, format_value
from medsplit.report.run_summary import (
    format_duration,
    interval_text,
    is_classification,
    is_segmentation,
    selection_text,
)
from medsplit.uncertainty import format_interval

__all__ = ["HISTORY_METRICS", "curves_section", "evaluation_section"]

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


def _history_metrics(history: list[dict]) -> list[str]:
    present = {k for row in history for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    ordered = [m for m in HISTORY_METRICS if m in present]
    extra = sorted(m for m in present if m.startswith(("train_", "val_")) and m not in ordered)
    return ordered + extra


def curves_section(report: Report, history: list[dict], selected: int | None = None, test: dict | None = None) -> None:
    """Learning curves, and a table of the selected epoch beside the last one.

    Args:
        report: the report to add the section to.
        history: the record's ``history`` rows.
        selected: the tested epoch (1-based), marked in the figure and the table.
        test: the record's test metrics (they say which unit HD95 is in).
    """
    report.section("Learning curves")
    metrics = _history_metrics(history)
    if not metrics:
        report.text("The history holds no metric values.")
        return
    labels = {"val_hd95": f"validation HD95 ({hd95_unit(test or {})[0]})"}
    clients = list(dict.fromkeys(str(r.get("client", "all")) for r in history))
    per_client = len(clients) > 1
    caption = ("Training loss: one line per client (each hospital's own batches); validation metrics: the model "
               "after the epoch, on the shared validation split." if per_client else "x = epoch.")
    if selected:
        caption += f" Dashed vertical line: epoch {selected}, whose model was tested."
    epochs = sorted({int(r["epoch"]) for r in history if isinstance(r.get("epoch"), int)})
    if len(epochs) == 1:
        caption += (" One epoch: each panel holds one point per line, its value written beside it; the curves "
                    "need more epochs to show a trend.")
    report.figure(figures.learning_curves(history, metrics, selected_epoch=selected, labels=labels), caption=caption)
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
                    values.setdefault(labels.get(m) or figures.metric_label(m), {})[heads[e]] = r[m]
    rows = [{"quantity": name, **cells} for name, cells in values.items()]
    total = sum(float(r["seconds"]) for r in history if isinstance(r.get("seconds"), (int, float)))
    caption = "The selected epoch (its model produced the test metrics) beside the last epoch"
    if total:
        caption += f"; all {len(epochs)} epochs took {format_duration(total)} of training and validation"
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
    hd_unit, hd_words = hd95_unit(test)
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
        f"(counted under 'excluded'). {hd_words}"
    )
    hd = test.get("hd95") if isinstance(test.get("hd95"), dict) else {}
    if isinstance(hd.get("miss_rate"), (int, float)):
        report.text(f"HD95 miss rate: {hd['miss_rate']:.1%} of the test images have no HD95 (the model found no lung "
                    f"on {hd.get('prediction_empty', 0)}, the ground truth has none on {hd.get('ground_truth_empty', 0)}); "
                    "read the HD95 mean together with it, since a model that misses whole lungs is not penalised by it.")
    per_image = test.get("per_image") or []
    if per_image:
        hd_column = f"hd95 ({hd_unit})"
        ranked = [{**r, hd_column: r.get("hd95")} for r in
                  sorted(per_image, key=lambda r: (r.get("dice") is None, r.get("dice") or 0.0))]
        columns = ["id", "dice", "jaccard", hd_column]
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



def evaluation_section(report: Report, record: dict) -> None:
    """The Test metrics section: the tested model's metrics, tables, figures and what the intervals cover.

    Args:
        report: the report to add the section to.
        record: the run record; its ``test`` entry must be a non-empty dict.
    """
    test = record["test"]
    report.section("Test metrics")
    selection = selection_text(record)
    if selection:
        report.text(selection)
    if is_segmentation(test):
        _segmentation_test(report, test, record.get("examples"), record.get("test_intervals"))
    elif is_classification(test):
        _classification_test(report, test, record.get("test_intervals"))
    else:
        report.kv(test)
    if record.get("test_intervals"):
        report.text(interval_text(record["test_intervals"]))
