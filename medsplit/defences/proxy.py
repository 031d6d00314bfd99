"""Proxy-adversary (attacker-aware) training.

The client keeps a simulated inversion decoder (the proxy) that it trains, every step, to
reconstruct the images from the activations it sends; the client's own loss is then
``task loss - lambda * reconstruction loss of the proxy``. The proxy's optimiser is zeroed
before every step (the original code never zeroed it, so gradients piled up and the proxy
collapsed, which looked like privacy). A defence is never judged by this proxy: the harness
trains a fresh attacker against the defended client.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medsplit.defences.registry import DefenceSetting, DefenceSpec


class ProxyAdversary:
    """A :data:`~medsplit.split.split_model.Regularizer` that trains and fools a proxy decoder.

    Args:
        decoder: maps the sent activation to an image of the input's shape.
        lam: weight of the (negated) proxy reconstruction loss.
        lr: the proxy's Adam learning rate.
        input_key: name of the image among the part's inputs.
        sent_key: the output that crosses to the server.
        max_loss: the client's term uses ``min(mse, max_loss)`` so maximising it cannot blow
            the activations up without bound (MSE of images in [0, 1] above ~0.25 means nothing).
    """

    def __init__(self, decoder: nn.Module, lam: float, lr: float = 1e-3, input_key: str = "x",
                 sent_key: str | None = None, max_loss: float = 0.25):
        self.decoder = decoder
        self.lam = lam
        self.optimizer = torch.optim.Adam(decoder.parameters(), lr=lr)
        self.input_key = input_key
        self.sent_key = sent_key
        self.max_loss = max_loss
        self.last_proxy_mse: float | None = None

    def __call__(self, inputs: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs[self.input_key]
        z = outputs[self.sent_key] if self.sent_key else next(iter(outputs.values()))
        # 1. the proxy's own step, on detached activations (zeroed every step).
        self.optimizer.zero_grad(set_to_none=True)
        loss = F.mse_loss(self.decoder(z.detach()), x)
        loss.backward()
        self.optimizer.step()
        self.last_proxy_mse = float(loss.detach())
        # 2. the client's term: make the (updated) proxy fail. Gradients reach only z; the
        # proxy's parameters are frozen for this term so its next step starts clean.
        for p in self.decoder.parameters():
            p.requires_grad_(False)
        try:
            mse = F.mse_loss(self.decoder(z), x)
        finally:
            for p in self.decoder.parameters():
                p.requires_grad_(True)
        return -self.lam * torch.clamp(mse, max=self.max_loss)


def install(model, strength: float, setting: DefenceSetting) -> tuple[dict, ProxyAdversary]:
    """A proxy decoder (16 channels wide) from what the client's first part sends back to its images."""
    # import cycle: medsplit.defences <-> medsplit.attacks (the attack registry imports every attack, and
    # they import the defence registry); these are the attack package's networks and taps
    from medsplit.attacks.nets import decoder
    from medsplit.attacks.tap import activation_shape

    shape = activation_shape(model, setting.images)
    proxy = decoder(shape, setting.images.shape[1], setting.img_size, 16).to(setting.images.device)
    hook = ProxyAdversary(proxy, strength, sent_key=setting.sent_key)
    model.regularizers[setting.part] = hook
    return {"lambda": strength}, hook


def _proxy_mse(hook: ProxyAdversary) -> dict:
    # what the client's own proxy reached: set beside the fresh attacker's MSE it shows
    # whether the defence fooled only the proxy it trained against
    return {"proxy_mse": hook.last_proxy_mse}


SPEC = DefenceSpec("proxy", "lambda, weight of the proxy's negated reconstruction loss", install,
                   diagnostics=_proxy_mse)
