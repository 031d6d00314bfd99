"""Feature-Space Hijacking Attack (Pasquini, Ateniese and Bernaschi, CCS 2021): the attacker's side.

Threat model: the *server* is malicious and replaces its part of the protocol. It holds
auxiliary images from the same distribution (here: a patient-disjoint split of the same
source, never the victim's images). It trains

* a pilot encoder ``f~`` and its inverse ``f~^-1`` as an autoencoder on the auxiliary data;
* a WGAN-GP critic ``D`` telling ``f~(x_aux)`` (real) from the client's activations ``f(x_priv)`` (fake);

and instead of the task gradient it returns to the client ``d/dz [-D(z)]`` at the client's
activation ``z``, which drives ``f`` into ``f~``'s feature space. Reconstruction of any
private image the client sends is then ``f~^-1(f(x_priv))``.

What is where: this module holds the attacker's networks and their training
(:class:`FSHAServer`), the hyper-parameters (:class:`FSHAConfig`), the result
(:class:`FSHAResult`) and the scoring of reconstructions (:func:`decode`, :func:`evaluate`).
The attack itself runs in :mod:`medsplit.attacks.fsha_protocol`: a
:class:`~medsplit.attacks.fsha_protocol.HijackedSplitModel` is the real split protocol (every
part, every party, the client's own optimiser and defences, every tensor on the channel) whose
server returns the adversarial gradient, :func:`~medsplit.attacks.fsha_protocol.run_fsha_protocol`
is the iteration loop, and :func:`~medsplit.attacks.fsha_protocol.fsha_row` the harness's run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from medsplit.attacks.nets import decoder, discriminator, pilot_encoder
from medsplit.attacks.quality import reconstruction_quality


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


@torch.no_grad()
def decode(server: FSHAServer, z: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """``f~^-1(z)`` in batches."""
    return torch.cat([server.decoder(z[i:i + batch_size]) for i in range(0, z.shape[0], batch_size)])


def evaluate(server: FSHAServer, z_eval: torch.Tensor, x_eval: torch.Tensor) -> dict[str, float]:
    """The attack's reconstruction quality on the held-out victims, with the server's diagnostics."""
    return {**reconstruction_quality(decode(server, z_eval), x_eval), **server.diagnostics(x_eval, z_eval)}

