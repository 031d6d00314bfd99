"""What one message between parties is: its kind (:data:`KINDS`, what its bytes are counted as)
and the :class:`Transfer` record that observers (attacks, detectors, tests) are given.

Kept apart from the :class:`~medsplit.split.channel.Channel` so that the crossing plan and the
byte ledger, which both speak of kinds, need not import the channel."""

from __future__ import annotations

from dataclasses import dataclass

import torch

KINDS = ("activation", "gradient", "label", "weights")


def check_kind(kind: str) -> None:
    """Stop on a kind outside :data:`KINDS` (a misspelt one would otherwise be counted apart, silently)."""
    if kind not in KINDS:
        raise ValueError(f"unknown transfer kind {kind!r}; valid kinds are {KINDS}")


@dataclass
class Transfer:
    """One message as the receiver sees it (what observers are given)."""

    sender: str
    receiver: str
    kind: str
    link: str  # "client_encoder->server_encoder": which cut of the model it crosses
    tensors: dict[str, torch.Tensor]
    nbytes: int
    epoch: int
    step: int
    phase: str  # "train" or "eval"
