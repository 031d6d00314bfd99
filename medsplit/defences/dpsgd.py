"""DP-SGD (Abadi et al. 2016) on *every* part of a split model, with opacus, one accountant.

Why every part: a part trained without DP (the server's, a U-Net's client decoder) carries one
image's influence into every later per-sample gradient of the private parts, through weights
the accountant does not condition on. Measured (issue 27): two runs differing in one image of
the first batch, the client part's weights then set equal, the clipped per-sample gradients of
a later batch without that image moved by up to 1.08 C (ResNet cut 4) with only the client part
private, and by exactly 0 with every part private (``tests/defences/test_dp_across_steps.py``).

The joint mechanism (what the single accountant covers): ``J`` parts with trainable parameters
each clip their per-sample gradient to ``C_j = C / sqrt(J)``, so the per-sample gradient of all
parts concatenated has L2 norm at most ``sqrt(sum C_j^2) = C``; each part adds Gaussian noise of
std ``sigma * C`` to its clipped sum (opacus' noise multiplier ``sigma * sqrt(J)`` at clip
``C_j``). Concatenated, one step is the sampled Gaussian mechanism with sensitivity ``C`` and
noise ``sigma * C``: one RDP accountant with noise multiplier ``sigma`` and Poisson rate ``q``.
Each party clips and noises its own parts locally; no per-sample norm crosses between parties.

Per-sample independence (what makes a clip a sensitivity bound): every BatchNorm of every part
is replaced by GroupNorm (opacus' ``ModuleValidator.fix``) and the loss is a mean of per-sample
terms, so sample ``i``'s gradient depends on sample ``i`` alone (tested).

What epsilon covers: the trained weights of every part (and anything computed from them), for
add/remove one training image; for a patient with ``k`` images, group privacy
(:mod:`medsplit.defences.group_privacy`). What it does NOT cover: the activations the client
sends and the gradients that cross during training (computed from the raw images, seen by the
server at every step): only activation noise protects those.

Noise randomness: by default from torch's global generator, which the harness seeds with the
run's published seed: reproducible, not cryptographically secure (anyone with the seed can
subtract the noise). ``secure_mode`` draws it as opacus' ``PrivacyEngine(secure_mode=True)``
does: from a ``torchcsprng`` /dev/urandom generator, summed over draws that resist
floating-point attacks (Mironov 2012).

``private_parts`` (a subset) exists only for the across-steps control: its "epsilon" is
nominal, not a guarantee, and is never reported (:meth:`DPSGD.epsilon` returns ``None``).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from medsplit.defences.group_privacy import patient_epsilon
from medsplit.defences.registry import DefenceSetting, DefenceSpec
from medsplit.split.split_model import SplitModel

# opacus is imported where it is used: importing it takes over a second, and the defence
# registry (medsplit.defences) imports this module for its SPEC.

RNG_CAVEAT = ("noise drawn from torch's global generator seeded with the run's seed: reproducible, not "
              "cryptographically secure (secure_mode draws it from a CSPRNG)")
SECURE_RNG = "noise drawn from a torchcsprng /dev/urandom generator, floating-point-attack resistant (secure_mode)"
NOT_COVERED = ("epsilon does NOT cover the activations the server sees during training, nor the gradients that "
               "cross (computed from the raw images at every step): only activation noise protects those")
NOMINAL = "nominal, not a guarantee"


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
    from opacus.validators import ModuleValidator  # opacus takes seconds to import: only for DP-SGD

    for stage in part.stages:
        stage.module = ModuleValidator.fix(nn.Sequential(stage.module))[0]
        for m in stage.module.modules():  # opacus' hooks forbid in-place ops on hooked outputs
            if isinstance(m, nn.ReLU):
                m.inplace = False
            if type(m).__name__ == "BasicBlock":
                m.forward = _residual_forward(m)
    part.modules_by_stage = nn.ModuleDict({s.name: s.module for s in part.stages})


def _secure_generator() -> torch.Generator:
    try:
        # optional: torchcsprng is no dependency; only when a secure generator is asked for
        import torchcsprng as csprng
    except ImportError:
        raise ValueError("dp_secure_mode=true needs the torchcsprng package (a cryptographically secure generator, "
                         "as opacus' PrivacyEngine(secure_mode=True) requires); install it or leave secure mode off "
                         "(noise from torch's seeded generator: reproducible, not secure)") from None
    return csprng.create_random_device_generator("/dev/urandom")


class DPSGD:
    """Train the parts of ``model`` with DP-SGD, jointly clipped to ``max_grad_norm``; one accountant.

    Args:
        model: the split model (every part's BatchNorm becomes GroupNorm; optimisers are replaced).
        noise_multiplier: sigma of the joint mechanism (noise std ``sigma * C`` on every part).
        max_grad_norm: ``C``, the bound on the per-sample gradient of all private parts together.
        sample_rate: Poisson rate ``q = expected batch / training images``.
        delta: the delta epsilon is reported at.
        lr: every party's learning rate (Adam under the DP optimisers).
        batch_size: expected batch size.
        images_per_patient: the most training images one patient has (patient-level epsilon).
        secure_mode: draw the noise from a CSPRNG (needs ``torchcsprng``), as opacus' secure mode.
        private_parts: names of the parts to privatise; ``None`` (the defence): every part. A
            subset is the across-steps control only: its epsilon is nominal and never reported.
    """

    def __init__(self, model: SplitModel, noise_multiplier: float, max_grad_norm: float, sample_rate: float,
                 delta: float, lr: float, batch_size: int, images_per_patient: int = 1, secure_mode: bool = False,
                 private_parts: list[str] | None = None):
        # opacus takes seconds to import: only for DP-SGD
        from opacus import GradSampleModule
        from opacus.accountants import RDPAccountant
        from opacus.optimizers import DPOptimizer
        from opacus.validators import ModuleValidator

        names = [p.name for p, _ in model.chain]
        unknown = sorted(set(private_parts or []) - set(names))
        if unknown:
            raise ValueError(f"DP-SGD: no part(s) {unknown} in the model; parts are {names}")
        # opacus' hooks warn on every step because the part inputs do not require gradients; the
        # per-sample gradients it needs are those of the parameters, so the warning is noise.
        warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed with "
                                "respect to module outputs", category=UserWarning)
        for part, _ in model.chain:  # GroupNorm everywhere: the per-sample path runs through all parts
            device = next(part.parameters(), torch.empty(0)).device
            _fix_stage_modules(part)
            part.to(device)  # the GroupNorms that replace BatchNorm are created on the CPU
        trainable = [p for p, _ in model.chain if any(q.requires_grad for q in p.parameters())]
        chosen = [p for p in trainable if private_parts is None or p.name in private_parts]
        if not chosen:
            raise ValueError(f"DP-SGD: none of the parts {private_parts} has trainable parameters; parts are {names}")
        self.complete = len(chosen) == len(trainable)  # the only case whose epsilon is a bound
        self.noise_multiplier = noise_multiplier
        self.max_grad_norm = max_grad_norm
        self.part_clip = max_grad_norm / math.sqrt(len(chosen))  # C_j: sum of C_j^2 is C^2
        self.sample_rate = sample_rate
        self.delta = delta
        self.images_per_patient = images_per_patient
        self.secure_mode = secure_mode
        self.private_parts = [p.name for p in chosen]
        self.parameters_by_part = {p.name: sum(q.numel() for q in p.parameters()) for p in trainable}
        generator = _secure_generator() if secure_mode else None  # None: torch's global generator
        self.accountant = RDPAccountant()
        self.modules: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        for part in trainable:
            adam = torch.optim.Adam([q for q in part.parameters() if q.requires_grad], lr=lr)
            if part not in chosen:
                self.optimizers[part.name] = adam
                continue
            errors = ModuleValidator.validate(part, strict=False)
            if errors:
                raise ValueError(f"DP-SGD: part {part.name!r} cannot be made private: {errors}")
            # the hooks sit on the part's own layers: the chain keeps running the part itself
            self.modules[part.name] = GradSampleModule(part, loss_reduction="mean")
            self.optimizers[part.name] = DPOptimizer(
                adam, noise_multiplier=noise_multiplier * max_grad_norm / self.part_clip, max_grad_norm=self.part_clip,
                expected_batch_size=batch_size, loss_reduction="mean", generator=generator, secure_mode=secure_mode)
        # one accountant for the joint mechanism, stepped once per step (by the first private part)
        first = self.optimizers[self.private_parts[0]]
        first.attach_step_hook(lambda _: self.accountant.step(noise_multiplier=noise_multiplier,
                                                              sample_rate=sample_rate))
        for party in model.parties:
            own = [self.optimizers[p.name] for p in party.parts.values() if p.name in self.optimizers]
            party.optimizer = _Optimizers(own) if own else None

    @property
    def steps(self) -> int:
        return sum(n for _, _, n in self.accountant.history) if self.accountant.history else 0

    def epsilon(self) -> float | None:
        """Image-level epsilon at ``delta`` after the steps so far (0 before the first); ``None``
        when not every part is private (a nominal number is not a bound, so none is given)."""
        if not self.complete:
            return None
        return 0.0 if not self.accountant.history else float(self.accountant.get_epsilon(self.delta))

    def patient_epsilon(self) -> float | None:
        """Patient-level epsilon at ``delta``: group privacy over ``images_per_patient`` images."""
        if not self.complete:
            return None
        if not self.accountant.history:
            return 0.0
        return patient_epsilon(lambda d: float(self.accountant.get_epsilon(d)), self.images_per_patient, self.delta)[0]

    def remove_hooks(self) -> None:
        """Take opacus' per-sample gradient hooks off the parts (after training: attackers copy the parts)."""
        for module in self.modules.values():
            module.remove_hooks()

    def account_empty_step(self) -> None:
        """A Poisson draw that picked no example is still a (pure-noise) step of the mechanism."""
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)

    def scope(self) -> dict:
        """What the epsilon covers and what it does not, in words the report prints."""
        parts = ", ".join(f"{n} ({self.parameters_by_part[n]:,})" for n in self.private_parts)
        rng = SECURE_RNG if self.secure_mode else RNG_CAVEAT
        if not self.complete:
            left = sorted(set(self.parameters_by_part) - set(self.private_parts))
            return {"covers": f"{NOMINAL}: only {parts} private; {', '.join(left)} train without DP and carry each "
                              "image into every later gradient, so no epsilon is given",
                    "not_covered": NOT_COVERED, "rng": rng}
        return {
            "covers": f"the trained weights of every part ({parts}) together, add/remove one training image, delta "
                      f"{self.delta:g}, one RDP accountant for the joint mechanism, Poisson sampling q = "
                      f"{self.sample_rate:.4g}",
            "joint_clip": f"each of the {len(self.private_parts)} parts clips its per-sample gradient to C/sqrt(J) = "
                          f"{self.part_clip:.4g}, so all parts together to C = {self.max_grad_norm:g}; every part adds "
                          f"noise of std sigma*C",
            "unit": f"epsilon: one image; epsilon_patient: one patient (group privacy over at most "
                    f"{self.images_per_patient} images per patient)",
            "normalisation": "every BatchNorm of every part replaced by GroupNorm, so each sample's clipped gradient "
                             "depends on that sample alone",
            "trust": "holds when every party clips and noises its own parts; a malicious server (FSHA) need not, and "
                     "then only the client's parts are private",
            "not_covered": NOT_COVERED,
            "rng": rng,
        }


