"""The in-process transport: parties in one Python process, one FIFO per (sender, receiver).

The default Channel does not need it (both ends local: it detaches and counts), but it gives
the same send/recv contract as a real transport, so tests can drive a multi-party Channel
without processes, and the seam has a reference implementation.
"""

from __future__ import annotations

from collections import defaultdict, deque

from medsplit.transport.base import Transport, TransportError


class InProcessHub:
    """The queues shared by every party's :class:`InProcessTransport` in one process."""

    def __init__(self):
        self.queues: dict[tuple[str, str], deque] = defaultdict(deque)

    def transport(self, name: str) -> "InProcessTransport":
        return InProcessTransport(name, self)


class InProcessTransport(Transport):
    """Delivers bytes through an :class:`InProcessHub`.

    Args:
        name: this party's name.
        hub: shared queues (one hub per simulated deployment).
    """

    def __init__(self, name: str, hub: InProcessHub | None = None):
        super().__init__(name)
        self.hub = hub or InProcessHub()

    def _send(self, receiver: str, payload: bytes) -> None:
        self.hub.queues[(self.name, receiver)].append(bytes(payload))

    def _recv(self, sender: str, max_bytes: int) -> bytes:
        queue = self.hub.queues[(sender, self.name)]
        if not queue:
            # One process runs every party in turn: an empty queue means the schedule is wrong,
            # and waiting would wait forever.
            raise TransportError(f"{self.name}: no message from {sender} is waiting (in-process transport)")
        payload = queue.popleft()
        if len(payload) > max_bytes:
            raise TransportError(f"{self.name}: message of {len(payload)} bytes from {sender} exceeds the limit of {max_bytes} bytes")
        return payload
