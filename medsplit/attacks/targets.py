"""The models the harness attacks and judges with: the target split model (built, defended,
trained), its utility, and the validator that scores reconstructions.

Device: models are initialised on the CPU and then moved, and batch indices come from CPU
generators, so a seed gives the same weights and batches on every device.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from medsplit.attacks.tap import RecentTraffic, crossing_key, gradient_to_first_part
from medsplit.attacks.tasks import AttackTask, AttackData, attack_task
from medsplit.defences import DEFENCES, DefenceNotApplicable, DefenceSetting, HijackDetector, check_defence_names
from medsplit.defences.sampling import poisson_batch
from medsplit.split import SplitModel, cut, two_party

if TYPE_CHECKING:
    from medsplit.attacks.profiles import Profile

CPU = torch.device("cpu")


def build_target(task: str | AttackTask, profile: Profile, in_channels: int, num_classes: int, lr: float = 1e-3,
                 device: torch.device = CPU) -> SplitModel:
    """The target split model on ``device`` (initialised on the CPU, so every device starts from the same weights)."""
    t = attack_task(task)
    table = t.table(profile, in_channels, num_classes)
    make = lambda params: torch.optim.Adam(params, lr=lr)  # noqa: E731
    return two_party(parts_on(cut(table, t.cut(profile)), device), t.loss, make_optimizer=make)


def parts_on(parts: list, device: torch.device) -> list:
    """Move parts before their parties build optimisers over their parameters."""
    for part in parts:
        part.to(device)
    return parts


def apply_defence(model: SplitModel, task: str | AttackTask, name: str, strength: float, data: AttackData,
                  profile: Profile, generator: torch.Generator, lr: float = 1e-3, batch_size: int | None = None,
                  train_size: int | None = None, train_steps: int | None = None) -> tuple[dict, Any]:
    """Install defence ``name`` at ``strength`` on ``model``; returns (its privacy facts, the hook object).

    Facts that are strings (what an epsilon covers) go to the report's notes, numbers to the rows.
    ``lr``, ``batch_size`` (default: the profile's), ``train_size`` (default: the client's
    training images) and ``train_steps`` (default: the profile's target steps) are the client's,
    for DP-SGD's optimiser and sampling rate and the Laplace mechanism's whole-training bound. A
    defence that cannot apply to the task raises :class:`~medsplit.defences.DefenceNotApplicable`."""
    check_defence_names([name])
    spec = DEFENCES[name]
    setting = DefenceSetting(part=model.chain[0][0].name, sent_key=crossing_key(model), generator=generator,
                             images=data.x_train, num_classes=data.num_classes, img_size=profile.img_size, lr=lr,
                             batch_size=batch_size or profile.batch_size,
                             train_size=train_size or data.x_train.shape[0],
                             laplace_c=profile.laplace_c, train_steps=train_steps or profile.target_steps,
                             images_per_patient=data.images_per_patient, dp_secure_mode=profile.dp_secure_mode)
    reason = spec.applies_to(attack_task(task))
    if reason:
        raise DefenceNotApplicable(reason)
    return spec.install(model, strength, setting)


def train_target(model: SplitModel, data: AttackData, profile: Profile, generator: torch.Generator,
                 detector: HijackDetector | None = None, dp=None) -> float:
    """Train on the client's private training images; returns seconds.

    The auxiliary images (the server's in SDAR and FSHA, the colluder's in ADRA) are *not*
    trained on: SDAR's threat model (Zhu et al. 2025, and its authors' code) gives the server
    auxiliary data disjoint from what the client trains on. ADRA's colluder only runs its images
    through the trained client part, which it holds as a hospital.

    Args:
        dp: the hook of a defence that samples Poisson batches (the
            :class:`~medsplit.defences.dpsgd.DPSGD` when DP-SGD is on): batches are then
            drawn at its rate (an empty draw is a step the accountant still counts).
    """
    x, y = data.x_train, data.y_train
    start = time.perf_counter()
    model.train()
    for step in range(1, profile.target_steps + 1):
        if dp is not None:
            i = poisson_batch(x.shape[0], dp.sample_rate, generator)
            if len(i) == 0:
                dp.account_empty_step()
                continue
        else:
            i = torch.randint(0, x.shape[0], (profile.batch_size,), generator=generator)
        i = i.to(x.device)
        if detector is not None and detector.should_probe(step):
            fake = gradient_to_first_part(model, x[i], detector.fake_targets(y[i], data.num_classes))
            regular = gradient_to_first_part(model, x[i], y[i])
            detector.update(step, regular, fake)
        model.train_step(x[i], y[i])
    return time.perf_counter() - start


@torch.no_grad()
def utility(model: SplitModel, task: str | AttackTask, x: torch.Tensor, y: torch.Tensor) -> float:
    """The task's score (Dice, AUC: :meth:`AttackTask.utility`) on held-out images."""
    model.eval()
    out = torch.cat([model.forward(x[i:i + 32]) for i in range(0, x.shape[0], 32)])
    model.train()
    return attack_task(task).utility(out, y)


