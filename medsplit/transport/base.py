"""The Transport seam: moves encoded messages (bytes) between named parties.

A transport knows nothing about tensors, codecs, byte accounting or observers: that is the
:class:`~medsplit.split.channel.Channel`'s job. It only delivers the safe wire format
(:mod:`medsplit.split.wire`: JSON header + raw bytes, never pickle) from one party to another,
in order per (sender, receiver) pair. ``inprocess`` (a queue per pair, one process) and
``gloo`` (torch.distributed point-to-point over TCP) are the first two; NVIDIA FLARE is meant
to be one more.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field


class TransportError(RuntimeError):
    """A message could not be moved: the peer stopped answering, closed, or sent too much.

    The message names this party, the peer and what was being moved, so that a failure in a
    multi-process run says which hospital (or the server) is at fault.
    """


@dataclass
class LinkStats:
    """What crossed one direction of one link, as measured by the transport."""

    messages: int = 0
    payload_bytes: int = 0  # the wire-format messages themselves (what the Channel counts)
    framing_bytes: int = 0  # the transport's own framing (gloo: each frame's prefix and trailer)
    seconds: float = 0.0  # wall time spent inside send/recv for this link

    def as_dict(self) -> dict:
        return {"messages": self.messages, "payload_bytes": self.payload_bytes,
                "framing_bytes": self.framing_bytes, "seconds": self.seconds}


class Transport:
    """Moves byte messages between named parties; abstract.

    Args:
        name: the party this transport speaks for ("server", "client0", ...).

    Subclasses implement :meth:`_send` and :meth:`_recv` (and, to let a sender compute while
    the link carries its message, :meth:`_start_send`); this class keeps per-link
    accounting (messages, payload bytes, framing bytes, wall seconds) in :attr:`stats`,
    keyed by ``("send"|"recv", peer)``.
    """

    #: bytes the transport adds to every message on top of the payload (its framing)
    framing_bytes_per_message: int = 0

    def __init__(self, name: str):
        self.name = name
        self.stats: dict[tuple[str, str], LinkStats] = defaultdict(LinkStats)
        self._in_flight: list[tuple[str, Callable[[], None]]] = []  # (receiver, wait) of started sends

    def send(self, receiver: str, payload: bytes) -> None:
        """Deliver ``payload`` to party ``receiver`` (in order with earlier sends to it)."""
        t0 = time.perf_counter()
        self._send(receiver, payload)
        self._count("send", receiver, len(payload), t0)

    def start_send(self, receiver: str, payload: bytes) -> None:
        """Like :meth:`send`, but may return before ``payload`` is delivered, so the caller computes
        on while the link carries it (pipelined micro-batches). Messages to one receiver still
        arrive in the order they were started or sent; :meth:`wait_sends` waits for them all and
        raises :class:`TransportError` for one that failed. Whether it returns early is the
        transport's: the default sends and waits, exactly as :meth:`send`."""
        t0 = time.perf_counter()
        wait = self._start_send(receiver, payload)
        self._count("send", receiver, len(payload), t0)
        if wait is not None:
            self._in_flight.append((receiver, wait))

    def wait_sends(self) -> None:
        """Wait until every message started with :meth:`start_send` has left; the time waited
        counts towards its link's seconds."""
        in_flight, self._in_flight = self._in_flight, []
        for receiver, wait in in_flight:
            t0 = time.perf_counter()
            wait()
            self.stats[("send", receiver)].seconds += time.perf_counter() - t0

    def recv(self, sender: str, max_bytes: int) -> bytes:
        """The next message from party ``sender``; raises :class:`TransportError` when it is
        longer than ``max_bytes`` (checked before the payload is read) or does not arrive."""
        t0 = time.perf_counter()
        payload = self._recv(sender, max_bytes)
        self._count("recv", sender, len(payload), t0)
        return payload

    def _count(self, direction: str, peer: str, payload_bytes: int, t0: float) -> None:
        """One message on the ``(direction, peer)`` link, which took from ``t0`` until now."""
        s = self.stats[(direction, peer)]
        s.messages += 1
        s.payload_bytes += payload_bytes
        s.framing_bytes += self.framing_bytes_per_message
        s.seconds += time.perf_counter() - t0

    def link_seconds(self) -> dict[str, float]:
        """Measured wall time per link direction, ``{"client0->server": s, ...}``."""
        return {(f"{self.name}->{peer}" if d == "send" else f"{peer}->{self.name}"): s.seconds
                for (d, peer), s in sorted(self.stats.items())}

    def stats_rows(self) -> list[dict]:
        """Per-link accounting as JSON-able rows."""
        return [{"party": self.name, "direction": d, "peer": peer, **s.as_dict()} for (d, peer), s in sorted(self.stats.items())]

    def close(self) -> None:
        """Release sockets/queues; safe to call twice."""

    # ---- for subclasses ------------------------------------------------------------
    def _send(self, receiver: str, payload: bytes) -> None:
        raise NotImplementedError

    def _recv(self, sender: str, max_bytes: int) -> bytes:
        raise NotImplementedError

    def _start_send(self, receiver: str, payload: bytes) -> Callable[[], None] | None:
        """Post ``payload`` to ``receiver`` and return a function that waits for its delivery (it
        must keep the payload alive until then and raise :class:`TransportError` on failure), or
        ``None`` when it was delivered already. Default: a blocking :meth:`_send`."""
        self._send(receiver, payload)
        return None

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class PartyInfo:
    """Where a party runs: what the report lists, one line per party."""

    name: str
    rank: int
    host: str
    pid: int
    extra: dict = field(default_factory=dict)
