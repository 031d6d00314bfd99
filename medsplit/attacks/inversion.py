"""Black-box model inversion by a decoder (honest-but-curious server colluding with one hospital).

Threat model: the server follows the protocol. One hospital colludes: it gives the server
pairs ``(x, activation)`` from the *trained* client model, where the activation is exactly
what crossed the channel for ``x`` (so under a noise defence the pairs are noisy, like
everything the server sees). The server trains a decoder from activations to images on
these pairs, then inverts the activations the other hospitals send. The decoder's input
shape is read from the observed activations, so it works at any cut.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from medsplit.attacks.nets import decoder
from medsplit.attacks.quality import reconstruction_quality
from medsplit.attacks.registry import SHARED, AttackContext, AttackSpec
from medsplit.attacks.tap import observed_activations
from medsplit.attacks.targets import DefendedTarget, privacy_columns, privacy_notes, validator_score
from medsplit.defences.dcor import bias_corrected_dcor2, distance_correlation


@dataclass
class InversionConfig:
    """Args:
        steps: decoder training steps.
        batch_size: pairs per step.
        lr: Adam learning rate.
        width: hidden channels of the decoder.
        log_every: evaluate on the victims' observed activations every this many steps.
    """

    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    width: int = 32
    log_every: int = 250


def _standardise(aux: torch.Tensor, victim: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sets of activations, standardised per channel with the auxiliary set's mean and std."""
    dims = [d for d in range(aux.ndim) if d != 1]
    mean = aux.mean(dims, keepdim=True)
    std = aux.std(dims, keepdim=True)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a dead channel stays 0
    return (aux - mean) / std, (victim - mean) / std


@dataclass
class InversionResult:
    history: list[dict]
    reconstructions: torch.Tensor
    final: dict
    baseline: dict  # the mean auxiliary image as "reconstruction" of every victim image
    config: dict


def run_inversion(aux_images: torch.Tensor, aux_activations: torch.Tensor, victim_images: torch.Tensor,
                  victim_activations: torch.Tensor, cfg: InversionConfig, generator: torch.Generator | None = None) -> InversionResult:
    """Train a decoder on the colluder's pairs and invert the victims' observed activations.

    Args:
        aux_images, aux_activations: the colluding hospital's images ([0, 1]) and what crossed for them.
        victim_images: the other hospitals' images (only to score the attack; the attacker never sees them).
        victim_activations: what crossed the channel for ``victim_images``.
        cfg: hyper-parameters.
        generator: batch sampling RNG (a CPU generator; the indices are moved to the data's device).

    The decoder trains on the device of ``aux_activations``; the reconstructions stay there.
    """
    if aux_images.shape[0] != aux_activations.shape[0]:
        raise ValueError("one activation per auxiliary image is needed")
    # The attacker standardises what it observes, per channel, with statistics of its own
    # (auxiliary) activations. Without this a defence that merely rescales (the Laplace clip
    # shrinks activations to ~1e-5) starves a fixed-learning-rate decoder and looks private.
    aux_activations, victim_activations = _standardise(aux_activations, victim_activations)
    dec = decoder(tuple(aux_activations.shape[1:]), aux_images.shape[1], aux_images.shape[-1], cfg.width)
    dec.to(aux_activations.device)
    opt = torch.optim.Adam(dec.parameters(), lr=cfg.lr)
    history = []

    def log(step: int) -> None:
        dec.eval()
        with torch.no_grad():
            q = reconstruction_quality(dec(victim_activations), victim_images)
        dec.train()
        history.append({"iteration": step, **q})

    log(0)
    for step in range(1, cfg.steps + 1):
        i = torch.randint(0, aux_images.shape[0], (cfg.batch_size,), generator=generator).to(aux_images.device)
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(dec(aux_activations[i]), aux_images[i])
        loss.backward()
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.steps:
            log(step)
    dec.eval()
    with torch.no_grad():
        recon = dec(victim_activations)
    mean = aux_images.mean(0, keepdim=True).expand_as(victim_images)
    return InversionResult(history, recon, history[-1], reconstruction_quality(mean, victim_images), asdict(cfg))


# ------------------------------------------------------------------ in the attack harness


def inversion_row(ctx: AttackContext, name: str, strength: float, target: DefendedTarget) -> tuple[dict, dict]:
    """ADRA (model inversion): a fresh decoder on the colluder's pairs, inverting the victims."""
    data = ctx.data
    g = torch.Generator().manual_seed(ctx.seed)
    model = target.model
    aux_act = observed_activations(model, data.x_aux)
    vic_act = observed_activations(model, data.x_test)
    res = run_inversion(data.x_aux, aux_act, data.x_test, vic_act, ctx.profile.inversion, g)
    n = min(64, data.x_test.shape[0])
    row = {"attack": "inversion", "defence": name, "strength": strength, "seed": ctx.seed, "utility": target.utility,
           **{k: v for k, v in res.final.items() if k != "iteration"},
           "baseline_mse": res.baseline["mse"], "baseline_ssim": res.baseline["ssim"],
           # dcor: the V-statistic NoPeek minimises, near 1 in this dimension even for noise;
           # dcor2_unbiased: about 0 for independent samples, the leakage score to read
           "dcor": float(distance_correlation(data.x_test[:n], vic_act[:n])),
           "dcor2_unbiased": bias_corrected_dcor2(data.x_test[:n], vic_act[:n]),
           "validator_on_recon": validator_score(ctx.validator, ctx.task, res.reconstructions, data.y_test),
           "validator_on_original": validator_score(ctx.validator, ctx.task, data.x_test, data.y_test),
           "train_seconds": target.seconds, **privacy_columns(target.facts)}
    extra = {"history": res.history, "recon": res.reconstructions[:6].cpu(),
             "detector": target.detector.summary() if target.detector else None,
             "privacy_notes": privacy_notes(target.facts)}
    return row, extra


SPEC = AttackSpec(
    "inversion",
    "adversarial reconstruction attack (ADRA, model inversion): honest-but-curious server + one colluding hospital "
    "trains a decoder from activations to images",
    "ADRA (model inversion)", SHARED, inversion_row, aliases=("adra", "model-inversion"),
    summary="ssim {ssim:.3f} utility {utility:.3f}")
