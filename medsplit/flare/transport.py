"""The ``flare`` transport: medsplit's wire bytes as NVIDIA FLARE Collab calls between sites.

Sending is a Collab call of the receiving site's published ``deliver(sender, seq, payload)``;
FLARE carries the arguments with its own serialiser, FOBS (msgpack with an allow-list of
decomposers; ``bytes`` are a native msgpack type, so nothing is pickled on either side), over its
cell network (gRPC with mutual TLS in POC and production; in-memory/local sockets in the
simulator). The receiver validates every message as medsplit does for any transport
(:mod:`medsplit.flare.party_engine`).

Collab's inbound calls run on a thread pool, so two calls from one site may be handled out of
order; each message therefore carries a per-(sender, receiver) sequence number and the inbox
hands them out strictly in order.
"""

from __future__ import annotations

import threading
import time

from medsplit.flare.seam import TransportError, transport_base

_Base = transport_base()


class Inbox:
    """A site's mailboxes, one per sending site, released in sequence order.

    Lives on the site's Collab object from the start of the job, so a message that arrives
    before the site's training begins is kept, not lost.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._boxes: dict[str, dict[int, bytes]] = {}
        self._next: dict[str, int] = {}
        self.failed: dict[str, str] = {}  # site -> why it stopped (ends every wait on it)

    def put(self, sender: str, seq: int, payload: bytes) -> None:
        with self._cond:
            self._boxes.setdefault(sender, {})[int(seq)] = bytes(payload)
            self._cond.notify_all()

    def fail(self, site: str, why: str) -> None:
        with self._cond:
            self.failed[site] = why
            self._cond.notify_all()

    def take(self, sender: str, timeout: float, me: str) -> bytes:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                seq = self._next.get(sender, 0)
                box = self._boxes.get(sender, {})
                if seq in box:
                    self._next[sender] = seq + 1
                    return box.pop(seq)
                if self.failed:
                    site, why = next(iter(self.failed.items()))
                    raise TransportError(f"{me}: site {site} stopped: {why}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TransportError(f"{me}: no message from site {sender} within {timeout:.0f} s "
                                         f"(message #{seq} of that link); is {sender} still running?")
                self._cond.wait(min(left, 1.0))


class FlareTransport(_Base):
    """One FLARE site's endpoint.

    Args:
        site: this site's FLARE name (``server`` for the server site).
        proxies: site name -> Collab proxy of the peer site (``collab.server``, ``collab.clients``).
        inbox: this site's :class:`Inbox` (owned by its Collab object).
        timeout: seconds a receive waits before naming the silent site (``split`` traffic and calls).
    """

    name = "flare"

    def __init__(self, site: str, proxies: dict, inbox: Inbox, timeout: float = 120.0):
        self.site, self.proxies, self.inbox, self.timeout = site, dict(proxies), inbox, timeout
        self._seq: dict[str, int] = {}
        self._lock = threading.Lock()
        self.handed_bytes = 0  # payload bytes handed to FLARE (what the channel counts, plus control)
        self.messages = 0

    def send(self, receiver: str, payload: bytes) -> None:
        proxy = self.proxies.get(receiver)
        if proxy is None:
            raise TransportError(f"{self.site}: no FLARE site named {receiver!r} in this job (sites: {sorted(self.proxies)})")
        with self._lock:
            seq = self._seq.get(receiver, 0)
            self._seq[receiver] = seq + 1
            self.handed_bytes += len(payload)
            self.messages += 1
        try:
            # expect_result: the call returns once the receiver has queued the message, so a lost
            # message is an error here, named, instead of a silent hang at the receiver.
            proxy(expect_result=True, timeout=self.timeout).deliver(self.site, seq, bytes(payload))
        except Exception as e:
            raise TransportError(f"{self.site}: sending message #{seq} to site {receiver} failed: {e}") from e

    def recv(self, sender: str, max_bytes: int = 1 << 31) -> bytes:
        payload = self.inbox.take(sender, self.timeout, self.site)
        if len(payload) > max_bytes:
            raise TransportError(f"{self.site}: message from site {sender} is {len(payload)} bytes, over the limit of {max_bytes}")
        return payload
