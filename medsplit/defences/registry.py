"""What a defence is to the attack harness: a :class:`DefenceSpec` (its installer and the facts
the harness needs to run it), and the setting an installer reads (:class:`DefenceSetting`).

The registry itself, ``DEFENCES``, is built in :mod:`medsplit.defences` from each defence
module's ``SPEC``: adding a defence is one module with a ``SPEC`` and one entry there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # only for annotations: this module stays import-light
    import torch
    from torch import nn

    from medsplit.split.split_model import SplitModel


class DefenceNotApplicable(ValueError):
    """A defence that cannot apply to the chosen task or cut; the message says why."""


@dataclass(frozen=True)
class DefenceSetting:
    """What an installer may read besides the model and the strength: the client's training setting.

    Args:
        part: name of the client's first part (the one that sends activations to the server).
        sent_key: the tensor that part sends to the server.
        generator: CPU generator for the defence's own randomness (noise, mixing weights).
        images: the client's training images (shapes of what crosses; the proxy's targets).
        num_classes: classes of the task's labels (mixing one-hots them).
        img_size: side of the images in pixels.
        lr: the client's learning rate (DP-SGD's optimiser).
        batch_size: the client's (expected) batch size.
        train_size: how many training images the client samples from (DP-SGD's sampling rate).
        laplace_c: the Laplace mechanism's L1 sensitivity ``C``.
        train_steps: how many training steps the client takes (a whole training's Laplace bound).
        images_per_patient: the most training images one patient has (patient-level privacy).
        dp_secure_mode: DP-SGD draws its noise from a CSPRNG (opacus' secure mode).
    """

    part: str
    sent_key: str
    generator: torch.Generator
    images: torch.Tensor
    num_classes: int
    img_size: int
    lr: float
    batch_size: int
    train_size: int
    laplace_c: float
    train_steps: int = 0
    images_per_patient: int = 1
    dp_secure_mode: bool = False


#: ``install(model, strength, setting) -> (privacy facts, hook object)``
Installer = Callable[["SplitModel", float, DefenceSetting], "tuple[dict, Any]"]


@dataclass(frozen=True)
class DefenceSpec:
    """One defence as the harness runs it.

    Args:
        name: the name users pass to ``--defences``.
        strength: what its strength parameter means (one line, for help texts).
        install: puts the defence on a split model; returns its privacy facts (numbers go to
            the report's rows, strings to its notes) and the hook object.
        needs_labels_crossing: the defence transforms labels sent to the server, so it cannot
            apply to a task whose labels never cross (a U-shaped split).
        refusal: why it cannot apply there (the error and the report's "not run" reason).
        poisson_batches: training draws Poisson batches at the hook's ``sample_rate`` and tells
            the hook about empty draws (``account_empty_step``), as DP-SGD's accountant assumes.
        final_facts: privacy facts known only after training (DP-SGD's epsilon), from the hook.
        diagnostics: what the defence's own training reached (the proxy's MSE), set beside the
            fresh attackers' numbers on the shared target.
        architecture_change: how the defence changes each part's architecture (DP-SGD: GroupNorm
            for BatchNorm); an attacker who knows the architecture copies it.
        after_training: undoes what only training needed once the target has trained (DP-SGD's
            per-sample gradient hooks), so attackers copy plain parts.
    """

    name: str
    strength: str
    install: Installer
    needs_labels_crossing: bool = False
    refusal: str = ""
    poisson_batches: bool = False
    final_facts: Callable[[Any], dict] | None = None
    diagnostics: Callable[[Any], dict] | None = None
    architecture_change: Callable[[nn.Module], None] | None = None
    after_training: Callable[[Any], None] | None = None

    def applies_to(self, task: Any) -> str | None:
        """``None`` when the defence can apply to ``task`` (an object with ``labels_may_cross``), else why not."""
        if self.needs_labels_crossing and not task.labels_may_cross:
            return self.refusal or f"{self.name} needs labels that cross to the server"
        return None


def _no_defence(model: SplitModel, strength: float, setting: DefenceSetting) -> tuple[dict, None]:
    return {}, None


NONE = DefenceSpec("none", "no defence", _no_defence)
