"""Model registry: a plain dict whose KeyError lists the options (smp style)."""

from __future__ import annotations

from typing import Callable

from medsplit.models.stages import StageTable


def _resnet(**kw) -> StageTable:
    from medsplit.models.resnet import resnet_table

    return resnet_table(**kw)


MODELS: dict[str, Callable[..., StageTable]] = {
    "resnet18": lambda **kw: _resnet(arch="resnet18", **kw),
    "resnet34": lambda **kw: _resnet(arch="resnet34", **kw),
    "resnet50": lambda **kw: _resnet(arch="resnet50", **kw),
}


def build_model(name: str, **kwargs) -> StageTable:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models are {sorted(MODELS)}")
    return MODELS[name](**kwargs)
