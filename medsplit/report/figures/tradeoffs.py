"""Sweep and attack plots: lines over a swept value, and trade-off scatters with their Pareto frontier."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from medsplit.report.figures.axes import finish_axes, is_finite, mark_empty

__all__ = ["line_plot", "scatter_frontier"]


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

    Args:
        xs: the shared x values.
        series: ``{name: y values}``, one line each.
        xlabel, ylabel: axis labels.
        title: optional title.
        logx: logarithmic x axis.
        yerr: optional ``{name: symmetric errors}``.
    """
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    xs_arr = np.asarray(xs, dtype=float)
    for name, ys in series.items():
        y = np.array([float(v) if is_finite(v) else np.nan for v in ys], dtype=float)
        if yerr is not None and name in yerr:
            err = np.array([float(v) if is_finite(v) else np.nan for v in yerr[name]], dtype=float)
            ax.errorbar(xs_arr, y, yerr=err, marker="o", markersize=4, capsize=3, linewidth=1.6, label=name)
        else:
            ax.plot(xs_arr, y, marker="o", markersize=4, linewidth=1.6, label=name)
    if logx:
        ax.set_xscale("log")
    finish_axes(ax, xlabel, ylabel, title, legend=bool(series))
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
    usable = [p for p in points if is_finite(p.get(x)) and is_finite(p.get(y))]
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
        mark_empty(ax)
    finish_axes(ax, f"{x} ({x_better} is better)", f"{y} ({y_better} is better)", title, legend=bool(usable))
    return fig
