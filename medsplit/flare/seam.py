"""The transport seam the FLARE transport plugs into, and a thread-queue transport for tests.

The agreed interface (issue 12, ``medsplit/transport/base.py``): a transport moves opaque byte
payloads (medsplit's wire format, never pickle) between named parties, first in first out per
(sender, receiver) pair. Until that package lands on this branch, :class:`Transport` here is a
stand-in with exactly that interface; :func:`transport_base` returns the shared base class when it
exists, so :class:`medsplit.flare.transport.FlareTransport` subclasses the real one after the merge.
"""

from __future__ import annotations

import queue
import threading
from collections import defaultdict


class TransportError(RuntimeError):
    """A message that did not arrive (timeout), was too large, or came from an unknown party."""


class Transport:
    """Moves byte payloads between named parties (stand-in for ``medsplit.transport.base.Transport``).

    ``send(receiver, payload)`` and ``recv(sender, max_bytes)`` name the peer *site*; the
    :class:`~medsplit.flare.party_engine.PartyChannel` maps parties to sites.
    """

    name = "transport"

    def send(self, receiver: str, payload: bytes) -> None:
        raise NotImplementedError

    def recv(self, sender: str, max_bytes: int) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        pass


def transport_base() -> type:
    """The shared ``Transport`` base once issue 12's package exists, else this module's stand-in."""
    try:
        from medsplit.transport.base import Transport as Shared  # type: ignore[import-not-found]
    except ImportError:
        return Transport
    return Shared


class QueueHub:
    """In-memory mailboxes shared by :class:`QueueTransport` endpoints (one per party, in threads).

    Used by tests to run every party of a protocol as its own thread with its own copy of the
    protocol, exactly as FLARE sites run it, without FLARE.
    """

    def __init__(self) -> None:
        self._boxes: dict[tuple[str, str], queue.Queue] = defaultdict(queue.Queue)
        self._lock = threading.Lock()

    def box(self, sender: str, receiver: str) -> queue.Queue:
        with self._lock:
            return self._boxes[(sender, receiver)]


class QueueTransport(Transport):
    """One site's endpoint on a :class:`QueueHub`.

    Args:
        hub: the shared mailboxes.
        site: the endpoint's own name (a party, or a site hosting several parties: the FLARE
            server site hosts ``server`` and ``aggregator``, whose messages share one FIFO).
        timeout: seconds :meth:`recv` waits before naming the silent peer.
    """

    name = "queue"

    def __init__(self, hub: QueueHub, site: str, timeout: float = 120.0):
        self.hub, self.site, self.timeout = hub, site, timeout
        self.sent_bytes = 0

    def send(self, receiver: str, payload: bytes) -> None:
        self.sent_bytes += len(payload)
        self.hub.box(self.site, receiver).put(bytes(payload))

    def recv(self, sender: str, max_bytes: int = 1 << 34) -> bytes:
        try:
            payload = self.hub.box(sender, self.site).get(timeout=self.timeout)
        except queue.Empty:
            raise TransportError(f"{self.site}: no message from {sender} within {self.timeout} s") from None
        if len(payload) > max_bytes:
            raise TransportError(f"{self.site}: message from {sender} is {len(payload)} bytes, over the limit of {max_bytes}")
        return payload
