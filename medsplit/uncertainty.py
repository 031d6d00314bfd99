"""95% bootstrap intervals for test metrics, resampling patients (not images) where patients are known.

A test set of 124 images with 29 positives pins an AUC down only to a few hundredths; a
bare ``AUC 0.893`` hides that. :func:`test_intervals` draws ``n_resamples`` bootstrap test
sets by sampling *patients* with replacement (every image of a drawn patient comes along,
so the two eyes of one patient, or several X-rays of one case, are never treated as
independent evidence), recomputes each metric on every resample, and reports the 2.5th and
97.5th percentiles (the percentile bootstrap).

The unit resampled is stated, not assumed: where every unit holds one image (RetinaMNIST sets
patient = image; a run without a patient map) the bootstrap is over *images*, and the output
says so (``unit``, ``method``, :func:`resampling_text`); only where some patient has several
images is it over patients.

What an interval covers: the variation from which patients (or images) happened to land in the
test set, for this one trained model. It does not cover training randomness (seed, batch order,
partition); sweeps show that separately as the spread over seeds.

Metric definitions match :mod:`medsplit.metrics`: binary AUC of the class-1 probability,
multi-class macro one-vs-rest AUC; sensitivity/specificity of the argmax decision (binary:
of class 1; multi-class: macro over classes); Dice as the mean of per-image Dice. A
resample in which a metric is undefined (e.g. no positive patient drawn) is left out of
that metric's percentiles and counted in ``undefined``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["test_intervals", "classification_intervals", "segmentation_intervals", "patient_resamples",
           "format_interval", "resampling_text", "METHOD", "METHOD_IMAGES", "DEFAULT_RESAMPLES"]

DEFAULT_RESAMPLES = 2000
LEVEL = 0.95
METHOD = "percentile bootstrap over patients"
METHOD_IMAGES = "percentile bootstrap over images"


def patient_resamples(patients: Sequence[str], n_resamples: int, seed: int) -> list[np.ndarray]:
    """Row indices of ``n_resamples`` bootstrap test sets, each drawn as patients with replacement.

    Args:
        patients: the patient of every test row (rows of one patient move together).
        n_resamples: how many resampled test sets.
        seed: seed of the generator; the same arguments give the same resamples.
    """
    keys, unit = np.unique(np.asarray([str(p) for p in patients]), return_inverse=True)
    rows_of = [np.flatnonzero(unit == k) for k in range(len(keys))]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_resamples):
        drawn = rng.integers(0, len(keys), size=len(keys))
        out.append(np.concatenate([rows_of[k] for k in drawn]))
    return out


def _auc_binary(target: np.ndarray, score: np.ndarray) -> float | None:
    """ROC AUC by the Mann-Whitney rank sum (ties count one half), as scikit-learn computes it."""
    # scipy.stats takes a second to import: the light report modules use this module too
    from scipy.stats import rankdata

    n_pos = int(target.sum())
    n_neg = target.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(score)
    return float((ranks[target == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _classification_point(y: np.ndarray, probs: np.ndarray) -> dict[str, float | None]:
    k = probs.shape[1]
    pred = probs.argmax(axis=1)
    if k == 2:
        auc = _auc_binary((y == 1).astype(int), probs[:, 1])
    else:
        per_class = [_auc_binary((y == c).astype(int), probs[:, c]) for c in range(k)]
        auc = None if any(a is None for a in per_class) else float(np.mean(per_class))
    recall, spec = [], []
    for c in range(k):
        pos, neg = y == c, y != c
        recall.append(float((pred[pos] == c).mean()) if pos.any() else None)
        spec.append(float((pred[neg] != c).mean()) if neg.any() else None)
    if k == 2:
        sens, specificity = recall[1], spec[1]
    else:
        r = [v for v in recall if v is not None]
        s = [v for v in spec if v is not None]
        sens = float(np.mean(r)) if r else None
        specificity = float(np.mean(s)) if s else None
    return {"auc": auc, "sensitivity": sens, "specificity": specificity}


def _interval(estimate: float | None, draws: list[float | None]) -> dict[str, Any]:
    defined = np.array([d for d in draws if d is not None and math.isfinite(d)], dtype=np.float64)
    tail = (1 - LEVEL) / 2 * 100
    low, high = (float(np.percentile(defined, tail)), float(np.percentile(defined, 100 - tail))) if defined.size else (None, None)
    return {"estimate": estimate, "low": low, "high": high, "undefined": int(len(draws) - defined.size)}


def classification_intervals(labels: Sequence[int], probabilities: Sequence[Sequence[float]], patients: Sequence[str],
                             n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """Intervals for AUC, sensitivity and specificity.

    Args:
        labels: true class per test image.
        probabilities: class probabilities per test image (rows sum to one).
        patients: patient per test image.
        n_resamples: bootstrap resamples.
        seed: resampling seed.
    """
    y = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2 or len(probs) != len(y) or len(patients) != len(y):
        raise ValueError(f"need one probability row and one patient per label: {len(y)} labels, "
                         f"{len(probs)} probability rows, {len(patients)} patients")
    point = _classification_point(y, probs)
    draws = [_classification_point(y[rows], probs[rows]) for rows in patient_resamples(patients, n_resamples, seed)]
    out = {name: _interval(point[name], [d[name] for d in draws]) for name in point}
    return _with_method(out, patients, n_resamples, seed)


def segmentation_intervals(dice: Sequence[float], patients: Sequence[str], n_resamples: int = DEFAULT_RESAMPLES,
                           seed: int = 0) -> dict[str, Any]:
    """Interval for the mean per-image Dice.

    Args:
        dice: Dice of every test image.
        patients: patient per test image.
        n_resamples: bootstrap resamples.
        seed: resampling seed.
    """
    values = np.asarray(dice, dtype=np.float64)
    if len(patients) != len(values):
        raise ValueError(f"need one patient per image: {len(values)} Dice values, {len(patients)} patients")
    draws = [float(values[rows].mean()) for rows in patient_resamples(patients, n_resamples, seed)]
    out = {"dice": _interval(float(values.mean()), draws)}
    return _with_method(out, patients, n_resamples, seed)


def _with_method(out: dict, patients: Sequence[str], n_resamples: int, seed: int,
                 note: str | None = None) -> dict[str, Any]:
    """The interval's method and unit: over patients only where some patient has several images."""
    n_units = len(set(map(str, patients)))
    by_patient = n_units < len(patients)
    unit_note = note or ("all images of a drawn patient come along" if by_patient else
                         "each image is its own unit (one image per patient)")
    out.update({"level": LEVEL, "method": METHOD if by_patient else METHOD_IMAGES, "n_resamples": n_resamples,
                "seed": seed, "unit": "patient" if by_patient else "image", "unit_note": unit_note,
                "n_patients": n_units, "n_images": len(patients)})
    return out


