"""segmentation_models_pytorch's U-Net (ResNet encoder) as a stage table with four-part plans.

The table *reuses* the submodules of an ``smp.Unet`` (no copies), so the stages compute
exactly what ``model(x)`` computes, with the same parameters. smp 0.6.0's forward, which
the stages reproduce:

* encoder (a torchvision ResNet): ``f1 = relu(bn1(conv1(x)))`` (H/2), ``f2 = layer1(maxpool(f1))``
  (H/4), ``f3 = layer2`` (H/8), ``f4 = layer3`` (H/16), ``f5 = layer4`` (H/32);
* decoder: ``d = center(f5)`` (identity for ResNets), then five blocks; block ``k`` resizes
  ``d`` (nearest) to the size of the next shallower feature and concatenates it as a skip:
  block0 <- f4, block1 <- f3, block2 <- f2, block3 <- f1, block4 <- no skip, resized to the
  input size;
* segmentation head: conv3x3 to ``classes`` logits.

Stages, in order (``dec_i`` reads the skip of encoder block ``i``)::

    stem layer1 layer2 layer3 | layer4 [center] | dec4 dec3 dec2 dec1 | dec0 head
    (stem = conv1+bn1+relu, layer1 = maxpool+layer1; dec4..dec0 = smp decoder.blocks[0..4])

``CUT=N`` (legal: 1, 2, 3) keeps the first ``N`` encoder blocks and ``decN..dec1``, the
skip-less full-resolution ``dec0`` and the ``head`` on the client. ``N=4`` is not legal:
the server would keep no decoder block (``dec4`` reads ``layer3``'s skip, which would be on
the client), so the layer3 skip would have to cross the network.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.encoders.resnet import ResNetEncoder, resnet_encoders
from torch import nn

from medsplit.models.stages import Stage, StageTable
from medsplit.models.unet_classic import u_shape_plans

# The encoder blocks whose outputs are decoder skips, shallowest first; layer4 is the bottleneck.
SKIP_BLOCKS = ("stem", "layer1", "layer2", "layer3")
ENCODER_BLOCKS = SKIP_BLOCKS + ("layer4",)


class DecoderStep(nn.Module):
    """One smp ``UnetDecoderBlock`` as a stage: ``(deeper, skip) -> block(deeper, *skip size, skip)``.

    smp passes the target size explicitly; it is the skip's spatial size. The last block has no
    skip and is resized to the input image, so it reads ``x`` only for its size (``use_skip=False``).
    A module, not a closure, so ``copy.deepcopy`` of a table (one client copy per hospital)
    calls the copied block.

    Args:
        block: the smp decoder block (reused, not copied).
        use_skip: concatenate the second input; otherwise it only gives the target size.
    """

    def __init__(self, block: nn.Module, use_skip: bool = True):
        super().__init__()
        self.block = block
        self.use_skip = use_skip

    def forward(self, deeper: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        height, width = reference.shape[-2:]
        return self.block(deeper, height, width, skip_connection=reference if self.use_skip else None)


def stage_table_from_smp(model: smp.Unet, name: str = "unet-smp") -> StageTable:
    """Describe an existing ``smp.Unet`` with a ResNet-family encoder as a stage table.

    Args:
        model: a ``segmentation_models_pytorch.Unet`` built with ``encoder_depth=5`` and an
            encoder from ``resnet_encoders`` (resnet18/34/50/101/152, resnext...), no
            auxiliary classification head.
        name: recorded in ``meta["name"]``.
    """
    encoder, decoder = model.encoder, model.decoder
    if not isinstance(encoder, ResNetEncoder):
        raise ValueError(f"only ResNet-family encoders can be split; valid encoders are {sorted(resnet_encoders)}")
    if encoder._depth != 5 or len(decoder.blocks) != 5:
        raise ValueError(f"the split U-Net needs encoder_depth=5, got {encoder._depth}")
    if model.classification_head is not None:
        raise ValueError("aux_params (a classification head) are not supported by the split U-Net")

    stages = [
        Stage("stem", nn.Sequential(encoder.conv1, encoder.bn1, encoder.relu), ("x",), "stem"),
        Stage("layer1", nn.Sequential(encoder.maxpool, encoder.layer1), ("stem",), "layer1"),
        Stage("layer2", encoder.layer2, ("layer1",), "layer2"),
        Stage("layer3", encoder.layer3, ("layer2",), "layer3"),
        Stage("layer4", encoder.layer4, ("layer3",), "layer4"),
    ]
    deepest = "layer4"
    if not isinstance(decoder.center, nn.Identity):  # smp adds a center block only for VGG encoders
        stages.append(Stage("center", decoder.center, ("layer4",), "center"))
        deepest = "center"
    first_decoder = len(stages)
    prev = deepest
    # blocks[0..3] read the skips layer3, layer2, layer1, stem; blocks[4] goes to the input size.
    for k, skip in enumerate(reversed(SKIP_BLOCKS)):
        stage = f"dec{len(SKIP_BLOCKS) - k}"
        stages.append(Stage(stage, DecoderStep(decoder.blocks[k]), (prev, skip), stage))
        prev = stage
    stages.append(Stage("dec0", DecoderStep(decoder.blocks[len(SKIP_BLOCKS)], use_skip=False), (prev, "x"), "dec0"))
    stages.append(Stage("head", model.segmentation_head, ("dec0",), "logits"))

    plans = u_shape_plans(len(stages), len(SKIP_BLOCKS), first_decoder)
    meta = {"name": name, "backbone": model.name.removeprefix("u-"), "encoder_blocks": len(ENCODER_BLOCKS)}
    return StageTable(stages, output="logits", plans=plans, meta=meta)


def unet_smp_table(num_classes: int = 1, in_channels: int = 1, encoder: str = "resnet34", encoder_weights: str | None = None) -> StageTable:
    """``smp.Unet(encoder)`` as a stage table; the output equals ``model(x)`` exactly.

    Legal cuts: ``CUT`` in ``{1, 2, 3}``. At 256x256 px with resnet34 the client sends
    ``stem`` 64x128x128 (N=1), ``layer1`` 64x64x64 (N=2) or ``layer2`` 128x32x32 (N=3) and
    receives ``dec2`` 64x64x64 (N=1), ``dec3`` 128x32x32 (N=2) or ``dec4`` 256x16x16 (N=3).

    Args:
        num_classes: output channels (logits; 1 for a binary lung mask).
        in_channels: image channels (1 for chest X-rays).
        encoder: a ResNet-family smp encoder name; valid are the keys of smp's ``resnet_encoders``.
        encoder_weights: ``None`` (random init, default; nothing is downloaded) or an smp weight
            name such as ``"imagenet"``, which smp fetches from the Hugging Face hub (or its cache).
    """
    if encoder not in resnet_encoders:
        raise ValueError(f"unknown or unsplittable encoder {encoder!r}; valid encoders are {sorted(resnet_encoders)}")
    model = smp.Unet(encoder_name=encoder, encoder_weights=encoder_weights, in_channels=in_channels, classes=num_classes)
    table = stage_table_from_smp(model, name=f"unet-{encoder}")
    table.meta.update(num_classes=num_classes, in_channels=in_channels, encoder_weights=encoder_weights)
    return table