def train_validator(task: str | AttackTask, data: AttackData, profile: Profile,
                    generator: torch.Generator) -> torch.nn.Module:
    """A separate model (never the target) trained on the auxiliary images, to judge reconstructions."""
    t = attack_task(task)
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))  # same validator for every run of a seed
    net = t.table(profile, data.x_train.shape[1], data.num_classes)
    net.to(data.device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for _ in range(profile.validator_steps):
        i = torch.randint(0, data.x_aux.shape[0], (profile.batch_size,), generator=generator).to(data.device)
        opt.zero_grad(set_to_none=True)
        t.loss(net(data.x_aux[i]), data.y_aux[i]).backward()
        opt.step()
    return net.eval()


@torch.no_grad()
def validator_score(net: torch.nn.Module, task: str | AttackTask, images: torch.Tensor, y: torch.Tensor) -> float:
    """The validator's score on ``images`` (:meth:`AttackTask.validator_score`: Dice for lungs,
    balanced accuracy for fundus images)."""
    return attack_task(task).validator_score(net(images), y)


@dataclass
class DefendedTarget:
    """A target trained once with one defence; every attack that shares targets attacks it."""

    model: SplitModel
    facts: dict
    hook: object
    utility: float
    seconds: float
    detector: HijackDetector | None
    seen: torch.Tensor  # what the first part sent in the last training steps, as the server received it


def train_defended_target(task: str | AttackTask, name: str, strength: float, seed: int, data: AttackData,
                          profile: Profile) -> DefendedTarget:
    """Build, defend and train the target once; every honest-but-curious attack reuses it."""
    spec = DEFENCES[name]
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = build_target(task, profile, data.x_train.shape[1], data.num_classes, device=data.device)
    # the client watches for a hijack where no defence changes what it sends (as in honest training)
    detector = HijackDetector(probe_every=profile.probe_every) if name == "none" else None
    facts, hook = apply_defence(model, task, name, strength, data, profile, g)
    # the server keeps the traffic of the last training steps: about one pass over the private images
    traffic = RecentTraffic(model, math.ceil(data.x_train.shape[0] / profile.batch_size))
    try:
        seconds = train_target(model, data, profile, g, detector, dp=hook if spec.poisson_batches else None)
    finally:
        traffic.close()
    if spec.final_facts is not None:
        facts.update(spec.final_facts(hook))
    if spec.after_training is not None:
        spec.after_training(hook)
    if spec.diagnostics is not None:
        facts.update(spec.diagnostics(hook))
    util = utility(model, task, data.x_test, data.y_test)
    return DefendedTarget(model, facts, hook, util, seconds, detector, traffic.activations())


def privacy_columns(facts: dict) -> dict:
    """A defence's numeric facts as row columns (``privacy.<fact>``)."""
    return {f"privacy.{k}": v for k, v in facts.items() if not isinstance(v, str)}


def privacy_notes(facts: dict) -> dict:
    """A defence's facts in words (what an epsilon covers), for the report's notes."""
    return {k: v for k, v in facts.items() if isinstance(v, str)}


__all__ = ["CPU", "DefenceNotApplicable", "DefendedTarget", "apply_defence", "build_target", "parts_on",
           "privacy_columns", "privacy_notes", "train_defended_target", "train_target", "train_validator", "utility",
           "validator_score"]
