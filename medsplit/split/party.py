"""A Party: a hospital or the server. It owns model parts and the optimiser over them."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from medsplit.split.cut import Part


class Party(nn.Module):
    """Owns parts of a split model and one optimiser over their parameters.

    Args:
        name: unique party name, used in byte counts and error messages ("client0", "server").
        parts: the parts this party runs, by part name.
        make_optimizer: builds the optimiser from the parameters (called once here, and
            again by :meth:`reset_optimizer`).
    """

    def __init__(self, name: str, parts: dict[str, Part], make_optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer] | None = None):
        super().__init__()
        self.name = name
        self.parts = nn.ModuleDict(parts)
        self._make_optimizer = make_optimizer
        self.optimizer = self.reset_optimizer() if make_optimizer else None

    def reset_optimizer(self) -> torch.optim.Optimizer | None:
        params = [p for p in self.parameters() if p.requires_grad]
        self.optimizer = self._make_optimizer(params) if (self._make_optimizer and params) else None
        return self.optimizer

    def zero_grad(self, set_to_none: bool = True) -> None:
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=set_to_none)
        else:
            super().zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        if self.optimizer is not None:
            self.optimizer.step()

    def optimizer_tensors(self) -> dict[str, torch.Tensor]:
        """The optimiser's per-parameter state as named tensors (``"3.exp_avg"``): what a
        handover ships. Hyper-parameters (learning rate, betas) are not state: every party has
        the same ones and the schedule sets the rate each epoch."""
        if self.optimizer is None:
            return {}
        out = {}
        for idx, slots in self.optimizer.state_dict()["state"].items():
            for key, value in slots.items():
                if torch.is_tensor(value):
                    out[f"{idx}.{key}"] = value
        return out

    def load_optimizer_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Replace the optimiser's state by ``tensors`` (from :meth:`optimizer_tensors` of a party
        whose parts have the same parameters in the same order). Copies, so the sender's state
        and this one never share storage."""
        if self.optimizer is None:
            return
        saved = self.optimizer.state_dict()
        state: dict[int, dict] = {}
        for name, value in tensors.items():
            idx, key = name.split(".", 1)
            state.setdefault(int(idx), {})[key] = value.detach().clone()
        saved["state"] = state
        self.optimizer.load_state_dict(saved)

    def clear_optimizer_state(self) -> None:
        """Forget the optimiser's moments, keep its hyper-parameters (the epoch's learning rate)."""
        if self.optimizer is not None:
            self.optimizer.state.clear()

    def state(self) -> dict:
        return {"model": self.parts.state_dict(), "optimizer": self.optimizer.state_dict() if self.optimizer else None}

    def load_state(self, state: dict) -> None:
        self.parts.load_state_dict(state["model"])
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])

    def __repr__(self) -> str:  # nn.Module's repr prints every layer; a party is better named
        n = sum(p.numel() for p in self.parameters())
        return f"Party({self.name!r}, parts={list(self.parts)}, params={n:,})"