class _Optimizers:
    """A party's optimiser over its parts: one (DP or plain) optimiser per part."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = optimizers

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}


def install(model: SplitModel, strength: float, setting: DefenceSetting) -> tuple[dict, DPSGD]:
    """DP-SGD on every part: sigma = ``strength``, joint clip 1.0, delta 1e-5, q = batch / training images."""
    n, b = setting.train_size, setting.batch_size
    if not 0 < b <= n:
        # Poisson sampling draws each image with probability q = b / n, so q must be a probability
        raise ValueError(f"DP-SGD: the expected batch size ({b}) must be between 1 and the client's number of "
                         f"training images ({n}); lower the batch size or give the client more images")
    hook = DPSGD(model, strength, 1.0, b / n, 1e-5, setting.lr, b, images_per_patient=setting.images_per_patient,
                 secure_mode=setting.dp_secure_mode)
    return {"sigma": strength, "max_grad_norm": 1.0, "delta": 1e-5, "sample_rate": b / n,
            "images_per_patient": setting.images_per_patient,
            "sampling": "Poisson (each image joins a batch with probability q)", **hook.scope()}, hook


def _epsilon(hook: DPSGD) -> dict:
    return {"epsilon": hook.epsilon(), "epsilon_patient": hook.patient_epsilon(), "steps": hook.steps}


def groupnorm_everywhere(part: nn.Module) -> None:
    """DP-SGD's change to a part's architecture: every BatchNorm becomes a GroupNorm."""
    _fix_stage_modules(part)


SPEC = DefenceSpec("dpsgd", "noise multiplier sigma (DP-SGD on every part)", install, poisson_batches=True,
                   final_facts=_epsilon, architecture_change=groupnorm_everywhere,
                   after_training=lambda hook: hook.remove_hooks())
