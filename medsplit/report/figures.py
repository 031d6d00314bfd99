"""Figures for medsplit reports.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot, so no
global figure state is touched, nothing needs a display, and nothing leaks when a sweep
draws hundreds of figures; the figure is rasterised with the Agg renderer when a
:class:`~medsplit.report.html.Report` embeds it (``report.figure(fig)``) or when you call
``fig.savefig(...)`` yourself.

Inputs are plain Python / NumPy values as they appear in run records (see
:mod:`medsplit.report.run_report`), so the functions also work on records read back from
JSON.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

__all__ = [
    "learning_curves",
    "roc_figure",
    "confusion_figure",
    "bytes_figure",
    "overlay_grid",
    "reconstruction_grid",
    "line_plot",
    "scatter_frontier",
    "step_traffic_figure",
    "metric_label",
    "METRIC_LABELS",
]

#: Human-readable axis labels for history keys.
METRIC_LABELS = {
    "train_loss": "training loss",
    "val_loss": "validation loss",
    "val_auc": "validation AUC",
    "val_accuracy": "validation accuracy",
    "val_kappa": "validation kappa",
    "val_dice": "validation Dice",
    "val_jaccard": "validation Jaccard",
    "val_hd95": "validation HD95 (pixels)",
    "val_sensitivity": "validation sensitivity",
    "val_specificity": "validation specificity",
    "lr": "learning rate",
    "seconds": "seconds per epoch",
}


def metric_label(key: str) -> str:
    """``"val_hd95"`` -> ``"validation HD95 (pixels)"``; unknown keys lose their prefix underscore."""
    if key in METRIC_LABELS:
        return METRIC_LABELS[key]
    for prefix, word in (("val_", "validation "), ("train_", "training "), ("test_", "test ")):
        if key.startswith(prefix):
            return word + key[len(prefix):].replace("_", " ")
    return key.replace("_", " ")

_TRUE_COLOUR = "#22c55e"  # green
_PRED_COLOUR = "#ef4444"  # red


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float, np.floating, np.integer)) and math.isfinite(float(value))


def _grid(n: int, max_cols: int) -> tuple[int, int]:
    cols = max(1, min(n, max_cols))
    return math.ceil(max(n, 1) / cols), cols


def _empty(ax: Any, message: str = "no data") -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#777")
    ax.set_xticks([])
    ax.set_yticks([])


def learning_curves(history: list[dict], metrics: list[str], selected_epoch: int | None = None) -> Figure:
    """One panel per metric, one line per ``history["client"]`` value, x = ``"epoch"``.

    Rows lacking a metric, or holding ``None``/NaN for it, are skipped, so training-only
    and validation rows can share one history list. ``selected_epoch`` (the epoch whose
    model was tested) is drawn as a dashed vertical line in every panel.
    """
    metrics = list(metrics)
    rows, cols = _grid(len(metrics), 3)
    fig = Figure(figsize=(4.6 * cols, 3.3 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    clients = list(dict.fromkeys(str(r.get("client", "all")) for r in history))
    for ax, metric in zip(axes, metrics):
        drawn = False
        for i, client in enumerate(clients):
            points = sorted(
                (r["epoch"], float(r[metric]))
                for r in history
                if str(r.get("client", "all")) == client and "epoch" in r and _finite(r.get(metric))
            )
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, color=f"C{i % 10}", marker="o" if len(xs) < 30 else None, markersize=3.5, linewidth=1.6, label=client)
                drawn = True
        ax.set_title(metric_label(metric), fontsize=11)
        ax.set_xlabel("epoch")
        if drawn:
            ax.grid(alpha=0.3)
            ax.xaxis.get_major_locator().set_params(integer=True)
            if selected_epoch:
                ax.axvline(selected_epoch, color="#555", linestyle="--", linewidth=1.1, zorder=0)
        else:
            _empty(ax)
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


def roc_figure(roc: Mapping[str, Any], auc: Any = None) -> Figure:
    """ROC curve(s) from :meth:`ClassificationMetrics.aggregate`'s ``roc`` entry.

    ``roc`` is either binary (``{"fpr": [...], "tpr": [...]}``) or per class
    (``{name: {"fpr", "tpr", "auc"}}``); ``auc`` is the headline (macro) AUC or ``None``.
    """
    fig = Figure(figsize=(5.0, 4.6), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="#999", linewidth=1, label="chance")
    auc_text = f"{float(auc):.3f}" if _finite(auc) else "undefined"
    if "fpr" in roc and "tpr" in roc:
        ax.plot(roc["fpr"], roc["tpr"], linewidth=2, color="#1f5fa8", label=f"AUC = {auc_text}")
        title = "ROC curve"
    else:
        for name, curve in roc.items():
            label = f"{name} (AUC {curve['auc']:.3f})" if _finite(curve.get("auc")) else str(name)
            ax.plot(curve["fpr"], curve["tpr"], linewidth=1.6, label=label)
        title = f"One-vs-rest ROC curves (macro AUC {auc_text})"
        if not roc:
            _empty(ax, "ROC undefined")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def confusion_figure(confusion: Sequence[Sequence[int]], class_names: Sequence[str] | None = None) -> Figure:
    """Confusion matrix (rows = true class, columns = predicted).

    Cells show counts and the row percentage; the colour is the row-normalised fraction so a
    rare class's errors are as visible as a common class's.
    """
    cm = np.asarray(confusion, dtype=np.int64)
    k = cm.shape[0]
    names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(k)]
    totals = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, totals, out=np.zeros(cm.shape, dtype=float), where=totals > 0)
    size = 2.2 + 0.75 * k
    fig = Figure(figsize=(size + 0.8, size), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            colour = "white" if frac[i, j] > 0.55 else "#1d2433"
            ax.text(j, i, f"{cm[i, j]}\n{100 * frac[i, j]:.0f}%", ha="center", va="center", color=colour, fontsize=9)
    ax.set_xticks(range(k), names, rotation=30 if max(map(len, names)) > 6 else 0, ha="right" if max(map(len, names)) > 6 else "center")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (colour: fraction of the true class)", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return fig


def bytes_figure(bytes_rows: list[dict]) -> Figure:
    """Megabytes (10^6 bytes) per epoch for every ``link`` + ``kind`` pair.

    Grouped bars for up to 12 epochs, lines (one per link+kind) beyond that.
    """
    totals: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for row in bytes_rows:
        link, kind = str(row.get("link", "?")), str(row.get("kind", ""))
        name = link if not kind or kind[:4] in link else f"{link} ({kind})"  # not "weights weights"
        totals[name][int(row.get("epoch", 0))] += float(row.get("bytes", 0)) / 1e6
    series = sorted(totals)
    epochs = sorted({e for s in totals.values() for e in s})
    width = min(12.0, max(6.5, 4.0 + 0.3 * len(epochs) * max(1, len(series)))) if len(epochs) <= 12 else 9.0
    fig = Figure(figsize=(width, 4.0), layout="constrained")
    ax = fig.add_subplot()
    if not series:
        _empty(ax)
        return fig
    if len(epochs) <= 12:
        width = 0.8 / len(series)
        x = np.arange(len(epochs))
        for i, name in enumerate(series):
            ax.bar(x + (i - (len(series) - 1) / 2) * width, [totals[name].get(e, 0.0) for e in epochs], width, label=name)
        ax.set_xticks(x, [str(e) for e in epochs])
    else:
        for name in series:
            ax.plot(epochs, [totals[name].get(e, 0.0) for e in epochs], marker=".", label=name)
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel("MB (10^6 bytes)")
    ax.set_title("Traffic across the cut per epoch", fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, ncols=2 if len(series) > 16 else 1)
    return fig


#: Link speeds the traffic figure converts bytes into seconds for (bits per second).
LINK_SPEEDS = {"100 Mbit/s": 100e6, "1 Gbit/s": 1e9}

def step_traffic_figure(per_bar: Mapping[str, Mapping[str, float]], unit: str = "per training step") -> Figure:
    """Bytes per training step as horizontal stacked bars, one bar per direction (e.g. hospital
    -> server), one segment per link and kind of tensor, with the time the bar's bytes take on
    a 100 Mbit/s and a 1 Gbit/s link written beside it (bandwidth only: no latency, no
    protocol overhead).

    Args:
        per_bar: ``{bar: {segment: bytes}}``, e.g.
            ``{"hospital → server": {"client → server (activation)": 6.4e5, "labels": 256}}``.
        unit: what one bar stands for, for the axis label.
    """
    bars = list(per_bar)
    segments = list(dict.fromkeys(seg for v in per_bar.values() for seg in v))
    fig = Figure(figsize=(10.5, 0.7 * max(len(bars), 2) + 1.2 + 0.22 * ((len(segments) + 2) // 3)), layout="constrained")
    ax = fig.add_subplot()
    if not bars:
        _empty(ax)
        return fig
    totals = [sum(per_bar[bar].values()) for bar in bars]
    scale, scale_name = (1e6, "MB") if max(totals) >= 1e6 else (1e3, "kB")
    y = np.arange(len(bars))[::-1]
    left = np.zeros(len(bars))
    for i, seg in enumerate(segments):
        widths = np.array([per_bar[bar].get(seg, 0.0) for bar in bars]) / scale
        ax.barh(y, widths, left=left, height=0.55, color=f"C{i % 10}", label=seg)
        left += widths
    for yi, total in zip(y, totals):
        times = ", ".join(f"{_seconds(total * 8 / bps)} at {name}" for name, bps in LINK_SPEEDS.items())
        ax.text(total / scale, yi, f"  {total / scale:,.2f} {scale_name}: {times}", va="center", fontsize=9)
    ax.set_yticks(y, bars)
    ax.set_ylim(-0.6, len(bars) - 0.4)
    ax.set_xlim(0, max(totals) / scale * 1.9)  # room for the text beside the longest bar
    ax.set_xlabel(f"{scale_name} {unit} (1 {scale_name} = 10^{6 if scale_name == 'MB' else 3} bytes)")
    ax.grid(axis="x", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=min(len(segments), 3), fontsize=8.5, frameon=False)
    return fig


def _seconds(s: float) -> str:
    if s >= 1:
        return f"{s:,.1f} s"
    return f"{s * 1e3:,.1f} ms" if s >= 1e-3 else f"{s * 1e6:,.0f} \u00b5s"


def _contour(ax: Any, mask: np.ndarray, colour: str, linestyle: str = "solid", linewidth: float = 1.4) -> None:
    """Outline a boolean mask; constant masks have no boundary and are skipped."""
    mask = np.asarray(mask, dtype=bool)
    if mask.any() and not mask.all():
        ax.contour(mask.astype(float), levels=[0.5], colors=[colour], linewidths=linewidth, linestyles=linestyle)


def overlay_grid(
    images: np.ndarray,
    pred_masks: np.ndarray,
    true_masks: np.ndarray,
    titles: Sequence[str] | None = None,
    max_cols: int = 4,
) -> Figure:
    """Greyscale images with the true outline in green and the predicted outline in red (dashed).

    Args:
        images: ``(N, H, W)`` floats in [0, 1].
        pred_masks: ``(N, H, W)`` booleans (thresholded predictions).
        true_masks: ``(N, H, W)`` booleans (ground truth).
        titles: one title per image, e.g. ``"img_012  Dice 0.953"``.
        max_cols: images per row.
    """
    images = np.asarray(images, dtype=float)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    pred_masks = np.asarray(pred_masks, dtype=bool).reshape(images.shape)
    true_masks = np.asarray(true_masks, dtype=bool).reshape(images.shape)
    n = images.shape[0]
    rows, cols = _grid(n, max_cols)
    fig = Figure(figsize=(2.9 * cols, 3.0 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i >= n:
            continue
        ax.imshow(np.clip(images[i], 0, 1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        # Prediction dashed on top of the truth, so where they agree both colours show.
        _contour(ax, true_masks[i], _TRUE_COLOUR, linewidth=1.8)
        _contour(ax, pred_masks[i], _PRED_COLOUR, linestyle="dashed", linewidth=1.3)
        if titles is not None and i < len(titles):
            ax.set_title(str(titles[i]), fontsize=9)
    handles = [
        Line2D([], [], color=_TRUE_COLOUR, linewidth=1.8, label="ground truth"),
        Line2D([], [], color=_PRED_COLOUR, linewidth=1.3, linestyle="dashed", label="prediction"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)
    return fig


def _as_display(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """(C, H, W) in [0, 1] -> what ``imshow`` wants, and the colour map for one channel."""
    image = np.clip(np.asarray(image, dtype=float), 0, 1)
    if image.ndim == 2:
        return image, "gray"
    if image.shape[0] == 1:
        return image[0], "gray"
    if image.shape[0] == 3:
        return np.transpose(image, (1, 2, 0)), None
    raise ValueError(f"images must have 1 or 3 channels, got shape {image.shape}.")


def reconstruction_grid(
    originals: np.ndarray,
    rows: Mapping[str, np.ndarray],
    titles: Sequence[str] | None = None,
) -> Figure:
    """Originals on the first row, then one row per named reconstruction.

    Args:
        originals: ``(N, C, H, W)`` in [0, 1], C = 1 or 3.
        rows: ``{name: array of the same shape}``, e.g. ``{"attacker, no defence": ...}``.
        titles: one column title per image.
    """
    originals = np.asarray(originals)
    named = [("original", originals)] + [(str(k), np.asarray(v)) for k, v in rows.items()]
    for name, arr in named:
        if arr.shape != originals.shape:
            raise ValueError(f"row {name!r} has shape {arr.shape}, originals have {originals.shape}.")
    n = originals.shape[0]
    fig = Figure(figsize=(1.9 * n + 1.2, 2.0 * len(named)), layout="constrained")
    axes = fig.subplots(len(named), max(n, 1), squeeze=False)
    for r, (name, arr) in enumerate(named):
        for c in range(n):
            ax = axes[r, c]
            image, cmap = _as_display(arr[c])
            ax.imshow(image, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if r == 0 and titles is not None and c < len(titles):
                ax.set_title(str(titles[c]), fontsize=9)
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
    return fig


def line_plot(
    xs: Sequence[float],
    series: Mapping[str, Sequence[float]],
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
    yerr: Mapping[str, Sequence[float]] | None = None,
) -> Figure:
    """One line per named series over shared ``xs``; optional error bars per series.

    ``None``/NaN values leave gaps. ``yerr`` maps a series name to symmetric errors (e.g. a
    standard deviation over seeds).
    """
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    xs_arr = np.asarray(xs, dtype=float)
    for name, ys in series.items():
        y = np.array([float(v) if _finite(v) else np.nan for v in ys], dtype=float)
        if yerr is not None and name in yerr:
            err = np.array([float(v) if _finite(v) else np.nan for v in yerr[name]], dtype=float)
            ax.errorbar(xs_arr, y, yerr=err, marker="o", markersize=4, capsize=3, linewidth=1.6, label=name)
        else:
            ax.plot(xs_arr, y, marker="o", markersize=4, linewidth=1.6, label=name)
    if logx:
        ax.set_xscale("log")
    _finish_axes(ax, xlabel, ylabel, title, legend=bool(series))
    return fig


def _pareto(points: list[tuple[float, float]], x_better: str, y_better: str) -> list[tuple[float, float]]:
    """Points not dominated by any other, sorted by x."""
    sx = 1 if x_better == "lower" else -1
    sy = 1 if y_better == "lower" else -1
    front, best = [], math.inf
    for x, y in sorted(points, key=lambda p: (sx * p[0], sy * p[1])):
        if sy * y < best:
            front.append((x, y))
            best = sy * y
    return sorted(front)


def scatter_frontier(
    points: list[dict],
    x: str,
    y: str,
    label_key: str,
    x_better: str = "lower",
    y_better: str = "higher",
    annotate_key: str | None = None,
    title: str = "",
) -> Figure:
    """Trade-off scatter (e.g. attack success vs. utility) with the Pareto frontier dashed.

    Points sharing a ``label_key`` value (e.g. one defence at several strengths) get one
    colour and are joined in x order; ``annotate_key`` writes a value (e.g. the strength)
    beside each point.

    Args:
        points: dicts holding at least ``x``, ``y`` and ``label_key``.
        x, y: keys of the two axes.
        label_key: key whose value groups points into a legend entry.
        x_better, y_better: ``"lower"`` or ``"higher"``; which direction is better on each axis.
        annotate_key: optional key to print next to each point.
        title: optional title.
    """
    for name, value in (("x_better", x_better), ("y_better", y_better)):
        if value not in ("lower", "higher"):
            raise ValueError(f"{name} must be 'lower' or 'higher', got {value!r}.")
    fig = Figure(figsize=(6.6, 4.6), layout="constrained")
    ax = fig.add_subplot()
    usable = [p for p in points if _finite(p.get(x)) and _finite(p.get(y))]
    groups: dict[str, list[dict]] = defaultdict(list)
    for p in usable:
        groups[str(p.get(label_key, "?"))].append(p)
    for name, members in groups.items():
        members = sorted(members, key=lambda p: float(p[x]))
        xs = [float(p[x]) for p in members]
        ys = [float(p[y]) for p in members]
        ax.plot(xs, ys, marker="o", markersize=6, linewidth=1.0 if len(members) > 1 else 0, label=name)
        if annotate_key is not None:
            for p, px, py in zip(members, xs, ys):
                if annotate_key in p:
                    ax.annotate(str(p[annotate_key]), (px, py), textcoords="offset points", xytext=(4, 4), fontsize=7)
    front = _pareto([(float(p[x]), float(p[y])) for p in usable], x_better, y_better)
    if len(front) > 1:
        fx, fy = zip(*front)
        ax.plot(fx, fy, linestyle="--", color="#555", linewidth=1.2, label="Pareto frontier", zorder=0)
    if not usable:
        _empty(ax)
    _finish_axes(ax, f"{x} ({x_better} is better)", f"{y} ({y_better} is better)", title, legend=bool(usable))
    return fig


def _finish_axes(ax, xlabel: str, ylabel: str, title: str | None, legend: bool) -> None:
    """Labels, optional title, a light grid and (when there are lines) the legend."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=8)
