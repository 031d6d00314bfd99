"""Models as ordered tables of named stages.

A stage reads named tensors from an environment and writes one named tensor back.
Describing a network this way (rather than as an opaque ``forward``) lets
:func:`medsplit.split.cut.cut` compute exactly which tensors cross any cut, so
a ResNet's single activation and a U-Net's skip connections are handled by the
same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
from torch import nn


@dataclass(frozen=True)
class PartSpec:
    """One part of a split model: its name, the role of the party that owns it
    (``"client"`` or ``"server"``) and the index just after its last stage."""

    name: str
    role: str
    stop: int


@dataclass
class Stage:
    """One step of a model: ``env[writes] = module(*[env[r] for r in reads])``.

    Args:
        name: unique, human-readable stage name (``"conv1"``, ``"layer2"``, ``"dec3"``).
        module: the computation; it receives the tensors named in ``reads`` positionally.
        reads: names of the tensors the stage consumes, in call order.
        writes: name of the tensor the stage produces.
    """

    name: str
    module: nn.Module
    reads: tuple[str, ...]
    writes: str


class StageTable(nn.Module):
    """An ordered table of stages, itself a runnable ``nn.Module``.

    Args:
        stages: the stages in execution order.
        inputs: names of the tensors supplied from outside (normally ``("x",)``).
        output: name of the tensor the model returns.
        plans: for every legal user-facing cut number, the parts it makes as
            ``PartSpec(name, role, stop)`` in order (``stop`` = index after the part's last
            stage). ResNet-34 keeps the original study's numbering (``CUT=3`` = after maxpool,
            two parts); a U-Net's plan has four parts (client encoder, server encoder, server
            decoder, client decoder).
        meta: free-form description (architecture, backbone, ...) saved with runs.
    """

    def __init__(
        self,
        stages: Iterable[Stage],
        inputs: tuple[str, ...] = ("x",),
        output: str = "logits",
        plans: Mapping[int, list["PartSpec"]] | None = None,
        meta: Mapping[str, object] | None = None,
    ):
        super().__init__()
        self.stages = list(stages)
        self.inputs = tuple(inputs)
        self.output = output
        self.plans = dict(plans or {})
        self.meta = dict(meta or {})
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        writes = [s.writes for s in self.stages]
        if len(set(writes)) != len(writes) or set(writes) & set(self.inputs):
            raise ValueError(f"every stage must write a fresh tensor name, got {writes} (inputs {self.inputs})")
        available = set(self.inputs)
        for s in self.stages:
            missing = [r for r in s.reads if r not in available]
            if missing:
                raise ValueError(f"stage {s.name!r} reads {missing}, which no earlier stage writes")
            available.add(s.writes)
        if output not in available:
            raise ValueError(f"output {output!r} is never written")
        # ModuleDict keeps parameters registered under the stage names, so a state_dict
        # of the table (or of any part cut from it) uses stable, readable keys.
        self.modules_by_stage = nn.ModuleDict({s.name: s.module for s in self.stages})

    def __len__(self) -> int:
        return len(self.stages)

    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env = {self.inputs[0]: x}
        run_stages(self.stages, env)
        return env[self.output]

    @property
    def legal_cuts(self) -> list[int]:
        return sorted(self.plans)

    def plan(self, cut: int | None) -> list["PartSpec"]:
        """The parts a user-facing ``CUT`` makes; ``None`` means the whole model, unsplit."""
        if cut is None:
            return [PartSpec("whole", "client", len(self.stages))]
        if cut not in self.plans:
            raise ValueError(
                f"CUT={cut} is not a legal cut for {self.meta.get('name', 'this model')}; "
                f"valid cuts are {self.legal_cuts}"
            )
        return self.plans[cut]


def run_stages(stages: Iterable[Stage], env: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Run ``stages`` in order against ``env`` (mutated in place and returned)."""
    for s in stages:
        env[s.writes] = s.module(*[env[r] for r in s.reads])
    return env