def resampling_text(intervals: dict) -> str:
    """What was resampled, in words: ``"2000 bootstrap resamples of the 124 test images (each its own unit: ...)"``."""
    if intervals.get("unit") == "image":
        return (f"{intervals.get('n_resamples')} bootstrap resamples of the {intervals.get('n_images')} test images "
                f"({intervals.get('unit_note')})")
    return (f"{intervals.get('n_resamples')} bootstrap resamples of the {intervals.get('n_patients')} test patients "
            f"({intervals.get('n_images')} images; {intervals.get('unit_note', 'all images of a drawn patient come along')})")


def test_intervals(test: dict, patient_of: dict[str, str] | None = None, n_resamples: int = DEFAULT_RESAMPLES,
                   seed: int = 0) -> dict[str, Any] | None:
    """Intervals for a run's test metrics (``ClassificationMetrics`` or ``SegmentationMetrics`` output).

    Args:
        test: the aggregated test metrics; needs ``per_sample`` (classification) or
            ``per_image`` (segmentation) rows with ids.
        patient_of: image id -> patient; images missing from it count as their own unit (without a
            map the bootstrap is over images, and the result says so).
        n_resamples: bootstrap resamples.
        seed: resampling seed.

    Returns:
        ``{"auc": {"estimate", "low", "high", "undefined"}, ..., "method", "level", ...}``, or
        ``None`` when ``test`` holds no per-image rows to resample.
    """
    note = None if patient_of else "no patient map: each image is its own unit"
    patient_of = patient_of or {}
    if isinstance(test.get("per_sample"), dict):
        rows = test["per_sample"]
        ids = [str(i) for i in rows["ids"]]
        out = classification_intervals(rows["labels"], rows["probabilities"], [patient_of.get(i, i) for i in ids],
                                       n_resamples, seed)
        # The point estimates are the run's own (probabilities in per_sample are rounded).
        for name in ("auc", "sensitivity", "specificity"):
            if name in test:
                out[name]["estimate"] = test[name]
        return _with_method(out, [patient_of.get(i, i) for i in ids], n_resamples, seed, note)
    per_image = test.get("per_image")
    if per_image:
        ids = [str(r["id"]) for r in per_image]
        patients = [patient_of.get(i, i) for i in ids]
        return _with_method(segmentation_intervals([r["dice"] for r in per_image], patients, n_resamples, seed),
                            patients, n_resamples, seed, note)
    return None


test_intervals.__test__ = False  # a library function named test_*; keep pytest from collecting it


def format_interval(interval: dict | None, digits: int = 3) -> str:
    """``{"low": 0.81, "high": 0.93}`` -> ``"0.810-0.930"``; an em dash when undefined."""
    if not interval or interval.get("low") is None or interval.get("high") is None:
        return "\u2014"
    return f"{interval['low']:.{digits}f}\u2013{interval['high']:.{digits}f}"
