"""Client-side hijack detection (a simplified SplitGuard, Erdogan et al. 2022).

Statistic (stated, simpler than SplitGuard's): now and then the client runs a *fake* round:
the same images with randomised targets (random classes, or inverted masks), and discards
what it gets back. An honest server's returned gradient depends on the targets, so the fake
and the regular gradient for the same images differ by a relative distance of order one. A
hijacking server (FSHA) returns the gradient of an adversarial loss that never reads the
targets, so the two are almost equal. The client flags a hijack when the median relative
distance over the last ``window`` probes falls below ``threshold``.
"""

from __future__ import annotations

import statistics

import torch


class HijackDetector:
    """Schedule fake probes, score them, raise the alarm.

    Args:
        probe_every: a fake round every this many training steps.
        threshold: alarm when the median score is below this.
        window: number of most recent probes the median is taken over.
        min_probes: no alarm before this many probes.
        generator: RNG for the fake targets (CPU; the targets are moved to the labels' device).
    """

    def __init__(self, probe_every: int = 10, threshold: float = 0.1, window: int = 5, min_probes: int = 3,
                 generator: torch.Generator | None = None):
        self.probe_every = probe_every
        self.threshold = threshold
        self.window = window
        self.min_probes = min_probes
        self.generator = generator
        self.scores: list[float] = []
        self.steps: list[int] = []
        self.flagged_at: int | None = None

    def should_probe(self, step: int) -> bool:
        return step % self.probe_every == 0

    def fake_targets(self, y: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
        """Randomised targets: uniform random classes, or the inverted mask for segmentation."""
        if y.ndim > 1:  # masks
            return 1 - y
        n = num_classes or int(y.max()) + 1
        return torch.randint(0, max(n, 2), y.shape, generator=self.generator).to(y.device, y.dtype)

    def update(self, step: int, regular: torch.Tensor, fake: torch.Tensor) -> bool:
        """Score one probe; returns whether the alarm is (now) raised."""
        score = float((fake - regular).norm() / (regular.norm() + 1e-12))
        self.scores.append(score)
        self.steps.append(step)
        recent = self.scores[-self.window:]
        if self.flagged_at is None and len(self.scores) >= self.min_probes and statistics.median(recent) < self.threshold:
            self.flagged_at = step
        return self.flagged_at is not None

    def summary(self) -> dict:
        return {"flagged": self.flagged_at is not None, "flagged_at_step": self.flagged_at, "probes": len(self.scores),
                "median_score": statistics.median(self.scores) if self.scores else None,
                "threshold": self.threshold, "probe_every": self.probe_every}
