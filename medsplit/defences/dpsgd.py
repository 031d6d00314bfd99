"""DP-SGD (Abadi et al. 2016) on the client part of a split model, with opacus.

Per-sample gradients of the client part's parameters (from the gradient the server returns
for each sample's activation) are clipped to ``max_grad_norm`` and Gaussian noise of
``noise_multiplier * max_grad_norm`` is added before every client step.

Per-sample independence (what makes the clip a sensitivity bound): sample ``i``'s gradient
must depend on sample ``i`` alone. It travels back through *every part downstream* of the
private one (the server's parts and, in a U-Net, the client decoder through the skips), so a
BatchNorm in training mode anywhere on that path mixes the batch: with only the private part
fixed, replacing one image of a batch of 8 moved each *other* sample's clipped gradient by
0.9-1.2 C on the ResNet (cut 4) and 0.24-0.36 C on the U-Net (the tests' small models;
issue 14 measured 1.875 C on the sum of 15 at batch 16). Choice made here:
**every BatchNorm of every part of the model is replaced by GroupNorm** (opacus'
``ModuleValidator.fix``) when DP-SGD is on; the other parties' optimisers are rebuilt over the
new parameters. GroupNorm keeps the models trainable from scratch, which frozen (eval-mode)
BatchNorm with untrained running statistics would not.

What epsilon covers: the private part's *parameters* (what a later release of that part
leaks) for the add/remove-one-training-image relation, from opacus' RDP accountant with
sampling rate ``q = batch / N``, which assumes Poisson sampling: the harness samples Poisson
batches whenever DP-SGD is on (:func:`poisson_batch`). Not covered: the activations the
client sends (computed from the raw images), and, in a U-Net, the client decoder, which
reads full-resolution skips and the masks and trains with plain Adam (:meth:`DPSGDClient.scope`).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch
from torch import nn

from medsplit.defences.registry import DefenceSetting, DefenceSpec
from medsplit.defences.sampling import poisson_batch  # noqa: F401  (re-exported: the sampling DP-SGD needs)
from medsplit.split.engine import SplitModel

if TYPE_CHECKING:
    from opacus.optimizers import DPOptimizer

# opacus is imported where it is used: importing it takes over a second, and the defence
# registry (medsplit.defences) imports this module for its SPEC.


def _residual_forward(block: nn.Module):
    """torchvision's BasicBlock adds the shortcut in place (``out += identity``), which opacus'
    backward hooks forbid; the same computation out of place."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        identity = x if block.downsample is None else block.downsample(x)
        out = block.relu(block.bn1(block.conv1(x)))
        out = block.bn2(block.conv2(out))
        return block.relu(out + identity)

    return forward


def _fix_stage_modules(part: nn.Module) -> None:
    """Replace BatchNorm by GroupNorm in every stage of ``part`` (stages hold the modules)."""
    from opacus.validators import ModuleValidator

    for stage in part.stages:
        stage.module = ModuleValidator.fix(nn.Sequential(stage.module))[0]
        for m in stage.module.modules():  # opacus' hooks forbid in-place ops on hooked outputs
            if isinstance(m, nn.ReLU):
                m.inplace = False
            if type(m).__name__ == "BasicBlock":
                m.forward = _residual_forward(m)
    part.modules_by_stage = nn.ModuleDict({s.name: s.module for s in part.stages})


