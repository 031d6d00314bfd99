"""The original study's U-Net as a stage table with four-part (U-shaped) split plans.

Architecture (Ronneberger et al. 2015 with batch norm and "same" padding, as in the
original split-learning study): four encoder blocks of (conv3x3-BN-ReLU) x2 with
``c, 2c, 4c, 8c`` channels (``c = base_channels``, 64 in the study), each block after the
first starting with a 2x2 max-pool; a ``16c`` bottleneck (``center``); four decoder blocks,
each a 2x2 transposed convolution up, concatenation with the matching encoder skip and
(conv3x3-BN-ReLU) x2; a 1x1 output convolution (``head``) giving logits.

Stages, in order::

    enc1 enc2 enc3 enc4 | center | dec4 dec3 dec2 dec1 | head
    enc_i writes its pre-pool feature map ``enc_i``, which is also the skip of ``dec_i``.

``CUT=N`` (legal: 1, 2, 3) keeps ``enc1..encN`` and ``decN..dec1`` + ``head`` on the client,
so only ``encN`` (forward) and ``dec{N+1}`` (back to the client) cross the network; the
shallower skips and the masks never leave the hospital. See :func:`u_shape_plans`.
"""

from __future__ import annotations

import torch
from torch import nn

from medsplit.models.stages import PartSpec, Stage, StageTable

NUM_ENCODER_BLOCKS = 4  # blocks that produce a skip; the bottleneck ("center") is separate


def u_shape_plans(num_stages: int, skip_blocks: int, first_decoder: int) -> dict[int, list[PartSpec]]:
    """Four-part plans for a U-Net whose stages are laid out as
    ``[skip encoder blocks (skip_blocks of them), deeper encoder stages incl. bottleneck,
    decoder blocks reading skips deepest-first (skip_blocks of them), client-only tail]``.

    ``CUT=N`` puts the first ``N`` encoder blocks on the client (``client_encoder``), the
    remaining encoder stages and the bottleneck on the server (``server_encoder``), the
    decoder blocks that read the server's skips on the server (``server_decoder``), and the
    decoder blocks that read the client's skips plus everything after them (head, loss, masks)
    back on the client (``client_decoder``). Legal ``N`` is ``1 .. skip_blocks - 1``: the
    server keeps at least one encoder block and the bottleneck, and every part is non-empty.

    Args:
        num_stages: total number of stages in the table.
        skip_blocks: encoder blocks whose output a decoder block reads as a skip.
        first_decoder: index of the decoder block reading the deepest skip.
    """
    if not 0 < skip_blocks < first_decoder <= num_stages - skip_blocks:
        raise ValueError(f"inconsistent U-Net layout: {num_stages=}, {skip_blocks=}, {first_decoder=}")
    plans = {}
    for n in range(1, skip_blocks):
        plans[n] = [
            PartSpec("client_encoder", "client", n),
            PartSpec("server_encoder", "server", first_decoder),
            # the server decodes the skips it owns: those of encoder blocks n+1 .. skip_blocks
            PartSpec("server_decoder", "server", first_decoder + skip_blocks - n),
            PartSpec("client_decoder", "client", num_stages),
        ]
    return plans


def two_part_plans(num_stages: int) -> dict[int, list[PartSpec]]:
    """The two-part plan (client: the first encoder block; server: everything else, head and loss
    included) of the threat model of FSHA's paper (Pasquini et al. 2021), where the server
    computes the loss, so the client's only gradient is the one the server returns.

    Not a training plan: the masks must then cross to the server, which the lung task forbids;
    the attack harness uses it (``--task lungs-label-sharing``) to measure FSHA on the lung data
    with nothing but the server's gradient reaching the client. Only ``CUT=1`` is offered: there
    one tensor crosses (``enc1`` is both the server's next input and the skip ``dec1`` reads);
    deeper cuts would send every shallower skip too, each with an honest gradient coming back.
    """
    if num_stages < 2:
        raise ValueError(f"a two-part plan needs at least two stages, got {num_stages}")
    return {1: [PartSpec("client_encoder", "client", 1), PartSpec("server", "server", num_stages)]}


