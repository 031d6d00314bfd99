"""HD95 leaves out images where exactly one of prediction / ground truth is empty; the miss
rate beside it says how many, and on which side (issue 14)."""

import torch

from medsplit.metrics import SegmentationMetrics


def _logits(mask: torch.Tensor) -> torch.Tensor:
    return mask * 20 - 10


def test_hd95_reports_its_miss_rate_by_side():
    empty = torch.zeros(1, 1, 8, 8)
    blob = torch.zeros(1, 1, 8, 8)
    blob[..., 2:5, 2:5] = 1
    m = SegmentationMetrics()
    m.update(_logits(blob), blob)  # measured
    m.update(_logits(empty), blob)  # missed lung: prediction empty
    m.update(_logits(empty), blob)
    m.update(_logits(blob), empty)  # false alarm: ground truth empty
    hd95 = m.aggregate()["hd95"]
    assert hd95["n"] == 1 and hd95["n_excluded"] == 3
    assert hd95["miss_rate"] == 3 / 4 and hd95["prediction_empty"] == 2 and hd95["ground_truth_empty"] == 1
    m.reset()
    m.update(_logits(blob), blob)
    assert m.aggregate()["hd95"]["miss_rate"] == 0.0
