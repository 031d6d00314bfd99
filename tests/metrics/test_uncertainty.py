"""Patient-level bootstrap intervals (medsplit.uncertainty)."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from medsplit.metrics import ClassificationMetrics, SegmentationMetrics
from medsplit.uncertainty import (
    _auc_binary,
    classification_intervals,
    format_interval,
    patient_resamples,
    segmentation_intervals,
    test_intervals,
)


def test_rank_auc_equals_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    score = np.round(rng.random(300) + 0.3 * y, 1)  # rounding makes many ties
    assert _auc_binary(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert _auc_binary(np.zeros(5, int), np.arange(5.0)) is None


def test_resamples_draw_whole_patients():
    patients = ["a", "a", "a", "b", "c", "c"]
    for rows in patient_resamples(patients, 50, seed=1):
        drawn = [patients[r] for r in rows]
        # every draw of a patient brings all its rows: counts are multiples of its size
        assert drawn.count("a") % 3 == 0 and drawn.count("c") % 2 == 0
        assert len(set(rows.tolist()) & {0, 1, 2}) in (0, 3)


def _scores(n, rng):
    y = rng.integers(0, 2, n)
    p1 = np.clip(0.5 + 0.25 * (2 * y - 1) + rng.normal(0, 0.3, n), 0.001, 0.999)
    return y, np.stack([1 - p1, p1], axis=1)


def test_patient_level_interval_is_wider_than_counting_images_as_independent():
    """Four images per patient carry the information of one: resampling images would give an
    interval about half as wide as the honest patient-level one."""
    rng = np.random.default_rng(3)
    y, probs = _scores(60, rng)
    y4, probs4 = np.repeat(y, 4), np.repeat(probs, 4, axis=0)
    patients = np.repeat([f"p{i}" for i in range(60)], 4)
    by_patient = classification_intervals(y4, probs4, patients, n_resamples=400, seed=0)
    by_image = classification_intervals(y4, probs4, [str(i) for i in range(240)], n_resamples=400, seed=0)
    width = lambda r: r["auc"]["high"] - r["auc"]["low"]
    assert width(by_patient) > 1.6 * width(by_image)
    assert by_patient["n_patients"] == 60 and by_patient["n_images"] == 240
    for name in ("auc", "sensitivity", "specificity"):
        iv = by_patient[name]
        assert iv["low"] <= iv["estimate"] <= iv["high"]


def test_intervals_from_aggregated_metrics_keep_the_runs_estimates():
    rng = np.random.default_rng(5)
    y, probs = _scores(80, rng)
    metric = ClassificationMetrics(2, ["no", "yes"], inputs="probabilities")
    metric.update(torch.tensor(probs), torch.tensor(y), ids=[f"img{i}" for i in range(80)])
    test = metric.aggregate()
    assert test["per_sample"]["ids"][:2] == ["img0", "img1"]
    out = test_intervals(test, {f"img{i}": f"pat{i // 2}" for i in range(80)}, n_resamples=200)
    assert out["n_patients"] == 40
    assert out["auc"]["estimate"] == test["auc"]
    assert out["sensitivity"]["estimate"] == test["sensitivity"]
    assert out["auc"]["low"] < test["auc"] < out["auc"]["high"]
    assert format_interval(out["auc"]).count("\u2013") == 1
    assert format_interval(None) == "\u2014"


def test_multiclass_and_segmentation_intervals():
    rng = np.random.default_rng(7)
    y = np.repeat([0, 1, 2], 20)
    logits = rng.normal(0, 1, (60, 3)) + 2 * np.eye(3)[y]
    metric = ClassificationMetrics(3)
    metric.update(torch.tensor(logits), torch.tensor(y))
    out = test_intervals(metric.aggregate(), n_resamples=100)
    assert 0.5 < out["auc"]["low"] < out["auc"]["high"] <= 1.0

    seg = SegmentationMetrics()
    masks = torch.zeros(6, 1, 8, 8)
    masks[:, :, 2:6, 2:6] = 1
    logits = torch.where(masks > 0, 5.0, -5.0)
    logits[3:, :, 2:4, 2:6] = -5.0  # half the images miss half the mask
    seg.update(logits, masks, ids=[f"s{i}" for i in range(6)])
    result = seg.aggregate()
    out = test_intervals(result, n_resamples=200)
    assert out["dice"]["estimate"] == pytest.approx(result["dice"]["mean"])
    assert out["dice"]["low"] < out["dice"]["estimate"] < out["dice"]["high"]
    with pytest.raises(ValueError, match="one patient per image"):
        segmentation_intervals([0.9, 0.8], ["a"])
    assert test_intervals({"accuracy": 0.5}) is None
