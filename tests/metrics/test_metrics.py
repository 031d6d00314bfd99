"""Metric wrappers against hand-computed values and scikit-learn."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from medsplit.metrics import ClassificationMetrics, SegmentationMetrics


def one_hot_logits(pred: list[int], num_classes: int, margin: float = 4.0) -> torch.Tensor:
    """Logits whose argmax is ``pred``."""
    logits = torch.zeros(len(pred), num_classes)
    logits[torch.arange(len(pred)), torch.tensor(pred)] = margin
    return logits


# -- classification -----------------------------------------------------------------------


def test_perfect_binary_classifier():
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    m = ClassificationMetrics(2, ["healthy", "referable"])
    m.update(one_hot_logits(labels.tolist(), 2), labels)
    r = m.aggregate()
    assert r["auc"] == pytest.approx(1.0)
    assert r["kappa"] == pytest.approx(1.0)
    assert r["accuracy"] == 1.0 and r["sensitivity"] == 1.0 and r["specificity"] == 1.0
    assert r["confusion"] == [[3, 0], [0, 3]]
    assert r["class_names"] == ["healthy", "referable"] and r["n"] == 6
    assert set(r["roc"]) == {"fpr", "tpr"}
    json.dumps(r, allow_nan=False)  # JSON-able, no NaN


def test_binary_known_confusion_matrix():
    # TP=3, FN=1, TN=4, FP=2
    labels = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    preds = [1, 1, 1, 0, 0, 0, 0, 0, 1, 1]
    m = ClassificationMetrics(2)
    m.update(one_hot_logits(preds, 2), torch.tensor(labels))
    r = m.aggregate()
    assert r["confusion"] == [[4, 2], [1, 3]]
    assert r["sensitivity"] == pytest.approx(3 / 4)
    assert r["specificity"] == pytest.approx(4 / 6)
    assert r["accuracy"] == pytest.approx(0.7)
    # p_o = 0.7, p_e = 0.4 * 0.5 + 0.6 * 0.5 = 0.5 -> kappa = 0.2 / 0.5
    assert r["kappa"] == pytest.approx(0.4)


def test_multiclass_macro_sensitivity_specificity_by_hand():
    # rows = true, cols = predicted
    cm = np.array([[2, 1, 0], [0, 3, 1], [1, 0, 2]])
    labels, preds = [], []
    for t in range(3):
        for p in range(3):
            labels += [t] * cm[t, p]
            preds += [p] * cm[t, p]
    m = ClassificationMetrics(3)
    m.update(one_hot_logits(preds, 3), torch.tensor(labels))
    r = m.aggregate()
    assert r["confusion"] == cm.tolist()
    recall = [2 / 3, 3 / 4, 2 / 3]
    # specificity_c = TN / (TN + FP); n = 10
    spec = [6 / 7, 5 / 6, 6 / 7]
    assert r["sensitivity"] == pytest.approx(np.mean(recall))
    assert r["specificity"] == pytest.approx(np.mean(spec))
    assert [c["sensitivity"] for c in r["per_class"]] == pytest.approx(recall)


def test_five_class_auc_and_kappa_match_sklearn():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 5, generator=g)
    labels = torch.randint(0, 5, (200,), generator=g)
    m = ClassificationMetrics(5)
    m.update(logits, labels)
    r = m.aggregate()
    probs = torch.softmax(logits.double(), dim=1).numpy()
    expected = roc_auc_score(labels.numpy(), probs, multi_class="ovr", average="macro")
    assert r["auc"] == pytest.approx(expected, abs=1e-12)
    kappa = cohen_kappa_score(labels.numpy(), probs.argmax(1), weights="quadratic")
    assert r["kappa"] == pytest.approx(kappa)
    assert set(r["roc"]) == {"0", "1", "2", "3", "4"}


def test_binary_auc_matches_sklearn_on_class1_probability():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(64, 2, generator=g)
    labels = torch.randint(0, 2, (64,), generator=g)
    m = ClassificationMetrics(2)
    m.update(logits, labels)
    expected = roc_auc_score(labels.numpy(), torch.softmax(logits.double(), 1)[:, 1].numpy())
    assert m.aggregate()["auc"] == pytest.approx(expected)


def test_missing_class_gives_none_auc_with_reason():
    m = ClassificationMetrics(3, ["a", "b", "c"])
    m.update(torch.randn(10, 3), torch.tensor([0, 1] * 5))
    r = m.aggregate()
    assert r["auc"] is None and "c" in r["auc_note"]
    assert r["auc_per_class"][2] is None and r["auc_per_class"][0] is not None
    json.dumps(r, allow_nan=False)

    binary = ClassificationMetrics(2)
    binary.update(torch.randn(4, 2), torch.zeros(4, dtype=torch.long))
    r = binary.aggregate()
    assert r["auc"] is None and r["sensitivity"] is None and r["auc_note"]
    json.dumps(r, allow_nan=False)


def test_two_batches_equal_one_batch_and_reset():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(30, 4, generator=g)
    labels = torch.randint(0, 4, (30,), generator=g)
    whole, parts = ClassificationMetrics(4), ClassificationMetrics(4)
    whole.update(logits, labels)
    parts.update(logits[:13], labels[:13])
    parts.update(logits[13:], labels[13:])
    assert whole.aggregate() == parts.aggregate()
    parts.reset()
    with pytest.raises(RuntimeError):
        parts.aggregate()


def test_softmax_applied_once_and_input_variants():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(20, 2, generator=g)
    labels = torch.randint(0, 2, (20,), generator=g)
    from_logits = ClassificationMetrics(2)
    from_logits.update(logits, labels)
    from_probs = ClassificationMetrics(2, inputs="probabilities")
    from_probs.update(torch.softmax(logits, 1), labels)
    a, b = from_logits.aggregate(), from_probs.aggregate()
    assert a["auc"] == pytest.approx(b["auc"]) and a["confusion"] == b["confusion"]
    # a single logit per sample (binary) goes through a sigmoid: same ranking as logit difference
    single = ClassificationMetrics(2)
    single.update(logits[:, 1] - logits[:, 0], labels)
    assert single.aggregate()["auc"] == pytest.approx(a["auc"])
    # one-hot labels
    onehot = ClassificationMetrics(2)
    onehot.update(logits, torch.nn.functional.one_hot(labels, 2))
    assert onehot.aggregate()["confusion"] == a["confusion"]


def test_classification_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        ClassificationMetrics(1)
    with pytest.raises(ValueError, match="class_names"):
        ClassificationMetrics(3, ["a", "b"])
    with pytest.raises(ValueError, match="logits"):
        ClassificationMetrics(2, inputs="softmax")
    m = ClassificationMetrics(3)
    with pytest.raises(ValueError, match="shape"):
        m.update(torch.randn(4, 2), torch.zeros(4))
    with pytest.raises(ValueError, match="labels"):
        m.update(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]))


# -- segmentation -------------------------------------------------------------------------


def logits_from_mask(mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.bool(), torch.tensor(6.0), torch.tensor(-6.0))


def square(size: int, r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
    m = torch.zeros(1, 1, size, size)
    m[..., r0:r1, c0:c1] = 1
    return m


def test_dice_jaccard_of_overlapping_squares():
    pred = square(12, 0, 4, 0, 4)   # 16 px
    true = square(12, 2, 6, 2, 6)   # 16 px, overlap 2x2 = 4 px
    m = SegmentationMetrics()
    m.update(logits_from_mask(pred), true, ids=["sq"])
    r = m.aggregate()
    assert r["per_image"][0]["id"] == "sq"
    assert r["dice"]["mean"] == pytest.approx(2 * 4 / (16 + 16))
    assert r["jaccard"]["mean"] == pytest.approx(4 / (16 + 16 - 4))
    json.dumps(r, allow_nan=False)


def test_hd95_single_pixels_and_spacing():
    pred = torch.zeros(1, 1, 8, 8)
    true = torch.zeros(1, 1, 8, 8)
    pred[0, 0, 1, 1] = 1
    true[0, 0, 1, 6] = 1
    m = SegmentationMetrics()
    m.update(logits_from_mask(pred), true)
    assert m.aggregate()["hd95"]["mean"] == pytest.approx(5.0)
    spaced = SegmentationMetrics(spacing=2.0)
    spaced.update(logits_from_mask(pred), true)
    assert spaced.aggregate()["hd95"]["mean"] == pytest.approx(10.0)


def test_empty_mask_conventions():
    empty = torch.zeros(1, 1, 8, 8)
    blob = square(8, 2, 5, 2, 5)
    m = SegmentationMetrics()
    m.update(logits_from_mask(empty), empty, ids=["both-empty"])
    m.update(logits_from_mask(empty), blob, ids=["missed"])
    m.update(logits_from_mask(blob), empty, ids=["false-alarm"])
    r = m.aggregate()
    rows = {row["id"]: row for row in r["per_image"]}
    assert rows["both-empty"] == {"id": "both-empty", "dice": 1.0, "jaccard": 1.0, "hd95": 0.0}
    assert rows["missed"]["dice"] == 0.0 and rows["missed"]["hd95"] is None
    assert rows["false-alarm"]["jaccard"] == 0.0 and rows["false-alarm"]["hd95"] is None
    assert r["hd95"]["n"] == 1 and r["hd95"]["n_excluded"] == 2 and r["hd95"]["mean"] == 0.0
    assert r["dice"]["mean"] == pytest.approx(1 / 3)
    json.dumps(r, allow_nan=False)


def test_threshold_on_sigmoid_probability():
    true = square(4, 0, 2, 0, 4)
    logits = torch.full((1, 1, 4, 4), -1.0)
    logits[..., 0:2, :] = 0.0  # sigmoid(0) = 0.5 counts as foreground
    m = SegmentationMetrics(threshold=0.5)
    m.update(logits, true)
    assert m.aggregate()["dice"]["mean"] == pytest.approx(1.0)
    strict = SegmentationMetrics(threshold=0.6)
    strict.update(logits, true)
    assert strict.aggregate()["dice"]["mean"] == 0.0


def test_segmentation_two_batches_equal_one_batch():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(6, 1, 16, 16, generator=g)
    masks = (torch.rand(6, 1, 16, 16, generator=g) > 0.6).float()
    whole, parts = SegmentationMetrics(), SegmentationMetrics()
    whole.update(logits, masks)
    parts.update(logits[:2], masks[:2])
    parts.update(logits[2:], masks[2:])
    a, b = whole.aggregate(), parts.aggregate()
    assert a["n"] == b["n"] == 6
    assert a["dice"] == pytest.approx(b["dice"]) and a["hd95"] == pytest.approx(b["hd95"])
    assert [r["id"] for r in b["per_image"]] == [str(i) for i in range(6)]
    parts.reset()
    assert len(parts) == 0


def test_segmentation_rejects_bad_arguments():
    with pytest.raises(ValueError, match="threshold"):
        SegmentationMetrics(threshold=1.0)
    m = SegmentationMetrics()
    with pytest.raises(ValueError, match="0 and 1"):
        m.update(torch.zeros(1, 1, 4, 4), torch.full((1, 1, 4, 4), 0.5))
    with pytest.raises(ValueError, match="shape"):
        m.update(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="ids"):
        m.update(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4), ids=["a"])
