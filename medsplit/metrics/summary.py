"""JSON-safe summaries shared by the metrics: a float or ``None``, and mean/std/median/min/max
over the finite values with a count of those left out (JSON has no NaN or infinity)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def finite_or_none(value: float | None) -> float | None:
    """``float(value)`` when finite, else ``None`` (JSON has no NaN or infinity).

    Args:
        value: a number or ``None``.
    """
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def summarise(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean, std (population, ddof=0), median, min, max over the finite values.

    ``n`` counts the values used; ``n_excluded`` counts the ``None``/non-finite ones left
    out, so a mean over fewer images than expected is visible in the output.

    Args:
        values: per-image (or per-class) scores; ``None`` and non-finite ones are left out.
    """
    finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    out: dict[str, Any] = {"n": int(finite.size), "n_excluded": int(len(values) - finite.size)}
    if finite.size:
        out.update(
            mean=float(finite.mean()),
            std=float(finite.std()),
            median=float(np.median(finite)),
            min=float(finite.min()),
            max=float(finite.max()),
        )
    else:
        out.update(mean=None, std=None, median=None, min=None, max=None)
    return out