class DPSGDClient:
    """Make the client part of ``model`` train with DP-SGD; exposes its epsilon.

    Args:
        model: the split model (its chain is modified in place).
        part_name: the client part to privatise (``"client"`` or ``"client_encoder"``).
        noise_multiplier: sigma (strength).
        max_grad_norm: per-sample clipping bound.
        sample_rate: ``batch_size / number of the client's training images``.
        delta: the delta epsilon is reported at.
        lr: the client's learning rate (Adam under the DP optimiser).
        batch_size: expected batch size.
    """

    def __init__(self, model: SplitModel, part_name: str, noise_multiplier: float, max_grad_norm: float,
                 sample_rate: float, delta: float, lr: float, batch_size: int):
        from opacus import GradSampleModule
        from opacus.accountants import RDPAccountant
        from opacus.optimizers import DPOptimizer
        from opacus.validators import ModuleValidator

        index = next((i for i, (p, _) in enumerate(model.chain) if p.name == part_name), None)
        if index is None:
            raise ValueError(f"no part {part_name!r} in the model; parts are {[p.name for p, _ in model.chain]}")
        part, owner = model.chain[index]
        # opacus' hooks warn on every step because the images do not require gradients; the
        # per-sample gradients it needs are those of the parameters, so the warning is noise.
        warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed with "
                                "respect to module outputs", category=UserWarning)
        device = next(part.parameters()).device
        # GroupNorm on *every* part: the per-sample path runs through all parts downstream
        for other, _ in model.chain:
            _fix_stage_modules(other)
            other.to(device)  # the GroupNorms that replace BatchNorm are created on the CPU
        for party in model.parties:
            if party is not owner:
                party.reset_optimizer()  # its parameters are new objects now
        errors = ModuleValidator.validate(part, strict=False)
        if errors:
            raise ValueError(f"client part {part_name!r} cannot be made private: {errors}")
        others_of_owner = [q for q in owner.parts.values() if q is not part]
        self.private_part = part_name
        self.private_parameters = sum(p.numel() for p in part.parameters())
        self.unprotected_client_parts = {q.name: sum(p.numel() for p in q.parameters()) for q in others_of_owner}
        self.other_parts_note = (
            f"the client's other parts ({', '.join(self.unprotected_client_parts)}: "
            f"{sum(self.unprotected_client_parts.values()):,} parameters) train without DP; in a U-Net the client "
            "decoder reads the full-resolution skips and the masks" if others_of_owner else "")
        self.module = GradSampleModule(part, loss_reduction="mean")
        for attr in ("name", "role", "reads", "sends"):  # what SplitModel reads of a part
            setattr(self.module, attr, getattr(part, attr))
        self.part = part
        self.noise_multiplier = noise_multiplier
        self.max_grad_norm = max_grad_norm
        self.sample_rate = sample_rate
        self.delta = delta
        others = [p for name, q in owner.parts.items() if q is not part for p in q.parameters()]
        self.optimizer = DPOptimizer(torch.optim.Adam(part.parameters(), lr=lr), noise_multiplier=noise_multiplier,
                                     max_grad_norm=max_grad_norm, expected_batch_size=batch_size, loss_reduction="mean")
        self.accountant = RDPAccountant()
        self.optimizer.attach_step_hook(self.accountant.get_optimizer_hook_fn(sample_rate=sample_rate))
        self._other = torch.optim.Adam(others, lr=lr) if others else None
        model.chain[index] = (self.module, owner)
        owner.optimizer = _Both(self.optimizer, self._other)

    @property
    def steps(self) -> int:
        return sum(n for _, _, n in self.accountant.history) if self.accountant.history else 0

    def epsilon(self) -> float:
        """epsilon at ``delta`` after the steps taken so far (0 before the first step)."""
        return 0.0 if not self.accountant.history else float(self.accountant.get_epsilon(self.delta))

    def account_empty_step(self) -> None:
        """A Poisson draw that picked no example is still a (pure-noise) step of the mechanism."""
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)

    def scope(self) -> dict:
        """What the epsilon covers and what it does not, in words the report prints."""
        return {
            "covers": f"the parameters of part {self.private_part!r} ({self.private_parameters:,}), add/remove one "
                      f"training image, delta {self.delta:g}, RDP accountant, Poisson sampling q = {self.sample_rate:.4g}",
            "normalisation": "every BatchNorm of every part (client and server) replaced by GroupNorm, so each "
                             "sample's clipped gradient depends on that sample alone",
            "not_covered": "; ".join(filter(None, [self.other_parts_note, "the activations the client sends (computed "
                                                   "from the raw images) and the gradients it returns"])),
        }


class _Both:
    """The owner's optimiser: DP for the privatised part, plain Adam for its other parts."""

    def __init__(self, dp: DPOptimizer, other: torch.optim.Optimizer | None):
        self.dp, self.other = dp, other

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.dp.zero_grad(set_to_none)
        if self.other is not None:
            self.other.zero_grad(set_to_none)

    def step(self) -> None:
        self.dp.step()
        if self.other is not None:
            self.other.step()

    def state_dict(self) -> dict:
        return {"dp": self.dp.state_dict(), "other": self.other.state_dict() if self.other else None}


def install(model: SplitModel, strength: float, setting: DefenceSetting) -> tuple[dict, DPSGDClient]:
    """DP-SGD on the client's first part: sigma = ``strength``, clip 1.0, delta 1e-5, q = batch / training images."""
    n, b = setting.train_size, setting.batch_size
    if not 0 < b <= n:
        # Poisson sampling draws each image with probability q = b / n, so q must be a probability
        raise ValueError(f"DP-SGD: the expected batch size ({b}) must be between 1 and the client's number of "
                         f"training images ({n}); lower the batch size or give the client more images")
    hook = DPSGDClient(model, setting.part, strength, 1.0, b / n, 1e-5, setting.lr, b)
    return {"sigma": strength, "max_grad_norm": 1.0, "delta": 1e-5, "sample_rate": b / n,
            "sampling": "Poisson (each image joins a batch with probability q)", **hook.scope()}, hook


def _epsilon(hook: DPSGDClient) -> dict:
    return {"epsilon": hook.epsilon(), "steps": hook.steps}


def groupnorm_everywhere(part: nn.Module) -> None:
    """DP-SGD's change to a part's architecture: every BatchNorm becomes a GroupNorm."""
    _fix_stage_modules(part)


SPEC = DefenceSpec("dpsgd", "noise multiplier sigma", install, poisson_batches=True, final_facts=_epsilon,
                   architecture_change=groupnorm_everywhere)
