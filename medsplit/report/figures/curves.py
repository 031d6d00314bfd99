"""Learning curves of a training run, and the readable names of its history keys."""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from medsplit.report.figures.axes import grid_shape, is_finite, mark_empty

__all__ = ["BOUNDED", "METRIC_LABELS", "learning_curves", "metric_label"]

#: Human-readable axis labels for history keys.
METRIC_LABELS = {
    "train_loss": "training loss",
    "val_loss": "validation loss",
    "val_auc": "validation AUC",
    "val_accuracy": "validation accuracy",
    "val_kappa": "validation kappa",
    "val_dice": "validation Dice",
    "val_jaccard": "validation Jaccard",
    "val_hd95": "validation HD95 (pixels)",  # a run whose pixel spacing is known passes "(mm)" in ``labels``
    "val_sensitivity": "validation sensitivity",
    "val_specificity": "validation specificity",
    "lr": "learning rate",
    "seconds": "seconds per epoch",
}


def metric_label(key: str) -> str:
    """``"val_hd95"`` -> ``"validation HD95 (pixels)"``; unknown keys lose their prefix underscore.

    Args:
        key: a history key such as ``"val_auc"``.
    """
    if key in METRIC_LABELS:
        return METRIC_LABELS[key]
    for prefix, word in (("val_", "validation "), ("train_", "training "), ("test_", "test ")):
        if key.startswith(prefix):
            return word + key[len(prefix):].replace("_", " ")
    return key.replace("_", " ")


#: Metrics that live in [0, 1] (kappa in [-1, 1]): a panel of one epoch shows them on that scale.
BOUNDED = {"val_auc", "val_accuracy", "val_kappa", "val_dice", "val_jaccard", "val_sensitivity", "val_specificity"}


def _one_epoch_axes(ax, metric: str, epoch: float, values: list[float]) -> None:
    """A panel whose lines are single points: each value written beside its dot, and a y range a
    reader can place it in (the metric's own scale, or 0 up to above the largest value) instead of
    matplotlib's +-4% around one value."""
    for value, line in zip(values, ax.get_lines()):
        ax.annotate(f"{value:.3g}", (epoch, value), xytext=(8, 0), textcoords="offset points", va="center", fontsize=9,
                    color=line.get_color())
    if metric in BOUNDED:
        ax.set_ylim(min(0.0, min(values) - 0.05), 1.0)
    elif min(values) >= 0:
        ax.set_ylim(0, max(values) * 1.3 or 1.0)


def learning_curves(history: list[dict], metrics: list[str], selected_epoch: int | None = None,
                    labels: dict[str, str] | None = None) -> Figure:
    """One panel per metric, one line per ``history["client"]`` value, x = ``"epoch"``.

    Rows lacking a metric, or holding ``None``/NaN for it, are skipped, so training-only
    and validation rows can share one history list. ``selected_epoch`` (the epoch whose
    model was tested) is drawn as a dashed vertical line in every panel. The x axis spans
    the epochs with half an epoch either side, so a run of one epoch is readable too (its
    values are written beside the points).

    Args:
        history: rows with ``"epoch"``, optionally ``"client"``, and metric values.
        metrics: history keys to draw, one panel each, in order.
        selected_epoch: the tested epoch (1-based), or ``None``.
        labels: panel titles that replace :func:`metric_label` (e.g. HD95 with its unit).
    """
    labels = labels or {}
    epochs = sorted({r["epoch"] for r in history if is_finite(r.get("epoch"))})
    metrics = list(metrics)
    rows, cols = grid_shape(len(metrics), 3)
    fig = Figure(figsize=(4.6 * cols, 3.3 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    clients = list(dict.fromkeys(str(r.get("client", "all")) for r in history))
    for ax, metric in zip(axes, metrics):
        drawn = False
        firsts = []
        for i, client in enumerate(clients):
            points = sorted(
                (r["epoch"], float(r[metric]))
                for r in history
                if str(r.get("client", "all")) == client and "epoch" in r and is_finite(r.get(metric))
            )
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, color=f"C{i % 10}", marker="o" if len(xs) < 30 else None,
                        markersize=7 if len(xs) == 1 else 3.5, linewidth=1.6, label=client)
                firsts.append(ys[0])
                drawn = True
        ax.set_title(labels.get(metric) or metric_label(metric), fontsize=11)
        ax.set_xlabel("epoch")
        if drawn:
            ax.grid(alpha=0.3)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)
            if len(epochs) == 1:
                ax.set_xticks(epochs)
                _one_epoch_axes(ax, metric, epochs[0], firsts)
            if selected_epoch:
                ax.axvline(selected_epoch, color="#555", linestyle="--", linewidth=1.1, zorder=0)
        else:
            mark_empty(ax)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    # one legend for all panels: colours are per client everywhere
    handles = [Line2D([], [], color=f"C{i % 10}", marker="o", markersize=4, label=c) for i, c in enumerate(clients)] \
        if len(clients) > 1 else []
    if selected_epoch:
        handles.append(Line2D([], [], color="#555", linestyle="--", label=f"epoch {selected_epoch}: model tested"))
    if handles:
        fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 8), frameon=False, fontsize=9)
    return fig
