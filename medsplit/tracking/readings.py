"""What a tracker logs, read once from the config, the history and the run record, so every
backend logs the same names and values."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

__all__ = ["epoch_scalars", "final_scalars", "finite_number", "overlay_image", "run_params", "tracked_images"]


def finite_number(value: Any) -> float | None:
    """``value`` as a float when it is a finite real number (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def run_params(config: dict, prefix: str = "") -> dict[str, Any]:
    """The resolved config as flat ``section.key`` params: numbers and booleans as they are,
    everything else (strings, lists, ``None``) as text, since trackers' param tables hold scalars.

    Args:
        config: ``Config.to_dict()``.
        prefix: prepended to every key (used when recursing).
    """
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(run_params(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = str(value)
    return out


def epoch_scalars(history: list[dict], epoch: int) -> dict[str, float]:
    """``{"<metric>/<client>": value}`` for the history rows of ``epoch`` (1-based): training loss per
    client, validation metrics, learning rate and seconds under ``all``. Missing or non-finite values
    are left out."""
    out = {}
    for row in history:
        if row.get("epoch") != epoch:
            continue
        for key, value in row.items():
            if key in ("epoch", "client"):
                continue
            number = finite_number(value)
            if number is not None:
                out[f"{key}/{row.get('client', 'all')}"] = number
    return out


def final_scalars(result: dict) -> dict[str, float]:
    """``{"test/<metric>": value}`` for the tested model: every number of ``result["test"]`` (a
    segmentation summary contributes its mean), the test loss, and for each metric with a 95%
    interval in ``result["test_intervals"]`` its ``_ci_low`` and ``_ci_high``."""
    out = {}
    test = result.get("test") or {}
    for key, value in test.items():
        number = finite_number(value.get("mean")) if isinstance(value, dict) else finite_number(value)
        if number is not None:
            out[f"test/{key}"] = number
    loss = finite_number(result.get("test_loss"))
    if loss is not None:
        out["test/loss"] = loss
    for key, interval in (result.get("test_intervals") or {}).items():
        if isinstance(interval, dict):
            for end in ("low", "high"):
                number = finite_number(interval.get(end))
                if number is not None:
                    out[f"test/{key}_ci_{end}"] = number
    return out


def _safe(text: str) -> str:
    """``"best: case 7 Dice 0.950"`` -> ``"best_case_7_Dice_0.950"``: a name MLflow accepts as a file name."""
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_.-]", "_", text)).strip("_")


def _outline(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` with a background 4-neighbour (or on the image border)."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def _grey_to_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3 and image.shape[0] in (1, 3):  # CHW -> HWC
        image = np.moveaxis(image, 0, -1)
    low, high = float(image.min()), float(image.max())
    scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
    rgb = np.repeat(scaled[..., None], 3, axis=-1) if scaled.ndim == 2 else scaled
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    return (rgb * 255).round().astype(np.uint8)


def overlay_image(image: np.ndarray, pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """One test image (HxW) as HxWx3 uint8 with the true outline in green and the predicted one
    in red (the report's colours); where both coincide the pixel is yellow."""
    rgb = _grey_to_rgb(image)
    true_edge, pred_edge = _outline(np.asarray(true, bool)), _outline(np.asarray(pred, bool))
    rgb[true_edge] = (0, 200, 0)
    rgb[pred_edge] = (230, 30, 30)
    rgb[true_edge & pred_edge] = (240, 220, 0)
    return rgb


def _row(images: list[np.ndarray]) -> np.ndarray:
    """Images of one height side by side, 2 white pixels apart."""
    height = max(i.shape[0] for i in images)
    gap = np.full((height, 2, 3), 255, np.uint8)
    parts = []
    for image in images:
        padded = np.full((height, image.shape[1], 3), 255, np.uint8)
        padded[: image.shape[0]] = image
        parts += [padded, gap]
    return np.concatenate(parts[:-1], axis=1)


def tracked_images(images: dict | None) -> dict[str, np.ndarray]:
    """Name -> HxWx3 uint8 image to log.

    Accepts what a task's ``report_examples`` returns (``images``, ``pred``, ``true``, ``titles``:
    each test example becomes an overlay named ``test/<title>``), or an attack's reconstructions
    ``{"originals": (N, [C,] H, W), "recon": {"<defence>/<strength>/<seed>": (N, ...)}}`` (one image
    per setting: the originals above their reconstructions), or ready images ``{name: HxW[x3]}``.
    """
    if not images:
        return {}
    if all(k in images for k in ("images", "pred", "true")):
        titles = list(images.get("titles") or [])
        out = {}
        for i, (image, pred, true) in enumerate(zip(images["images"], images["pred"], images["true"])):
            title = str(titles[i]) if i < len(titles) else f"example{i}"
            out[f"test/{i:02d}_{_safe(title)}"] = overlay_image(np.asarray(image), np.asarray(pred), np.asarray(true))
        return out
    if "originals" in images and isinstance(images.get("recon"), dict):
        originals = [_grey_to_rgb(o) for o in np.asarray(images["originals"])]
        out = {}
        for name, recon in images["recon"].items():
            recon = [_grey_to_rgb(r) for r in np.asarray(recon)]
            n = min(len(originals), len(recon))
            top, bottom = _row(originals[:n]), _row(recon[:n])
            gap = np.full((2, top.shape[1], 3), 255, np.uint8)
            out[f"reconstruction/{name}"] = np.concatenate([top, gap, bottom], axis=0)
        return out
    return {str(name): _as_rgb(np.asarray(image)) for name, image in images.items()}


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """An HxWx3 uint8 image as it is; anything else rescaled to 0-255 grey or colour."""
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3:
        return image
    return _grey_to_rgb(image)
