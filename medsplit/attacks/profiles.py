"""Scales of the attack x defence evaluation: :class:`Profile`, the stock ``PROFILES``, the
``--set`` overrides (:func:`customise`) and which profile a device gets by default."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from medsplit.attacks.fsha import FSHAConfig
from medsplit.attacks.inversion import InversionConfig
from medsplit.attacks.sdar import SDARConfig
from medsplit.config import ConfigError, with_overrides
from medsplit.data.image_size import MIN_IMAGE_SIZE
from medsplit.train import device as train_device

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class Profile:
    """Scale of one evaluation. Args: see the field comments."""

    name: str
    img_size: int
    target_steps: int  # training steps of the target split model
    batch_size: int
    fsha: FSHAConfig
    inversion: InversionConfig
    validator_steps: int
    strengths: dict[str, list[float]]  # defence -> strengths evaluated against model inversion
    fsha_defences: dict[str, list[float]]  # defence -> strengths evaluated against FSHA
    seeds: list[int] = field(default_factory=lambda: [0])
    max_images: int = 600  # retinopathy subset
    base_channels: int = 8  # U-Net width
    cut_lungs: int = 2
    cut_retinopathy: int = 4
    label_steps: int = 100
    laplace_c: float = 1.0
    probe_every: int = 10
    sdar: SDARConfig = field(default_factory=SDARConfig)
    # defence -> strengths SDAR runs against (it reuses ADRA's target; None: every strength of
    # ``strengths``). Each SDAR run trains four networks, so the CPU profile runs one per defence.
    sdar_strengths: dict[str, list[float]] | None = None
    # DP-SGD's noise from a CSPRNG (opacus' secure mode; needs torchcsprng). Off: torch's generator
    # seeded with the run's seed, reproducible but not cryptographically secure.
    dp_secure_mode: bool = False


PROFILES = {
    # Reduced scales keep the paper's learning-rate *ratios* (critic 10x client and pilot) but
    # multiply them by 10 so that hundreds, not thousands, of CPU iterations show the attack.
    "tiny": Profile("tiny", 16, 6, 8, FSHAConfig(iterations=12, batch_size=8, lr_client=1e-4, lr_pilot=1e-4, lr_decoder=1e-4,
                                                 lr_discriminator=1e-3, width=8, log_every=6),
                    InversionConfig(steps=20, batch_size=8, width=8, log_every=10), 5,
                    {"none": [0], "nopeek": [1.0], "laplace": [0.5], "mixing": [2], "proxy": [0.5], "dpsgd": [1.0]},
                    {"none": [0], "nopeek": [1.0]}, max_images=120, label_steps=6, probe_every=3,
                    sdar=SDARConfig(steps=30, batch_size=8, lr=3e-3, width=8, log_every=15)),
    # reduced: end to end in 9 min (lungs) and 17 min (retinopathy) on the shared 2-core CPU.
    # Laplace scales: after the L1 clip to C/2 a coordinate carries ~3e-5 at a 64 px cut, so the
    # trade-off lies between b = 1e-5 (epsilon 1e5 per release; lungs SSIM 0.74) and b = 1e-4
    # (SSIM 0.40); any b that gives a meaningful epsilon (0.5: epsilon 2) leaves pure noise.
    "reduced": Profile("reduced", 64, 200, 16, FSHAConfig(iterations=400, batch_size=16, lr_client=1e-4, lr_pilot=1e-4,
                                                          lr_decoder=1e-4, lr_discriminator=1e-3, width=16, log_every=100),
                       InversionConfig(steps=300, batch_size=16, width=16, log_every=100), 150,
                       {"none": [0], "nopeek": [0.5, 2.0], "laplace": [1e-5, 0.5], "mixing": [2, 4], "proxy": [0.5, 2.0],
                        "dpsgd": [0.5, 2.0]},
                       # dpsgd: the row answering Gawron and Stubbings (2022), FSHA against a DP-SGD client
                       {"none": [0], "nopeek": [1.0], "dpsgd": [1.0]}, cut_lungs=1, label_steps=150,
                       sdar=SDARConfig(steps=300, batch_size=16, width=16, log_every=100),
                       # the strongest strength of each defence, but Laplace's weak one (b = 0.5 leaves pure noise)
                       sdar_strengths={"none": [0], "nopeek": [2.0], "laplace": [1e-5], "mixing": [4], "proxy": [2.0],
                                       "dpsgd": [2.0]}),
    # paper-cpu: FSHA at the paper's length and learning rates (10,000 iterations, batch 64, Adam
    # 1e-5 client / pilot / decoder, 1e-4 critic, gradient penalty 500) at 32 px, the size a CPU
    # core affords (about an hour per run; attacker networks 16 channels wide), against the
    # U-shaped lung client cut after its first block; SSIM/MSE logged every 250 iterations. The
    # pilot ends in BatchNorm as the client's block does (FSHAConfig's default, the stronger attack);
    # --set fsha.pilot_batch_norm=false runs the free pilot of the rows committed before 2026-12-03.
    "paper-cpu": Profile("paper-cpu", 32, 200, 64, FSHAConfig(width=16, log_every=250),
                         InversionConfig(steps=300, batch_size=64, width=16, log_every=100), 150,
                         {"none": [0]}, {"none": [0], "nopeek": [1.0], "dpsgd": [1.0]}, cut_lungs=1),
    "full": Profile("full", 64, 3000, 64, FSHAConfig(), InversionConfig(), 2000,
                    {"none": [0], "nopeek": [0.1, 0.5, 1, 2, 5], "laplace": [1e-5, 3e-5, 1e-4, 1e-3, 0.5, 2], "mixing": [2, 3, 4, 8],
                     "proxy": [0.1, 0.5, 1, 2], "dpsgd": [0.3, 0.7, 1.0, 2.0]},
                    {"none": [0], "nopeek": [0.5, 2.0, 5.0], "laplace": [0.5, 2.0], "dpsgd": [0.5, 1.0, 2.0]}, seeds=[0, 1, 2],
                    max_images=3000, base_channels=32, label_steps=2000),
}


def customise(profile: Profile, overrides: list[str]) -> Profile:
    """The profile with ``--set`` overrides applied and checked; renamed so that its report does
    not overwrite the stock profile's."""
    if not overrides:
        return profile
    renamed = any(o.split("=", 1)[0].strip() == "name" for o in overrides)
    try:
        custom = with_overrides(profile, overrides)
    except ConfigError as e:
        raise ConfigError(f"--set: {e}; the profile's fields are {sorted(f.name for f in fields(Profile))}") from None
    if not renamed:
        custom.name = f"{profile.name}-custom"
    checks = [("img_size", custom.img_size >= MIN_IMAGE_SIZE, f"must be >= {MIN_IMAGE_SIZE}"),
              ("batch_size", custom.batch_size >= 2, "must be >= 2 (BatchNorm needs more than one sample)"),
              ("fsha.batch_size", custom.fsha.batch_size >= 2, "must be >= 2"),
              ("inversion.batch_size", custom.inversion.batch_size >= 2, "must be >= 2"),
              ("fsha.iterations", custom.fsha.iterations >= 1, "must be >= 1"),
              ("inversion.steps", custom.inversion.steps >= 1, "must be >= 1"),
              ("target_steps", custom.target_steps >= 1, "must be >= 1"),
              ("seeds", bool(custom.seeds), "must name at least one seed")]
    for key, ok, why in checks:
        if not ok:
            raise ConfigError(f"--set {key}: {why}")
    return custom


def resolve_device(name: str) -> torch.device:
    """``--device`` to a device, as training resolves ``train.device``; the harness knows only DEVICES."""
    if name not in DEVICES:
        raise ValueError(f"unknown --device {name!r}; valid devices are {list(DEVICES)}")

    return train_device.resolve_device(name, setting="--device {}")


def default_profile(device: torch.device) -> str:
    """Paper scale on a GPU, the reduced scale on a CPU."""
    return "full" if device.type == "cuda" else "reduced"
