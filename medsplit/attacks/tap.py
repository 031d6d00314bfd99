"""What an attacker sees: messages recorded from a Channel with ``channel.tap``."""

from __future__ import annotations

import torch

from medsplit.split.channel import Channel
from medsplit.split.transfer import Transfer
from medsplit.split.split_model import SplitModel


class Recorder:
    """Keeps the transfers of one kind (optionally one receiver) that cross a channel.

    Args:
        channel: the channel to tap.
        kind: ``"activation"``, ``"gradient"`` or ``"label"``.
        receiver: keep only messages to this party (``None``: all).
        link_prefix: keep only links starting with this (e.g. ``"client_encoder->"``).
    """

    def __init__(self, channel: Channel, kind: str, receiver: str | None = None, link_prefix: str = ""):
        self.kind, self.receiver, self.link_prefix = kind, receiver, link_prefix
        self.transfers: list[Transfer] = []
        self._untap = channel.tap(self._observe)

    def _observe(self, t: Transfer) -> None:
        if t.kind == self.kind and (self.receiver is None or t.receiver == self.receiver) and t.link.startswith(self.link_prefix):
            self.transfers.append(t)

    def close(self) -> None:
        self._untap()

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RecentTraffic:
    """The activations the client's first part sent during the last ``steps`` training steps, as
    the server received them (after every send transform): what a server that keeps its
    traffic holds when training ends. Older steps are dropped as training goes on.

    Args:
        model: the split model whose channel is tapped.
        steps: how many of the latest training steps to keep (at least 1).
    """

    def __init__(self, model: SplitModel, steps: int):
        self.key = crossing_key(model)
        self.prefix = f"{model.chain[0][0].name}->"
        self.steps = max(1, steps)
        self.by_step: dict[int, list[torch.Tensor]] = {}
        self._untap = model.channel.tap(self._observe)

    def _observe(self, t: Transfer) -> None:
        if t.kind == "activation" and t.phase == "train" and t.link.startswith(self.prefix) and self.key in t.tensors:
            self.by_step.setdefault(t.step, []).append(t.tensors[self.key].detach())
            for old in [s for s in self.by_step if s <= t.step - self.steps]:
                del self.by_step[old]

    def close(self) -> None:
        self._untap()

    def activations(self) -> torch.Tensor:
        """Every kept activation, oldest step first (one row per image sent)."""
        if not self.by_step:
            raise ValueError("no training traffic was captured on the first part's link")
        return torch.cat([t for s in sorted(self.by_step) for t in self.by_step[s]])


def crossing_key(model: SplitModel) -> str:
    """Name of the tensor the first (client) part sends to the server."""
    first, owner = model.chain[0]
    server_reads = {r for p, o in model.chain if o is not owner for r in p.reads}
    keys = [k for k in first.sends if k in server_reads]
    if not keys:
        raise ValueError(f"part {first.name!r} sends nothing to another party")
    return keys[0]


@torch.no_grad()
def observed_activations(model: SplitModel, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Run inference on ``x`` and return the activations *as the server received them*
    (after every send transform: noise, mixing), in input order."""
    key = crossing_key(model)
    first = model.chain[0][0].name
    out = []
    with Recorder(model.channel, "activation", link_prefix=f"{first}->") as rec:
        model.eval()
        for i in range(0, x.shape[0], batch_size):
            model.forward(x[i:i + batch_size])
        for t in rec.transfers:
            if key in t.tensors:
                out.append(t.tensors[key].detach())
    return torch.cat(out)


def activation_shape(model: SplitModel, x: torch.Tensor) -> tuple[int, int, int]:
    """Shape (without the batch) of what the first part sends for images like ``x`` (a forward pass of two)."""
    with torch.no_grad():
        return tuple(model.chain[0][0]({"x": x[:2]})[crossing_key(model)].shape[1:])


def gradient_to_first_part(model: SplitModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A round without a step (a detector's fake round); the gradient the first part received."""
    first = model.chain[0][0].name
    with Recorder(model.channel, "gradient", receiver=model.data_owner.name) as rec:
        for party in model.parties:
            party.zero_grad()
        model.forward_backward(x, y)
    grads = [t for t in rec.transfers if t.link.endswith(f"->{first}")]
    return next(iter(grads[-1].tensors.values())).detach()
