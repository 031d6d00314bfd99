"""Privacy of one patient from the privacy of one image: group privacy over the patient's images.

DP-SGD's accountant bounds what the trained model says about *one training image* (add/remove
one image). A patient with ``k`` images (EyePACS: both eyes) differs from the dataset without
them in ``k`` images, so the patient-level guarantee follows by chaining ``k`` image-level
steps (group privacy; Dwork and Roth 2014, Vadhan 2017, Lemma 2.2): an ``(eps, d)``-DP
mechanism is ``(k * eps, d * (1 + e^eps + ... + e^((k-1) eps)))``-DP for groups of ``k``
(the delta factor is at most ``k * e^((k-1) eps)``).

To report the patient-level epsilon *at the same delta* as the image level, the image-level
delta ``d`` is chosen (by bisection on ``log d``) so that the group's delta equals the target.
"""

from __future__ import annotations

import math
from typing import Callable


def group_delta(image_epsilon: float, image_delta: float, k: int) -> float:
    """The delta of a group of ``k`` images: ``d * sum_{i<k} e^(i eps)`` (chaining ``k`` neighbours)."""
    if k < 1:
        raise ValueError(f"a group has at least one image, got k = {k}")
    if (k - 1) * image_epsilon > 700:  # e^700 is near float's limit: no useful group bound
        return math.inf
    return image_delta * sum(math.exp(i * image_epsilon) for i in range(k))


def patient_epsilon(epsilon_at: Callable[[float], float], k: int, delta: float) -> tuple[float, float]:
    """``(patient epsilon, image delta used)`` for patients of at most ``k`` images, at ``delta``.

    Args:
        epsilon_at: the image-level epsilon at a given image-level delta (the accountant's).
        k: the largest number of training images of one patient.
        delta: the patient-level delta to report at.
    """
    if k == 1:
        return epsilon_at(delta), delta
    lo, hi = math.log(delta) - 200.0, math.log(delta)  # log of the image-level delta
    # group_delta(eps(d), d, k) grows with d (eps shrinks only logarithmically): bisection on log d
    for _ in range(80):
        mid = (lo + hi) / 2
        d = math.exp(mid)
        if group_delta(epsilon_at(d), d, k) > delta:
            hi = mid
        else:
            lo = mid
    d = math.exp(lo)  # the side whose group delta is <= the target
    eps = epsilon_at(d)
    if group_delta(eps, d, k) > delta:  # no image-level delta in range reaches it: no finite bound
        return math.inf, d
    return k * eps, d
