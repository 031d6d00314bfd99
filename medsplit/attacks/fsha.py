"""Feature-Space Hijacking Attack (Pasquini, Ateniese and Bernaschi, CCS 2021).

Threat model: the *server* is malicious and replaces its part of the protocol. It holds
auxiliary images from the same distribution (here: a patient-disjoint split of the same
source, never the victim's images). It trains

* a pilot encoder ``f~`` and its inverse ``f~^-1`` as an autoencoder on the auxiliary data;
* a WGAN-GP critic ``D`` telling ``f~(x_aux)`` (real) from the client's activations ``f(x_priv)`` (fake);

and instead of the task gradient it returns to the client ``d/dz [-D(z)]`` at the client's
activation ``z``, which drives ``f`` into ``f~``'s feature space. Reconstruction of any
private image the client sends is then ``f~^-1(f(x_priv))``. The client runs its usual code
(optimiser, defences); everything moves through a :class:`~medsplit.split.channel.Channel`,
so the server sees what crosses (noisy activations under a noise defence) and a non-finite
tensor stops the run naming the party and step.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn

from medsplit.attacks.nets import decoder, discriminator, pilot_encoder
from medsplit.attacks.quality import reconstruction_quality
from medsplit.defences.detector import HijackDetector
from medsplit.split.channel import Channel


@dataclass
class FSHAConfig:
    """FSHA hyper-parameters; the defaults are the paper's.

    Args:
        iterations: client steps (paper: 10,000).
        batch_size: private and auxiliary batch size (paper: 64).
        lr_client: the client's Adam learning rate (the client's choice; paper setting 1e-5).
        lr_pilot, lr_decoder: Adam for ``f~`` and ``f~^-1`` (paper: 1e-5).
        lr_discriminator: Adam for ``D`` (paper: 1e-4).
        gp_weight: WGAN gradient-penalty weight (paper: 500).
        width: hidden channels of the attacker's networks.
        pilot_batch_norm: the pilot ends in a BatchNorm like the client's conv-BatchNorm-ReLU
            part (see :func:`~medsplit.attacks.nets.pilot_encoder`). On by default: a benchmark
            runs each attack at its strongest, and the matched pilot is the stronger FSHA here
            (paper-cpu, 4,000 iterations, U-shaped lungs: MSE 0.0074 against the free pilot's
            lowest 0.026; ``docs/studies/fsha.md``). ``False`` (``--set
            fsha.pilot_batch_norm=false``) is the free pilot every FSHA result committed before
            2026-12-03 used.
        log_every: evaluate reconstructions of held-out private images every this many iterations.
    """

    iterations: int = 10_000
    batch_size: int = 64
    lr_client: float = 1e-5
    lr_pilot: float = 1e-5
    lr_decoder: float = 1e-5
    lr_discriminator: float = 1e-4
    gp_weight: float = 500.0
    width: int = 32
    log_every: int = 500
    pilot_batch_norm: bool = True


class FSHAServer(nn.Module):
    """The malicious server: pilot encoder, decoder and critic, and their optimisers.

    Args:
        in_channels, image_size: of the images.
        act_shape: ``(C, h, w)`` of the client's activation at the cut.
        cfg: hyper-parameters.
        nonnegative: the client's activations are >= 0 (its part ends in a ReLU); the
            attacker reads this off the activations it receives.
        device: where the server's networks live (the client's activations arrive there).
    """

    def __init__(self, in_channels: int, image_size: int, act_shape: tuple[int, int, int], cfg: FSHAConfig,
                 nonnegative: bool = False, device: torch.device | str = "cpu"):
        super().__init__()
        self.cfg = cfg
        # built on the CPU (the same initial weights on every device), moved before the optimisers exist
        self.pilot = pilot_encoder(in_channels, image_size, act_shape, cfg.width, nonnegative, cfg.pilot_batch_norm).to(device)
        self.decoder = decoder(act_shape, in_channels, image_size, cfg.width).to(device)
        self.critic = discriminator(act_shape, 2 * cfg.width).to(device)
        self.opt_ae = torch.optim.Adam([{"params": self.pilot.parameters(), "lr": cfg.lr_pilot},
                                        {"params": self.decoder.parameters(), "lr": cfg.lr_decoder}])
        self.opt_d = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr_discriminator)

    def client_gradient(self, z: torch.Tensor) -> torch.Tensor:
        """The gradient returned to the client: of the adversarial loss ``-mean D(z)``, not of any task."""
        z = z.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(-self.critic(z).mean(), z)
        return grad

    def update(self, x_aux: torch.Tensor, z_priv: torch.Tensor) -> dict[str, float]:
        """One step of the autoencoder (on auxiliary images) and of the critic."""
        self.opt_ae.zero_grad(set_to_none=True)
        ae_loss = torch.nn.functional.mse_loss(self.decoder(self.pilot(x_aux)), x_aux)
        ae_loss.backward()
        self.opt_ae.step()
        real = self.pilot(x_aux).detach()
        fake = z_priv.detach()
        n = min(real.shape[0], fake.shape[0])
        real, fake = real[:n], fake[:n]
        self.opt_d.zero_grad(set_to_none=True)
        alpha = torch.rand(n, *([1] * (real.ndim - 1)), device=real.device)
        mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        (g,) = torch.autograd.grad(self.critic(mixed).sum(), mixed, create_graph=True)
        gp = ((g.reshape(n, -1).norm(dim=1) - 1) ** 2).mean()
        d_loss = self.critic(fake).mean() - self.critic(real).mean() + self.cfg.gp_weight * gp
        d_loss.backward()
        self.opt_d.step()
        return {"ae_loss": float(ae_loss.detach()), "d_loss": float(d_loss.detach())}

    @torch.no_grad()
    def diagnostics(self, x_eval: torch.Tensor, z_eval: torch.Tensor, batch_size: int = 64) -> dict[str, float]:
        """Why the attack stands where it does, on the held-out victims ``x_eval`` whose activations
        the server received as ``z_eval``:

        * ``pilot_mse``, ``pilot_ssim``: the attacker's own autoencoder ``f~^-1(f~(x_eval))``, the
          ceiling the attack reaches once the client's features match the pilot's;
        * ``critic_gap``: ``mean D(f~(x_eval)) - mean D(z_eval)``, the critic's estimate of how far
          the client's features still are from the pilot's (the WGAN distance, up to its scale).
        """
        pilot = torch.cat([self.pilot(x_eval[i:i + batch_size]) for i in range(0, x_eval.shape[0], batch_size)])
        ceiling = reconstruction_quality(decode(self, pilot, batch_size), x_eval)
        gap = float(self.critic(pilot).mean() - self.critic(z_eval).mean())
        return {"pilot_mse": ceiling["mse"], "pilot_ssim": ceiling["ssim"], "critic_gap": gap}


@dataclass
class FSHAResult:
    # {"iteration", "mse", "psnr", "ssim", "seconds"} and FSHAServer.diagnostics' keys
    history: list[dict]
    reconstructions: torch.Tensor  # of the held-out private images, at the end
    final: dict
    detector: dict | None
    config: dict


class FSHAClientSession:
    """A standalone two-party client (one part, its optimiser, its defences) against a hijacking
    server. The harness runs FSHA inside the real protocol instead (:class:`HijackedSplitModel`),
    which for a U-Net keeps the client decoder, the skips and the masks at the hospital.

    The client runs its own code: its part, its optimiser, its defences
    (``send_transform``, ``regularizer`` with the signatures of
    :class:`~medsplit.split.split_model.SplitModel` hooks) and, optionally, a hijack detector.

    Args:
        client_part: the client's first part (a :class:`~medsplit.split.cut.Part`).
        sent_key: the tensor of ``client_part`` that crosses to the server.
        channel: carries activations, labels and gradients.
        server: the FSHA server.
        lr: the client's learning rate.
        send_transform, regularizer: client-side defences (optional).
        client_name, server_name: party names for the channel.
    """

    def __init__(self, client_part: nn.Module, sent_key: str, channel: Channel, server: FSHAServer, lr: float,
                 send_transform: Callable | None = None, regularizer: Callable | None = None,
                 client_name: str = "client0", server_name: str = "server"):
        self.part, self.key, self.channel, self.server = client_part, sent_key, channel, server
        self.optimizer = torch.optim.Adam(client_part.parameters(), lr=lr)
        self.send_transform, self.regularizer = send_transform, regularizer
        self.client, self.server_name = client_name, server_name
        self.link = f"{getattr(client_part, 'name', 'client')}->server"

    def round(self, x: torch.Tensor, y: torch.Tensor | None, x_aux: torch.Tensor, step: bool = True) -> torch.Tensor:
        """One protocol round; returns the gradient the client received. ``step=False`` for a
        detector's fake round: the client discards the gradient (the server cannot tell)."""
        self.part.train()
        self.optimizer.zero_grad(set_to_none=True)
        outputs = self.part({"x": x})
        sent = {self.key: outputs[self.key]}
        if self.send_transform is not None:
            sent = self.send_transform(sent)
        received = self.channel.send(self.client, self.server_name, "activation", sent, link=self.link)
        if y is not None:  # the protocol sends labels; the hijacker ignores them
            self.channel.send(self.client, self.server_name, "label", {"y": y}, link="data->server")
        z = received[self.key]
        grad = self.server.client_gradient(z)
        back = self.channel.send(self.server_name, self.client, "gradient", {self.key: grad},
                                 link="server->" + self.link.split("->")[0])[self.key]
        if step:
            tensors, grads = [sent[self.key]], [back]
            if self.regularizer is not None:
                tensors.append(self.regularizer({"x": x}, outputs))
                grads.append(None)
            torch.autograd.backward(tensors, grads)
            self.optimizer.step()
        self.server.update(x_aux, z)
        self.channel.step += 1
        return back

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """The server's reconstruction ``f~^-1(z)`` of what the client sends for ``x`` at inference."""
        return decode(self.server, self.sent_features(x, batch_size), batch_size)

    @torch.no_grad()
    def sent_features(self, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """What the server receives for ``x`` at inference (after the client's send transform): the part
        in eval mode, so scoring the attack does not move its BatchNorm running statistics."""
        self.part.eval()
        phase, self.channel.phase = self.channel.phase, "eval"
        try:
            out = []
            for i in range(0, x.shape[0], batch_size):
                sent = {self.key: self.part({"x": x[i:i + batch_size]})[self.key]}
                if self.send_transform is not None:
                    sent = self.send_transform(sent)
                out.append(self.channel.send(self.client, self.server_name, "activation", sent, link=self.link)[self.key])
            return torch.cat(out)
        finally:
            self.channel.phase = phase
            self.part.train()


@torch.no_grad()
def decode(server: FSHAServer, z: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """``f~^-1(z)`` in batches."""
    return torch.cat([server.decoder(z[i:i + batch_size]) for i in range(0, z.shape[0], batch_size)])


def evaluate(server: FSHAServer, z_eval: torch.Tensor, x_eval: torch.Tensor) -> dict[str, float]:
    """The attack's reconstruction quality on the held-out victims, with the server's diagnostics."""
    return {**reconstruction_quality(decode(server, z_eval), x_eval), **server.diagnostics(x_eval, z_eval)}


def run_fsha(session: FSHAClientSession, x_priv: torch.Tensor, x_aux: torch.Tensor, x_eval: torch.Tensor,
             cfg: FSHAConfig, y_priv: torch.Tensor | None = None, detector: HijackDetector | None = None,
             num_classes: int | None = None, generator: torch.Generator | None = None,
             clock: Callable[[], float] | None = None) -> FSHAResult:
    """Run FSHA for ``cfg.iterations`` and log reconstruction quality of ``x_eval`` (held-out private images).

    Args:
        session: the client session wired to the malicious server.
        x_priv: the client's training images (float, [0, 1]); ``y_priv`` their targets (sent, ignored).
        x_aux: the server's auxiliary images (disjoint from ``x_priv`` and ``x_eval``).
        x_eval: held-out private images the quality is measured on.
        cfg: hyper-parameters (iterations, batch size, learning rates, ...).
        detector: optional client-side hijack detector (fake rounds with randomised targets).
        num_classes: for the detector's random labels.
        generator: batch sampling RNG (a CPU generator; the indices are moved to the images' device).
        clock: time source for the history (``time.perf_counter`` by default).
    """
    clock = clock or time.perf_counter
    start = clock()
    history = []

    def log(it: int) -> None:
        history.append({"iteration": it, **evaluate(session.server, session.sent_features(x_eval), x_eval),
                        "seconds": clock() - start})

    log(0)
    for it in range(1, cfg.iterations + 1):
        i = torch.randint(0, x_priv.shape[0], (cfg.batch_size,), generator=generator).to(x_priv.device)
        j = torch.randint(0, x_aux.shape[0], (cfg.batch_size,), generator=generator).to(x_aux.device)
        xb, yb = x_priv[i], (y_priv[i] if y_priv is not None else None)
        if detector is not None and yb is not None and detector.should_probe(it):
            fake = session.round(xb, detector.fake_targets(yb, num_classes), x_aux[j], step=False)
            regular = session.round(xb, yb, x_aux[j])
            detector.update(it, regular, fake)
        else:
            session.round(xb, yb, x_aux[j])
        if it % cfg.log_every == 0 or it == cfg.iterations:
            log(it)
    recon = session.reconstruct(x_eval)
    return FSHAResult(history, recon, history[-1], detector.summary() if detector else None, asdict(cfg))
