"""Attacker networks that adapt to the activation shape at any cut.

The downsampling factor ``s = H / h`` between the image and the activation is read from the
shapes; the pilot encoder downsamples by ``s`` with stride-2 convolutions and ends with the
client's channel count, the decoder upsamples back with transposed convolutions and ends at
the image's channels with a sigmoid (images are in ``[0, 1]``).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def _halvings(image_size: int, act_size: int) -> int:
    if act_size <= 0 or image_size < act_size:
        raise ValueError(f"activation side {act_size} is not a downsampling of the image side {image_size}")
    return int(round(math.log2(image_size / act_size)))


class _Resize(nn.Module):
    def __init__(self, size: tuple[int, int]):
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if tuple(x.shape[-2:]) == self.size else F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)


def pilot_encoder(in_channels: int, image_size: int, act_shape: tuple[int, int, int], width: int = 32,
                  nonnegative: bool = False, batch_norm: bool = False) -> nn.Module:
    """f~: image ``(in_channels, S, S)`` -> ``act_shape`` = ``(C, h, w)``, same downsampling as the client.

    Args:
        in_channels, image_size: of the images.
        act_shape: ``(C, h, w)`` of the client's activation.
        width: channels of the hidden layers.
        nonnegative: end with a ReLU, as the client does when its part ends in one; otherwise
            the pilot's feature space holds values the client can never send.
        batch_norm: put a BatchNorm (batch statistics always) before that end, as a client
            block built of conv-BatchNorm-ReLU has: the client's per-channel scale is then pinned
            by its BatchNorm, which a slow client cannot move toward a free pilot's scale.
    """
    c, h, w = act_shape
    layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1), nn.LeakyReLU(0.2)]
    for _ in range(_halvings(image_size, h)):
        layers += [nn.Conv2d(width, width, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
    layers += [nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(width, c, 3, padding=1), _Resize((h, w))]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c, track_running_stats=False))
    if nonnegative:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def decoder(act_shape: tuple[int, int, int], out_channels: int, image_size: int, width: int = 32) -> nn.Module:
    """f~^-1 (or an inversion decoder): ``act_shape`` -> image ``(out_channels, S, S)`` in [0, 1]."""
    c, h, _ = act_shape
    layers: list[nn.Module] = [nn.Conv2d(c, width, 3, padding=1), nn.LeakyReLU(0.2)]
    for _ in range(_halvings(image_size, h)):
        layers += [nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
    layers += [nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(width, out_channels, 3, padding=1),
               _Resize((image_size, image_size)), nn.Sigmoid()]
    return nn.Sequential(*layers)


def discriminator(act_shape: tuple[int, int, int], width: int = 64) -> nn.Module:
    """WGAN critic on activations (no batch norm: the gradient penalty is per sample)."""
    c, h, w = act_shape
    layers: list[nn.Module] = [nn.Conv2d(c, width, 3, padding=1), nn.LeakyReLU(0.2)]
    while h > 4:
        layers += [nn.Conv2d(width, width, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
        h, w = (h + 1) // 2, (w + 1) // 2
    layers += [nn.Flatten(), nn.Linear(width * h * w, 1)]
    return nn.Sequential(*layers)
