"""Model registry: a plain dict whose KeyError-style error lists the options (smp style).

Every builder returns a :class:`StageTable` with its legal cuts; ``weights`` is ``None``
by default (nothing is downloaded) or a local file of cached weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from medsplit.models.stages import StageTable
from medsplit.models.unet_classic import unet_classic_table


def _resnet(arch: str):
    def build(num_classes: int, weights: str | None = None, in_channels: int = 3, **_) -> StageTable:
        from medsplit.models.resnet import resnet_table  # torchvision takes seconds to import: only for the ResNets

        return resnet_table(num_classes=num_classes, arch=arch, in_channels=in_channels, weights=weights)

    return build


def _unet_smp(num_classes: int = 1, in_channels: int = 1, weights: str | None = None, **_) -> StageTable:
    # segmentation_models_pytorch takes seconds to import: only for model.name=unet-smp
    from medsplit.models.unet_smp import unet_smp_table

    # A local file is loaded into the whole table; a name ("imagenet") is passed to smp,
    # which finds it only in a user's local cache (no network here).
    local = weights is not None and Path(weights).exists()
    table = unet_smp_table(num_classes=num_classes, in_channels=in_channels, encoder_weights=None if local else weights)
    if local:
        # torchvision takes seconds to import: only for a ResNet or a weights file
        from medsplit.models.resnet import load_state_dict_file

        table.load_state_dict(load_state_dict_file(weights))
    return table


def _unet_classic(num_classes: int = 1, in_channels: int = 1, weights: str | None = None, base_channels: int = 64, **_) -> StageTable:
    table = unet_classic_table(num_classes=num_classes, in_channels=in_channels, base_channels=base_channels)
    if weights is not None:
        # torchvision takes seconds to import: only for a ResNet or a weights file
        from medsplit.models.resnet import load_state_dict_file

        table.load_state_dict(load_state_dict_file(weights))
    return table


MODELS: dict[str, Callable[..., StageTable]] = {
    "resnet18": _resnet("resnet18"),
    "resnet34": _resnet("resnet34"),
    "resnet50": _resnet("resnet50"),
    "unet-smp": _unet_smp,
    "unet-classic": _unet_classic,
}


def build_model(name: str, **kwargs) -> StageTable:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models are {sorted(MODELS)}")
    return MODELS[name](**kwargs)
