"""SDAR: passive inference by simulators and adversarial regularisation (Zhu et al., NDSS 2025,
"Passive Inference Attacks on Split Learning via Adversarial Regularization"). Our own code,
written from the paper's description.

Threat model: the server is honest-but-curious. It follows the protocol and keeps what crossed
the channel: the activations ``z`` the hospitals sent (after any defence's transform) and, in a
two-part split, the labels. It owns its own (trained) parts ``g`` and auxiliary labelled data
from the same distribution (the patient-disjoint auxiliary half, as FSHA's server; the client
never trains on it, as in the paper and its authors' code). It knows the
client parts' *architecture*, not their weights. No hospital colludes: unlike model inversion,
the server never sees an (image, activation) pair of the real client.

The attacker trains, from scratch, against the defended target:

* a **simulator** ``f~`` of the client part (the client's architecture, fresh weights), trained
  so that the server's real ``g`` performs the task on ``f~(x_aux)`` (task loss on the auxiliary
  labels), regularised adversarially: a discriminator ``D_f`` tells the real client's
  activations (what crossed) from ``f~(x_aux)``, and ``f~`` is trained to fool it, so its
  feature space is the client's and not merely *a* feature space ``g`` can read;
* in a **U-shaped** split, where the head and the masks stay with the client, also a simulator
  ``h~`` of the client decoder, trained through ``g`` with ``f~`` on the auxiliary masks; the
  private masks are inferred as ``h~(g(z), skips)`` (at cut 1 the only skip is ``z`` itself;
  deeper skips come from ``f~`` applied to the reconstruction);
* a **decoder** ``f~^-1`` from activations to images, trained on ``(f~(x_aux), x_aux)`` and
  regularised adversarially: a discriminator ``D_x`` tells auxiliary images from the
  decoder's outputs on the *real* activations, so the decoder's output on what the client sends
  looks like a real image;
* the decoder and both discriminators are **conditioned on the label** (class one-hot, or the
  mask resized to the feature map): the labels that crossed, the auxiliary labels, or, for the
  victims and in the U-shape, the labels the attacker infers (``argmax g(z)`` or ``h~``).

Simplifications against the paper (stated, not hidden): the attacker trains *after* the target
has trained (offline), on the traffic of the last training steps and the final ``g``, instead
of alongside training; non-saturating GAN losses with BCE; no label flipping or noise on the
discriminators' inputs.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from medsplit.attacks.nets import decoder, discriminator
from medsplit.attacks.quality import reconstruction_quality
from medsplit.attacks.registry import SHARED, AttackContext, AttackSpec
from medsplit.attacks.tap import activation_shape, crossing_key, observed_activations
from medsplit.attacks.targets import DefendedTarget, privacy_columns, privacy_notes, validator_score
from medsplit.defences import DEFENCES
from medsplit.split import SplitModel, cut


@dataclass
class SDARConfig:
    """SDAR hyper-parameters (ours, at the harness' scales; the paper tunes per dataset).

    Args:
        steps: attacker training steps (each: simulator, feature critic, decoder, image critic).
        batch_size: auxiliary and observed samples per step.
        lr: Adam learning rate of the simulators and the decoder.
        lr_discriminator: Adam learning rate of the two discriminators.
        simulator_adv_weight: weight of the simulator's term fooling ``D_f``.
        decoder_adv_weight: weight of the decoder's term fooling ``D_x``.
        width: hidden channels of the decoder and of the two discriminators.
        log_every: evaluate on the victims every this many steps.
    """

    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    lr_discriminator: float = 1e-4
    simulator_adv_weight: float = 0.02
    decoder_adv_weight: float = 0.02
    width: int = 32
    log_every: int = 250


@dataclass
class SDARResult:
    history: list[dict]  # {"iteration", "mse", "psnr", "ssim"} on the victims
    reconstructions: torch.Tensor
    final: dict
    baseline: dict  # the mean auxiliary image as "reconstruction" of every victim image
    inferred_labels: torch.Tensor  # class indices, or mask probabilities in a U-shaped split
    config: dict


def _run(parts: list[nn.Module], env: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for part in parts:
        env.update(part(env))
    return env


class SDARAttack:
    """The attacker's networks and one training step; see the module docstring.

    Args:
        simulated: fresh client parts of the client's architecture, by part name (``f~``, and
            ``h~`` in a U-shaped split).
        server_parts: the server's own parts (copied and frozen here: the attacker's copy).
        order: every part name in execution order (as in the real chain).
        sent_key: the tensor the first client part sends to the server.
        output_key: the model's output tensor.
        loss_fn: the task loss ``loss_fn(output, target)``.
        num_classes: classes (labels) or 1 (masks: conditioning is the mask itself).
        image_shape: ``(C, H, W)`` of the images.
        act_shape: ``(C, h, w)`` of the sent activation.
        cfg: hyper-parameters.
    """

    def __init__(self, simulated: dict[str, nn.Module], server_parts: dict[str, nn.Module], order: list[str],
                 sent_key: str, output_key: str, loss_fn: Callable, num_classes: int,
                 image_shape: tuple[int, int, int], act_shape: tuple[int, int, int], cfg: SDARConfig):
        self.cfg = cfg
        self.sim = nn.ModuleDict(simulated)
        self.server = nn.ModuleDict({k: copy.deepcopy(v) for k, v in server_parts.items()})
        for p in self.server.parameters():
            p.requires_grad_(False)
        self.server.eval()  # its running statistics come from the real training
        self.order, self.sent_key, self.output_key = order, sent_key, output_key
        self.first = order[0]
        # a U-shaped client decoder may read skips other than z (cuts >= 2): simulated from x_hat
        later_reads = {r for n in order[1:] for r in (self.sim[n] if n in self.sim else self.server[n]).reads}
        self.needs_skips = bool((set(self.sim[self.first].sends) & later_reads) - {sent_key})
        self.prior: torch.Tensor | None = None  # mean auxiliary mask: the first guess when skips are needed
        self.loss_fn = loss_fn
        self.masks = num_classes == 1
        self.cond_channels = 1 if self.masks else num_classes
        self.num_classes = num_classes
        c, h, w = act_shape
        self.act_hw = (h, w)
        self.image_hw = tuple(image_shape[1:])
        device = next(iter(self.sim.parameters())).device
        self.decoder = decoder((c + self.cond_channels, h, w), image_shape[0], image_shape[1], cfg.width).to(device)
        # discriminators as wide as the decoder: at full-resolution cuts they dominate the cost
        self.d_feat = discriminator((c + self.cond_channels, h, w), cfg.width).to(device)
        self.d_image = discriminator((image_shape[0] + self.cond_channels, *image_shape[1:]), cfg.width).to(device)
        self.opt_sim = torch.optim.Adam(self.sim.parameters(), lr=cfg.lr)
        self.opt_dec = torch.optim.Adam(self.decoder.parameters(), lr=cfg.lr)
        self.opt_df = torch.optim.Adam(self.d_feat.parameters(), lr=cfg.lr_discriminator)
        self.opt_dx = torch.optim.Adam(self.d_image.parameters(), lr=cfg.lr_discriminator)

    # ---- pieces ------------------------------------------------------------------

    def _parts(self, skip_first: bool = False) -> list[nn.Module]:
        names = self.order[1:] if skip_first else self.order
        return [self.sim[n] if n in self.sim else self.server[n] for n in names]

    def _cond(self, y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Labels as conditioning maps: a one-hot per class, or the (soft) mask resized."""
        if self.masks:
            return F.interpolate(y.float(), size=size, mode="bilinear", align_corners=False)
        onehot = y.float() if y.is_floating_point() and y.ndim == 2 else F.one_hot(y.long(), self.num_classes).float()
        return onehot[:, :, None, None].expand(-1, -1, *size)

    def _with(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.cat([t, self._cond(y, tuple(t.shape[-2:]))], 1)

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.decoder(self._with(z, y))

    @torch.no_grad()
    def infer_labels(self, z: torch.Tensor, x_hat: torch.Tensor | None = None) -> torch.Tensor:
        """Labels of observed activations: ``argmax g(z)`` when ``g`` ends in the head, else the
        simulated decoder's mask probabilities, its deeper skips from ``f~`` on ``x_hat``."""
        was = self.sim.training
        self.sim.eval()
        try:
            if self.masks:
                env = dict(self.sim[self.first]({"x": x_hat})) if x_hat is not None else {}
                env[self.sent_key] = z
                out = _run(self._parts(skip_first=True), env)[self.output_key]
                return torch.sigmoid(out)
            env = _run(self._parts(skip_first=True), {self.sent_key: z})
            return env[self.output_key].argmax(1)
        finally:
            self.sim.train(was)

    def _labels_of(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Inferred labels of observed activations and, where the client decoder needs deeper
        skips, the reconstruction they were simulated from (decoded with the mean mask first)."""
        if not (self.masks and self.needs_skips):
            return self.infer_labels(z), None
        guess = self.prior.expand(z.shape[0], *self.prior.shape[1:])
        x_hat = self.decode(z, guess)
        return self.infer_labels(z, x_hat), x_hat

    # ---- one step ----------------------------------------------------------------

    def step(self, x_aux: torch.Tensor, y_aux: torch.Tensor, z_obs: torch.Tensor, y_obs: torch.Tensor | None) -> dict:
        """One update of every network. ``y_obs``: the labels that crossed with ``z_obs``
        (``None`` in a U-shaped split: they are inferred)."""
        bce = F.binary_cross_entropy_with_logits
        ones = lambda t: torch.ones_like(t)  # noqa: E731
        zeros = lambda t: torch.zeros_like(t)  # noqa: E731
        if self.prior is None:
            self.prior = y_aux.float().mean(0, keepdim=True).detach()
        if y_obs is None:
            with torch.no_grad():
                y_obs = self._labels_of(z_obs)[0]
        # 1. simulator(s): the task through the server's real g, and fool the feature critic
        self.sim.train()
        env = _run(self._parts(), {"x": x_aux})
        z_sim = env[self.sent_key]
        task = self.loss_fn(env[self.output_key], y_aux)
        d_sim = self.d_feat(self._with(z_sim, y_aux))
        self.opt_sim.zero_grad(set_to_none=True)
        (task + self.cfg.simulator_adv_weight * bce(d_sim, ones(d_sim))).backward()
        self.opt_sim.step()
        # 2. feature critic: real = what the client sent, fake = the simulator's
        d_real, d_fake = self.d_feat(self._with(z_obs, y_obs)), self.d_feat(self._with(z_sim.detach(), y_aux))
        self.opt_df.zero_grad(set_to_none=True)
        (bce(d_real, ones(d_real)) + bce(d_fake, zeros(d_fake))).backward()
        self.opt_df.step()
        # 3. decoder: reconstruct the auxiliary images from simulated features, and make its
        # output on the real activations look like an image to the image critic
        rec = self.decode(z_sim.detach(), y_aux)
        mse = F.mse_loss(rec, x_aux)
        x_obs = self.decode(z_obs, y_obs)
        d_dec = self.d_image(self._with(x_obs, y_obs))
        self.opt_dec.zero_grad(set_to_none=True)
        (mse + self.cfg.decoder_adv_weight * bce(d_dec, ones(d_dec))).backward()
        self.opt_dec.step()
        # 4. image critic: real = auxiliary images, fake = decoded real activations
        d_real, d_fake = self.d_image(self._with(x_aux, y_aux)), self.d_image(self._with(x_obs.detach(), y_obs))
        self.opt_dx.zero_grad(set_to_none=True)
        (bce(d_real, ones(d_real)) + bce(d_fake, zeros(d_fake))).backward()
        self.opt_dx.step()
        return {"task": float(task.detach()), "aux_mse": float(mse.detach())}

    @torch.no_grad()
    def reconstruct(self, z: torch.Tensor, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstructions and inferred labels (classes, or mask probabilities) of observed activations."""
        self.decoder.eval()
        recons, labels = [], []
        try:
            for i in range(0, z.shape[0], batch_size):
                zb = z[i:i + batch_size]
                y, _ = self._labels_of(zb)
                x_hat = self.decode(zb, y)
                recons.append(x_hat)
                labels.append(y)
        finally:
            self.decoder.train()
        return torch.cat(recons), torch.cat(labels)


def run_sdar(attack: SDARAttack, x_aux: torch.Tensor, y_aux: torch.Tensor, z_seen: torch.Tensor,
             y_seen: torch.Tensor | None, victim_z: torch.Tensor, victim_images: torch.Tensor, cfg: SDARConfig,
             generator: torch.Generator | None = None) -> SDARResult:
    """Train ``attack`` for ``cfg.steps`` and reconstruct the victims from their observed activations.

    Args:
        attack: the attacker's networks.
        x_aux, y_aux: the server's auxiliary images ([0, 1]) and labels/masks.
        z_seen: activations that crossed the channel during the last training steps (unpaired: no images).
        y_seen: the labels that crossed with them (``None`` in a U-shaped split).
        victim_z: what crossed for the held-out victims (at inference).
        victim_images: only to score the attack; the attacker never sees them.
        cfg: hyper-parameters.
        generator: batch sampling RNG (CPU; indices are moved to the data's device).
    """
    history = []
    attack.prior = y_aux.float().mean(0, keepdim=True)

    def log(step: int) -> None:
        recon, _ = attack.reconstruct(victim_z)
        history.append({"iteration": step, **reconstruction_quality(recon, victim_images)})

    log(0)
    for step in range(1, cfg.steps + 1):
        i = torch.randint(0, x_aux.shape[0], (cfg.batch_size,), generator=generator).to(x_aux.device)
        j = torch.randint(0, z_seen.shape[0], (cfg.batch_size,), generator=generator).to(z_seen.device)
        attack.step(x_aux[i], y_aux[i], z_seen[j], None if y_seen is None else y_seen[j])
        if step % cfg.log_every == 0 or step == cfg.steps:
            log(step)
    recon, labels = attack.reconstruct(victim_z)
    mean = x_aux.mean(0, keepdim=True).expand_as(victim_images)
    return SDARResult(history, recon, history[-1], reconstruction_quality(mean, victim_images), labels, asdict(cfg))


# ------------------------------------------------------------------ in the attack harness


def build_sdar(ctx: AttackContext, model: SplitModel, architecture_change: Callable[[nn.Module], None] | None = None
               ) -> SDARAttack:
    """SDAR's networks: fresh client parts of the target's architecture (the attacker knows the
    architecture, as in the paper, including a defence's change to it: ``architecture_change``),
    the server's own trained parts, decoder and critics."""
    task, data, profile = ctx.task, ctx.data, ctx.profile
    fresh = cut(task.table(profile, data.x_train.shape[1], data.num_classes), task.cut(profile))
    if architecture_change is not None:  # e.g. the target's architecture under DP-SGD: GroupNorm everywhere
        for part in fresh:
            architecture_change(part)
    simulated = {p.name: p.to(data.device) for p in fresh if p.role == "client"}
    client = model.data_owner
    server_parts = {p.name: p for p, owner in model.chain if owner is not client}
    key = crossing_key(model)
    return SDARAttack(simulated, server_parts, [p.name for p in fresh], key, model.output_key, task.loss,
                      task.label_channels(data.num_classes), tuple(data.x_train.shape[1:]),
                      activation_shape(model, data.x_train), profile.sdar)


def sdar_row(ctx: AttackContext, name: str, strength: float, target: DefendedTarget) -> tuple[dict, dict]:
    """SDAR: a passive server, no colluder. What it learns from: the activations that crossed the
    channel during the target's last training steps (``target.seen``: training-mode traffic, after
    the defence's transform; unpaired, labels inferred by its own ``g`` or simulated decoder), its
    own trained parts and its auxiliary labelled images, which the client never trained on (the
    paper's threat model). Judged on the held-out victims' inference-time activations."""
    data = ctx.data
    g = torch.Generator().manual_seed(ctx.seed)
    torch.manual_seed(ctx.seed)
    model = target.model
    attack = build_sdar(ctx, model, DEFENCES[name].architecture_change)
    vic_act = observed_activations(model, data.x_test)
    res = run_sdar(attack, data.x_aux, data.y_aux, target.seen, None, vic_act, data.x_test, ctx.profile.sdar, g)
    row = {"attack": "sdar", "defence": name, "strength": strength, "seed": ctx.seed, "utility": target.utility,
           **{k: v for k, v in res.final.items() if k != "iteration"},
           "baseline_mse": res.baseline["mse"], "baseline_ssim": res.baseline["ssim"],
           "validator_on_recon": validator_score(ctx.validator, ctx.task, res.reconstructions, data.y_test),
           **privacy_columns(target.facts), **ctx.task.inferred_label_scores(res.inferred_labels, data)}
    return row, {"history": res.history, "recon": res.reconstructions[:6].cpu(),
                 "privacy_notes": privacy_notes(target.facts)}


SPEC = AttackSpec(
    "sdar",
    "honest-but-curious server, no colluder: simulator, decoder and adversarial regularisation from the traffic and "
    "auxiliary data (Zhu et al. 2025)",
    "SDAR", SHARED, sdar_row,
    # each SDAR run trains four networks: a profile may run it at fewer strengths than ADRA
    strengths=lambda profile: profile.sdar_strengths or profile.strengths,
    summary="ssim {ssim:.3f} mse {mse:.4f}")
