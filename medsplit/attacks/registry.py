"""What an attack is to the harness: an :class:`AttackSpec` (its runner, threat model, which
defences it runs against by default, where it applies) and the context a runner reads.

The registry itself, ``ATTACKS``, is built in :mod:`medsplit.attacks` from each attack
module's ``SPEC``: adding an attack is one module with a ``SPEC`` and one entry there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from torch import nn

    from medsplit.attacks.profiles import Profile
    from medsplit.attacks.tasks import AttackTask, AttackData

#: how an attack meets its target
SHARED = "shared"  # attacks the defended target trained once per (defence, strength) and seed, after training
OWN = "own"  # trains its own defended target from scratch (an attack during training)
UNDEFENDED = "undefended"  # runs once per seed against its own undefended setting (no defence, no strength)
TARGETS = (SHARED, OWN, UNDEFENDED)


@dataclass
class AttackContext:
    """What every run of one seed shares. Args: see the field comments."""

    task: AttackTask
    seed: int
    data: AttackData  # the seed's images, on the evaluation's device
    profile: Profile
    validator: nn.Module  # judges reconstructions (never the target)


@dataclass(frozen=True)
class AttackSpec:
    """One attack as the harness runs it.

    Args:
        name: the name users pass to ``--attacks``.
        description: its threat model in one line (help texts).
        display_name: how reports title it.
        target: :data:`SHARED`, :data:`OWN` or :data:`UNDEFENDED` (how it meets its target).
        run: one run. ``SHARED``: ``run(context, defence, strength, target) -> (row, extra)``;
            ``OWN``: ``run(context, defence, strength) -> (row, extra)``; ``UNDEFENDED``:
            ``run(context) -> row``.
        strengths: the profile's defence -> strengths this attack runs against by default.
            ``None`` from it (``SHARED`` only): every setting the shared targets are trained at.
        limited_because: why an ``OWN`` attack runs against fewer defences than the others
            (the report's "not run" reason).
        summary: format of the one-line log of a finished run (the row's columns).
        needs_per_example_labels: runs only where the task has per-example labels
            (:attr:`~medsplit.attacks.tasks.AttackTask.label_note` says why not).
        aliases: other names users look for.
    """

    name: str
    description: str
    display_name: str
    target: str
    run: Callable[..., Any]
    strengths: Callable[[Profile], dict[str, list[float]] | None] = lambda profile: None
    limited_because: str = ""
    summary: str = ""
    needs_per_example_labels: bool = False
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"attack {self.name!r}: target must be one of {TARGETS}, got {self.target!r}")

    def applies_to(self, task: AttackTask) -> str | None:
        """``None`` when the attack can run on ``task``, else why not."""
        if self.needs_per_example_labels and task.label_note:
            return f"{self.display_name} needs per-example binary labels held by the client; {task.label_note}"
        return None

    def runs_at(self, profile: Profile, defence: str, strength: float) -> bool:
        """Whether a ``SHARED`` attack runs at this setting of the shared targets."""
        chosen = self.strengths(profile)
        return chosen is None or strength in chosen.get(defence, [])
