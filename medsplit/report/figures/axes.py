"""Small helpers every medsplit figure shares: finite-value test, panel grid, empty panel, axis finish."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["finish_axes", "grid_shape", "is_finite", "mark_empty"]


def is_finite(value: Any) -> bool:
    """Whether ``value`` is a real number that can be drawn (not ``None``, NaN or infinite)."""
    return isinstance(value, (int, float, np.floating, np.integer)) and math.isfinite(float(value))


def grid_shape(n: int, max_cols: int) -> tuple[int, int]:
    """(rows, columns) of a panel grid holding ``n`` panels, at most ``max_cols`` per row.

    Args:
        n: number of panels.
        max_cols: most panels in one row.
    """
    cols = max(1, min(n, max_cols))
    return math.ceil(max(n, 1) / cols), cols


def mark_empty(ax: Any, message: str = "no data") -> None:
    """Write ``message`` in the middle of an axes that has nothing to draw, without ticks.

    Args:
        ax: the matplotlib axes.
        message: the text shown.
    """
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#777")
    ax.set_xticks([])
    ax.set_yticks([])


def finish_axes(ax: Any, xlabel: str, ylabel: str, title: str | None, legend: bool) -> None:
    """Labels, optional title, a light grid and (when there are lines) the legend.

    Args:
        ax: the matplotlib axes.
        xlabel, ylabel: axis labels.
        title: title, or ``None``/empty for none.
        legend: whether to draw the legend.
    """
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=8)