class ConvBlock(nn.Sequential):
    """(conv3x3-BN-ReLU) x2, optionally preceded by a 2x2 max-pool (every block but the first).

    Args:
        in_channels: channels of the input feature map.
        out_channels: channels of both convolutions' outputs.
        pool: start with ``MaxPool2d(2)`` (halves the resolution).
    """

    def __init__(self, in_channels: int, out_channels: int, pool: bool = False):
        layers: list[nn.Module] = [nn.MaxPool2d(2)] if pool else []
        for c_in in (in_channels, out_channels):
            # no conv bias: the batch norm right after it has its own shift
            layers += [nn.Conv2d(c_in, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
        super().__init__(*layers)


class UpBlock(nn.Module):
    """2x2 transposed convolution up, concatenate the encoder skip, then (conv3x3-BN-ReLU) x2.

    Args:
        in_channels: channels of the deeper feature map (the previous decoder output).
        skip_channels: channels of the skip connection.
        out_channels: channels of the block's output.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
        self.conv = ConvBlock(in_channels // 2 + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        if x.shape[-2:] != skip.shape[-2:]:
            # only happens when H or W is not divisible by 16; say so rather than fail inside cat
            raise ValueError(
                f"upsampled map {tuple(x.shape[-2:])} does not match skip {tuple(skip.shape[-2:])}: "
                "the classic U-Net needs image height and width divisible by 16"
            )
        return self.conv(torch.cat([x, skip], dim=1))


def unet_classic_table(num_classes: int = 1, in_channels: int = 1, base_channels: int = 64) -> StageTable:
    """The original study's U-Net (64-128-256-512 encoder, 1024 bottleneck) as a stage table.

    Legal cuts: ``CUT`` in ``{1, 2, 3}``. At 256x256 px (``base_channels=64``) the client
    sends ``encN`` forward and receives ``dec{N+1}``: N=1 64x256x256 / 128x128x128,
    N=2 128x128x128 / 256x64x64, N=3 256x64x64 / 512x32x32.

    Args:
        num_classes: output channels (logits; 1 for a binary lung mask, loss applies the sigmoid).
        in_channels: image channels (1 for chest X-rays).
        base_channels: width of the first block; the others are 2x, 4x, 8x and 16x (bottleneck).
            Tests use a small value (e.g. 8) to run fast on a CPU.

    Input height and width must be divisible by 16.
    """
    if num_classes < 1 or in_channels < 1 or base_channels < 2:
        raise ValueError(f"need num_classes >= 1, in_channels >= 1, base_channels >= 2; got {num_classes}, {in_channels}, {base_channels}")
    widths = [base_channels * 2**k for k in range(NUM_ENCODER_BLOCKS + 1)]  # c, 2c, 4c, 8c, 16c

    stages = []
    prev, c_prev = "x", in_channels
    for i in range(NUM_ENCODER_BLOCKS):
        name = f"enc{i + 1}"
        stages.append(Stage(name, ConvBlock(c_prev, widths[i], pool=i > 0), (prev,), name))
        prev, c_prev = name, widths[i]
    stages.append(Stage("center", ConvBlock(c_prev, widths[-1], pool=True), (prev,), "center"))
    prev, c_prev = "center", widths[-1]
    for i in range(NUM_ENCODER_BLOCKS, 0, -1):  # dec4 (deepest) .. dec1
        name, skip = f"dec{i}", f"enc{i}"
        stages.append(Stage(name, UpBlock(c_prev, widths[i - 1], widths[i - 1]), (prev, skip), name))
        prev, c_prev = name, widths[i - 1]
    stages.append(Stage("head", nn.Conv2d(c_prev, num_classes, kernel_size=1), (prev,), "logits"))

    plans = u_shape_plans(len(stages), NUM_ENCODER_BLOCKS, first_decoder=NUM_ENCODER_BLOCKS + 1)
    meta = {"name": "unet-classic", "backbone": f"unet{base_channels}", "encoder_blocks": NUM_ENCODER_BLOCKS,
            "num_classes": num_classes, "in_channels": in_channels, "base_channels": base_channels}
    return StageTable(stages, output="logits", plans=plans, meta=meta)
