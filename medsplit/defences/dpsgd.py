"""DP-SGD (Abadi et al. 2016) on the client part of a split model, with opacus.

Per-sample gradients of the client part's parameters (from the gradient the server returns
for each sample's activation) are clipped to ``max_grad_norm`` and Gaussian noise of
``noise_multiplier * max_grad_norm`` is added before every client step. BatchNorm mixes
samples, so it is replaced by GroupNorm (``opacus.validators.ModuleValidator.fix``).

What epsilon covers: the client part's *parameters* (what a later release of the client
model would leak) for the add/remove-one-training-image relation, from opacus' RDP
accountant with sampling rate ``q = batch / N``. The harness draws fixed-size random
batches; the accountant assumes Poisson sampling (the usual approximation, stated in the
report). It does *not* cover the activations the client sends during training: those are
computed from the raw images and are not privatised by DP-SGD.
"""

from __future__ import annotations

import warnings

import torch
from opacus import GradSampleModule
from opacus.accountants import RDPAccountant
from opacus.optimizers import DPOptimizer
from opacus.validators import ModuleValidator
from torch import nn

from medsplit.split.engine import SplitModel


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
        index = next((i for i, (p, _) in enumerate(model.chain) if p.name == part_name), None)
        if index is None:
            raise ValueError(f"no part {part_name!r} in the model; parts are {[p.name for p, _ in model.chain]}")
        part, owner = model.chain[index]
        if any(o is owner for j, (_, o) in enumerate(model.chain) if j != index):
            # a U-Net client also owns the decoder; DP-SGD here covers the encoder only
            self.other_parts_note = "the client's other parts (decoder) are trained without DP"
        else:
            self.other_parts_note = ""
        # opacus' hooks warn on every step because the images do not require gradients; the
        # per-sample gradients it needs are those of the parameters, so the warning is noise.
        warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed with "
                                "respect to module outputs", category=UserWarning)
        device = next(part.parameters()).device
        _fix_stage_modules(part)
        part.to(device)  # the GroupNorms that replace BatchNorm are created on the CPU
        errors = ModuleValidator.validate(part, strict=False)
        if errors:
            raise ValueError(f"client part {part_name!r} cannot be made private: {errors}")
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
