"""Cut a :class:`StageTable` into consecutive parts and work out what crosses each cut."""

from __future__ import annotations

import torch
from torch import nn

from medsplit.models.stages import PartSpec, Stage, StageTable, run_stages


class Part(nn.Module):
    """A consecutive run of stages owned by one party.

    Attributes:
        name, role: from the plan (``"client_encoder"``, ``"client"``, ...).
        reads: tensors written before this part (or model inputs) that it consumes.
        sends: tensors this part writes that a later part (or the loss) consumes.
    """

    def __init__(self, spec: PartSpec, stages: list[Stage], reads: tuple[str, ...], sends: tuple[str, ...]):
        super().__init__()
        self.name = spec.name
        self.role = spec.role
        self.stages = stages
        self.reads = reads
        self.sends = sends
        self.modules_by_stage = nn.ModuleDict({s.name: s.module for s in stages})

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        env = run_stages(self.stages, dict(inputs))
        return {name: env[name] for name in self.sends}

    def extra_repr(self) -> str:
        return f"name={self.name!r}, role={self.role!r}, reads={self.reads}, sends={self.sends}"


def cut(table: StageTable, cut: int | None, final_reads: tuple[str, ...] | None = None) -> list[Part]:
    """Cut ``table`` as its plan for ``cut`` says (``None``: one part, the whole model).

    What crosses is computed from the table, not declared: a part ``sends`` every tensor
    it writes that any later stage (or the consumer of the model output) reads. For a
    U-Net this makes the client encoder send its deepest feature map to the server
    *and* its shallower skips to the client decoder, with no special case.

    The parts share modules with ``table`` (no copies), so the split model and the
    whole model are the same parameters.
    """
    plan = table.plan(cut)
    final_reads = final_reads or (table.output,)
    if plan[-1].stop != len(table.stages):
        raise ValueError(f"plan for CUT={cut} ends at stage {plan[-1].stop}, table has {len(table.stages)}")
    parts: list[Part] = []
    start = 0
    for k, spec in enumerate(plan):
        if not start < spec.stop:
            raise ValueError(f"part {spec.name!r} of CUT={cut} is empty (stages {start}..{spec.stop})")
        stages = table.stages[start : spec.stop]
        later = table.stages[spec.stop :]
        written_before = set(table.inputs) | {s.writes for s in table.stages[:start]}
        reads = _ordered_unique(r for s in stages for r in s.reads if r in written_before and r not in _written_up_to(stages, s))
        later_reads = {r for s in later for r in s.reads} | set(final_reads)
        sends = _ordered_unique(s.writes for s in stages if s.writes in later_reads)
        parts.append(Part(spec, stages, reads, sends))
        start = spec.stop
    return parts


def _written_up_to(stages: list[Stage], stop_at: Stage) -> set[str]:
    written = set()
    for s in stages:
        if s is stop_at:
            break
        written.add(s.writes)
    return written


def _ordered_unique(names) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))
