"""The bootstrap says what it resampled (issue 27): over images where every unit holds one image
(RetinaMNIST sets patient = image; no patient map), over patients only where some have several."""

import numpy as np
import torch

from medsplit.metrics import ClassificationMetrics
from medsplit.uncertainty import METHOD, METHOD_IMAGES, resampling_text, test_intervals


def _test(n: int = 40) -> dict:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    p1 = np.clip(y * 0.3 + rng.random(n) * 0.7, 0, 1)
    metric = ClassificationMetrics(2, ["no", "yes"], inputs="probabilities")
    metric.update(torch.tensor(np.stack([1 - p1, p1], 1)), torch.tensor(y), ids=[f"img{i}" for i in range(n)])
    return metric.aggregate()


def test_without_a_patient_map_the_bootstrap_is_over_images_and_says_so():
    out = test_intervals(_test(), None, n_resamples=50)
    assert out["unit"] == "image" and out["method"] == METHOD_IMAGES
    text = resampling_text(out)
    assert "40 test images" in text and "no patient map" in text and "patients" not in text


def test_patient_equals_image_is_over_images():
    out = test_intervals(_test(), {f"img{i}": f"img{i}" for i in range(40)}, n_resamples=50)  # RetinaMNIST
    assert out["unit"] == "image" and "over patients" not in out["method"]
    assert "one image per patient" in resampling_text(out)


def test_two_images_per_patient_is_over_patients():
    out = test_intervals(_test(), {f"img{i}": f"pat{i // 2}" for i in range(40)}, n_resamples=50)
    assert out["unit"] == "patient" and out["method"] == METHOD
    assert "20 test patients (40 images" in resampling_text(out)
