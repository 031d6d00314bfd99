"""The defences a FLARE job declares for every hospital (:class:`JobDefences`), and what its
Laplace noise is worth in epsilon (:func:`laplace_epsilons`).

``medsplit flare job`` writes these into the job; each hospital checks them against its own site
policy (:mod:`medsplit.flare.policy`) and then applies them itself
(:mod:`medsplit.flare.hospital_guard`). Every number is checked here for type and finiteness, so
no later bound is compared with NaN.

Which Laplace epsilon is which (pure DP, delta = 0, one image replaced by any other): one
**inference release** of an image is ``C/b``; one **training batch** is ``B*C/b`` (BatchNorm in
training mode lets one image move all B clipped rows); **the whole training** is ``T*B*C/b`` over
the ``T`` training batches the hospital sends (clipping bounds every release whatever the
weights, and the weights carry an image into every later release, so basic composition over all
T batches, not only over epochs). FLARE jobs run in training mode: the bound that covers a
hospital's images is the whole-training one, which each hospital reports after the run.

Pure Python: works without NVIDIA FLARE installed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

#: What a hospital does when its hijack detector fires.
ALARM_ACTIONS = ("abort", "warn")


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file and key."""


def laplace_epsilons(sensitivity: float, scale: float, batch_size: int, training_batches: int | None = None) -> dict:
    """The Laplace mechanism's epsilons (pure DP, one image replaced by any other), each named by
    what it covers: one inference release ``C/b``, one training batch ``B*C/b``, and, given the
    number ``T`` of training batches a hospital sent, the whole training ``T*B*C/b``."""
    per_release = sensitivity / scale
    out = {"C": sensitivity, "b": scale, "B": batch_size, "delta": 0.0,
           "epsilon_per_inference_release": per_release,
           "epsilon_per_training_batch": batch_size * per_release}
    if training_batches is not None:
        out["T"] = training_batches
        out["epsilon_whole_training"] = training_batches * batch_size * per_release
    return out


def finite_number(value: Any, what: str, *, integer: bool = False) -> float | int:
    """A finite number (an integer where asked); ``what`` names the field in the error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PolicyError(f"{what}={value!r} must be a finite number")
    if integer:
        if value != int(value):
            raise PolicyError(f"{what}={value!r} must be a whole number")
        return int(value)
    return float(value)



@dataclass
class JobDefences:
    """The defences a job runs at every hospital (written into the FLARE job by ``medsplit flare job``).

    Args:
        hijack_detector: run the client-side hijack detector (fake rounds with random targets).
        on_alarm: what the hospital does when it fires: ``abort`` (stop sending, end the job with
            an error naming the site) or ``warn`` (log and continue).
        probe_every: one fake round every this many steps.
        detector_threshold: alarm when the median probe score falls below this.
        laplace_scale: Laplace scale b on the activations a hospital sends (``None``: off).
        laplace_sensitivity: the clip bound C of the Laplace mechanism (epsilon C/b per inference
            release, B*C/b per training batch; see the module docstring).
        nopeek_alpha: NoPeek weight on the hospital's sending part (``None``: off).
    """

    hijack_detector: bool = False
    on_alarm: str = "abort"
    probe_every: int = 10
    detector_threshold: float = 0.1
    laplace_scale: float | None = None
    laplace_sensitivity: float = 1.0
    nopeek_alpha: float | None = None

    def __post_init__(self) -> None:
        # Every number is checked for type and finiteness: NaN compares false with everything,
        # so a NaN threshold or scale would pass any bound and switch the defence off.
        if not isinstance(self.hijack_detector, bool):
            raise PolicyError(f"job defences: hijack_detector={self.hijack_detector!r} must be true or false")
        if self.on_alarm not in ALARM_ACTIONS:
            raise PolicyError(f"job defences: on_alarm={self.on_alarm!r}; valid choices are {list(ALARM_ACTIONS)}")
        self.probe_every = finite_number(self.probe_every, "job defences: probe_every", integer=True)
        if self.probe_every < 1:
            raise PolicyError(f"job defences: probe_every={self.probe_every} must be >= 1")
        self.detector_threshold = finite_number(self.detector_threshold, "job defences: detector_threshold")
        self.laplace_sensitivity = finite_number(self.laplace_sensitivity, "job defences: laplace_sensitivity")
        if self.laplace_sensitivity <= 0:
            raise PolicyError(f"job defences: laplace_sensitivity={self.laplace_sensitivity} must be > 0")
        if self.laplace_scale is not None:
            self.laplace_scale = finite_number(self.laplace_scale, "job defences: laplace_scale")
            if self.laplace_scale <= 0:
                raise PolicyError(f"job defences: laplace_scale={self.laplace_scale} must be > 0 (or null for off)")
        if self.nopeek_alpha is not None:
            self.nopeek_alpha = finite_number(self.nopeek_alpha, "job defences: nopeek_alpha")
            if self.nopeek_alpha < 0:
                raise PolicyError(f"job defences: nopeek_alpha={self.nopeek_alpha} must be >= 0 (or null for off)")

    @classmethod
    def from_dict(cls, values: dict | None, where: str = "job defences") -> "JobDefences":
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PolicyError(f"{where}: unknown key {unknown[0]!r}; valid keys are {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def laplace_epsilon_per_release(self) -> float | None:
        """C/b, one inference release of one image (``None`` without Laplace noise)."""
        return None if self.laplace_scale is None else self.laplace_sensitivity / self.laplace_scale

