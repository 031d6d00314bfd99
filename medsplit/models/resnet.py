"""ResNet-34 as a stage table, cut with the original study's numbering.

``CUT=N`` puts torchvision's ``children()[0..N]`` on the client:
0 conv1, 1 bn1, 2 relu, 3 maxpool, 4-7 layer1-4. The server holds the rest and the
classifier head (global average pool + fc).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torchvision.models import resnet18, resnet34, resnet50

from medsplit.models.stages import PartSpec, Stage, StageTable

_BODY = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
_ARCHS = {"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50}


def resnet_table(num_classes: int, arch: str = "resnet34", in_channels: int = 3, weights: str | Path | None = None) -> StageTable:
    """A torchvision ResNet as ``conv1 ... layer4, pool, fc`` stages.

    Args:
        num_classes: size of the output layer (logits; no softmax: the loss applies it).
        arch: one of ``resnet18``, ``resnet34`` (default, the original study), ``resnet50``.
        in_channels: 3 for colour fundus photographs.
        weights: ``None`` (random init, the default: nothing is downloaded) or a path to a
            locally cached torchvision state dict (``.pth``/``.safetensors``) for users who have one.
    """
    if arch not in _ARCHS:
        raise ValueError(f"unknown ResNet arch {arch!r}; valid choices are {sorted(_ARCHS)}")
    net = _ARCHS[arch](weights=None)
    if weights is not None:
        net.load_state_dict(load_state_dict_file(weights))
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.fc = nn.Linear(net.fc.in_features, num_classes)
    # The top-level ReLU is a stage of its own; in place it would overwrite the tensor it
    # reads, which at CUT=1 is the activation the server received (a leaf).
    net.relu = nn.ReLU(inplace=False)

    stages, prev = [], "x"
    for name in _BODY:
        stages.append(Stage(name, getattr(net, name), (prev,), name))
        prev = name
    stages.append(Stage("pool", nn.Sequential(net.avgpool, nn.Flatten(1)), (prev,), "pool"))
    stages.append(Stage("fc", net.fc, ("pool",), "logits"))
    # CUT=N: children 0..N on the client, i.e. the first N+1 stages.
    plans = {n: [PartSpec("client", "client", n + 1), PartSpec("server", "server", len(stages))] for n in range(len(_BODY))}
    return StageTable(stages, output="logits", plans=plans, meta={"name": arch, "num_classes": num_classes})


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load cached weights without unpickling arbitrary objects."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights file {path} does not exist (no weights are downloaded; pass a local file)")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)
