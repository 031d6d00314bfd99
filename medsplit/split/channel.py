"""The Channel: the only way tensors move between parties.

Every tensor that crosses a cut goes through :meth:`Channel.send`, in one process
too. That gives three guarantees the benchmark relies on:

* the receiver gets a fresh leaf tensor, so an in-process run cannot cheat through
  a shared autograd graph;
* every byte is counted, per epoch, per link and per kind, as the exact size of the
  wire-format message (:mod:`medsplit.split.wire`);
* observers (attacks, detectors, tests) see exactly what the receiving party sees.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import torch

from medsplit.split import wire

if TYPE_CHECKING:  # only for the annotation: any object with encode/decode will do
    from medsplit.split.codecs import Codec

KINDS = ("activation", "gradient", "label", "weights")


class NonFiniteError(FloatingPointError):
    """A party sent NaN or Inf; raised with the sender, tensor, epoch and step named."""


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


@dataclass
class Channel:
    """Moves named tensors between parties and counts the bytes.

    Args:
        serialise: actually encode and decode every message (what a cross-process
            transport does). Off by default: the in-process channel detaches instead
            and counts ``wire.encoded_size`` bytes, which is provably the same number.
        check_finite: stop the run with a :class:`NonFiniteError` naming the sender
            when a message carries NaN or Inf.
        codecs: optional lossy codec per transfer kind (``{"activation": Int8Codec()}``,
            see :mod:`medsplit.split.codecs`); the compressed payload is what is counted
            (and serialised), the receiver and observers get the decoded tensors.
    """

    serialise: bool = False
    check_finite: bool = True
    epoch: int = 0
    step: int = 0
    phase: str = "train"
    observers: list[Callable[[Transfer], None]] = field(default_factory=list)
    codecs: dict[str, "Codec"] = field(default_factory=dict)
    _bytes: dict = field(default_factory=lambda: defaultdict(int))

    def __post_init__(self) -> None:
        # A misspelt kind ("activations") would otherwise compress nothing, silently.
        unknown = sorted(set(self.codecs) - set(KINDS))
        if unknown:
            raise ValueError(f"codecs given for unknown transfer kind(s) {unknown}; valid kinds are {KINDS}")

    def tap(self, observer: Callable[[Transfer], None]) -> Callable[[], None]:
        """Register ``observer``; returns a function that removes it."""
        self.observers.append(observer)
        return lambda: self.observers.remove(observer)

    def send(self, sender: str, receiver: str, kind: str, tensors: dict[str, torch.Tensor], link: str = "") -> dict[str, torch.Tensor]:
        if kind not in KINDS:
            raise ValueError(f"unknown transfer kind {kind!r}; valid kinds are {KINDS}")
        if self.check_finite:
            for name, t in tensors.items():
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    raise NonFiniteError(
                        f"{sender} sent a non-finite {kind} {name!r} to {receiver} "
                        f"(epoch {self.epoch}, step {self.step}, phase {self.phase})"
                    )
        # An optional lossy codec per kind: the compressed payload is what is counted and shipped.
        codec = self.codecs.get(kind)
        if codec is not None:
            with torch.no_grad():  # the sender keeps its graph on the original tensors
                outgoing = codec.encode(tensors)
        else:
            outgoing = tensors
        if self.serialise:
            payload = wire.encode(outgoing)
            nbytes = len(payload)
            device = next(iter(tensors.values())).device if tensors else "cpu"
            received, _ = wire.decode(payload, device=device)
        else:
            nbytes = wire.encoded_size(outgoing)
            received = {name: t.detach() for name, t in outgoing.items()}
        if codec is not None:  # the receiver sees the lossy reconstruction, never the original
            received = codec.decode(received)
        if kind == "activation":
            # The receiver differentiates with respect to what it received.
            received = {n: (t.requires_grad_(True) if t.is_floating_point() else t) for n, t in received.items()}
        link = link or f"{sender}->{receiver}"
        self._bytes[(self.phase, self.epoch, sender, receiver, kind, link)] += nbytes
        if self.observers:
            event = Transfer(sender, receiver, kind, link, received, nbytes, self.epoch, self.step, self.phase)
            for observer in list(self.observers):
                observer(event)
        return received

    def byte_rows(self, phase: str | None = "train") -> list[dict]:
        """Counted bytes as JSON-able rows, one per (epoch, sender, receiver, kind, link)."""
        return [
            {"phase": ph, "epoch": ep, "sender": s, "receiver": r, "kind": k, "link": l, "bytes": b}
            for (ph, ep, s, r, k, l), b in sorted(self._bytes.items())
            if phase is None or ph == phase
        ]

    def total_bytes(self, phase: str | None = "train") -> int:
        return sum(row["bytes"] for row in self.byte_rows(phase))

    def load_byte_rows(self, rows: list[dict]) -> None:
        """Restore counters saved in a checkpoint (resume keeps the totals honest)."""
        for row in rows:
            self._bytes[(row["phase"], row["epoch"], row["sender"], row["receiver"], row["kind"], row["link"])] = row["bytes"]
