"""Image grids: segmentation outlines over test images, and attack reconstructions beside originals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from medsplit.report.figures.axes import grid_shape

__all__ = ["overlay_grid", "reconstruction_grid"]

_TRUE_COLOUR = "#22c55e"  # green
_PRED_COLOUR = "#ef4444"  # red


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
    rows, cols = grid_shape(n, max_cols)
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
