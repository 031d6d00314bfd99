"""A hospital's own enforcement of a job's defences on what it sends (:class:`HospitalGuard`).

The job declares its defences (:class:`medsplit.flare.job_defences.JobDefences`) and the hospital
has checked them against its site policy (:mod:`medsplit.flare.policy`); this guard then applies
them in the hospital's own code, so a job cannot declare a defence and skip it: the hijack
detector's alarm stops the hospital sending (``on_alarm: abort``), the Laplace noise is added to
every activation that leaves, and NoPeek regularises the hospital's sending part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from medsplit.flare.job_defences import JobDefences, laplace_epsilons


class HijackAbort(RuntimeError):
    """The hospital's hijack detector raised the alarm and its policy says abort: nothing more is sent."""


@dataclass
class HospitalGuard:
    """A hospital's own enforcement of the job's defences on what it sends.

    ``send_transform`` is what the hospital applies to every activation before it leaves: it
    refuses to send once the detector has fired under ``on_alarm: abort`` (raising
    :class:`HijackAbort` naming the site and step), then adds the job's Laplace noise.

    Args:
        site: the hospital's site name (named in the abort).
        defences: the job's defences (already checked against the site policy).
        detector: the hijack detector, when the job runs one.
        laplace: the Laplace mechanism, when the job runs one.
        log: where a ``warn`` alarm is reported.
    """

    site: str
    defences: JobDefences
    detector: Any = None
    laplace: Callable | None = None
    log: Callable[[str], None] = print
    _warned: bool = field(default=False, repr=False)
    _training_releases: int = field(default=0, repr=False)

    @classmethod
    def build(cls, site: str, defences: JobDefences, seed: int = 0, log: Callable[[str], None] = print) -> "HospitalGuard":
        import torch  # imports torch: the site policy and job guard load in FLARE's site process without it

        # imports torch: the site policy and job guard load in FLARE's site process without it
        from medsplit.defences import HijackDetector, LaplaceMechanism

        detector = None
        if defences.hijack_detector:
            detector = HijackDetector(probe_every=defences.probe_every, threshold=defences.detector_threshold,
                                      generator=torch.Generator().manual_seed(seed + 17))
        laplace = None
        if defences.laplace_scale is not None:
            laplace = LaplaceMechanism(defences.laplace_sensitivity, defences.laplace_scale,
                                       generator=torch.Generator().manual_seed(seed + 31))
        return cls(site, defences, detector, laplace, log)

    @property
    def alarmed(self) -> bool:
        return self.detector is not None and self.detector.flagged_at is not None

    def check_alarm(self) -> None:
        """Raise :class:`HijackAbort` (abort) or warn once (warn) when the detector has fired."""
        if not self.alarmed:
            return
        step = self.detector.flagged_at
        if self.defences.on_alarm == "abort":
            raise HijackAbort(f"site {self.site}: the hijack detector raised the alarm at step {step} "
                              f"(median probe score below {self.detector.threshold}); its policy says abort, "
                              "so it sends no more activations")
        if not self._warned:
            self._warned = True
            self.log(f"WARNING site {self.site}: hijack detector alarm at step {step}; on_alarm=warn, training continues")

    def send_transform(self, tensors: dict) -> dict:
        self.check_alarm()
        if self.laplace is None:
            return tensors
        import torch  # imports torch: the site policy and job guard load in FLARE's site process without it

        # A release under autograd is a training batch (it will be stepped on, or is a probe the
        # server answers like one); evaluation sends under no_grad. T counts the former.
        if torch.is_grad_enabled():
            self._training_releases += 1
        return self.laplace(tensors)

    def laplace_summary(self, batch_size: int) -> dict | None:
        """The epsilons of the noise this hospital added, each named by what it covers (see
        :func:`laplace_epsilons`), with T the training batches it released; ``None`` without noise."""
        if self.laplace is None:
            return None
        return laplace_epsilons(self.laplace.sensitivity, self.laplace.scale, batch_size, self._training_releases)

    def regularizer(self, sent_keys: tuple[str, ...] | None = None):
        """The NoPeek regulariser for the hospital's sending part, or ``None`` when the job has none."""
        if not self.defences.nopeek_alpha:
            return None
        # imports torch: the site policy and job guard load in FLARE's site process without it
        from medsplit.defences import NoPeek

        return NoPeek(self.defences.nopeek_alpha, sent_keys=sent_keys)
