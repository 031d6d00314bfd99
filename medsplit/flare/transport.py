"""The ``flare`` transport: medsplit's wire bytes as NVIDIA FLARE Collab calls between sites.

Sending is a Collab call of the receiving site's published ``deliver(sender, seq, payload)``; the
receiver takes the sender from FLARE's authenticated caller (the peer's certificate in POC and
production), refuses a message whose ``sender`` differs (:class:`MessageOriginError`), and keeps
what it accepts in a bounded :class:`Inbox`;
FLARE carries the arguments with its own serialiser, FOBS (msgpack with an allow-list of
decomposers; ``bytes`` are a native msgpack type, so nothing is pickled on either side), over its
cell network (gRPC with mutual TLS in POC and production; the simulator's own local
connections). The receiving party's :class:`~medsplit.split.channel.Channel` validates every
message as it does for any transport (names, shapes, dtypes, size, finiteness).

Collab's inbound calls run on a thread pool, so two calls from one site may be handled out of
order; each message therefore carries a per-(sender, receiver) sequence number and the inbox
hands them out strictly in order.
"""

from __future__ import annotations

import threading
import time

from medsplit.transport.base import Transport, TransportError


#: Default bounds of a site's inbox: messages waiting per sending site (also the window of
#: sequence numbers accepted ahead of the next one due) and bytes waiting from all sites together.
INBOX_MAX_MESSAGES = 256
INBOX_MAX_BYTES = 1 << 30


class InboxRefused(TransportError):
    """A message a site's inbox will not keep; the message names the receiving and the sending site."""


class MessageOriginError(InboxRefused):
    """A message whose claimed sender is not FLARE's authenticated caller."""


class InboxOverflow(InboxRefused):
    """A message past the inbox's bounds (messages per sender, bytes in all)."""


class Inbox:
    """A site's mailboxes, one per sending site, released in sequence order.

    Lives on the site's Collab object from the start of the job, so a message that arrives
    before the site's training begins is kept, not lost. Bounded, because every peer decides
    what it sends: at most ``max_messages`` waiting per sender (sequence numbers outside
    ``[next due, next due + max_messages)`` and repeated ones are refused) and ``max_bytes``
    waiting in all. A refused message is an :class:`InboxRefused` for the sender's call, and the
    site's transport then stops, naming the sender (see :meth:`refuse`).

    Args:
        site: the receiving site (named in errors).
        max_messages: messages waiting per sending site.
        max_bytes: payload bytes waiting from all sites together.
    """

    def __init__(self, site: str = "this site", max_messages: int = INBOX_MAX_MESSAGES,
                 max_bytes: int = INBOX_MAX_BYTES) -> None:
        self.site, self.max_messages, self.max_bytes = site, int(max_messages), int(max_bytes)
        self._cond = threading.Condition()
        self._boxes: dict[str, dict[int, bytes]] = {}
        self._next: dict[str, int] = {}
        self._bytes = 0
        self.failed: dict[str, str] = {}  # site -> why it stopped (ends every wait on it)
        self.refused: dict[str, str] = {}  # site -> the first message refused from it (ends every wait)

    def put(self, sender: str, seq: int, payload: bytes) -> None:
        """Keep message ``seq`` from ``sender`` or raise :class:`InboxRefused` naming both sites."""
        if isinstance(seq, bool) or not isinstance(seq, int):
            raise self.refuse(sender, InboxRefused(f"site {self.site}: message from site {sender} has sequence "
                                                   f"number {seq!r}, not an integer; refused"))
        if not isinstance(payload, (bytes, bytearray)):
            raise self.refuse(sender, InboxRefused(f"site {self.site}: message #{seq} from site {sender} is a "
                                                   f"{type(payload).__name__}, not bytes; refused"))
        with self._cond:
            due = self._next.get(sender, 0)
            box = self._boxes.setdefault(sender, {})
            if seq < due or seq in box:
                error = InboxRefused(f"site {self.site}: message #{seq} from site {sender} repeats a sequence "
                                     f"number already {'taken' if seq < due else 'waiting'} (replayed?); refused")
            elif seq >= due + self.max_messages:
                error = InboxOverflow(f"site {self.site}: message #{seq} from site {sender} is {seq - due} ahead of "
                                      f"the next one due (#{due}); the inbox keeps at most {self.max_messages} "
                                      "messages per site; refused")
            elif self._bytes + len(payload) > self.max_bytes:
                error = InboxOverflow(f"site {self.site}: message #{seq} from site {sender} ({len(payload)} bytes) "
                                      f"would put {self._bytes + len(payload)} bytes in the inbox, over its bound "
                                      f"of {self.max_bytes} bytes; refused")
            else:
                box[seq] = bytes(payload)
                self._bytes += len(payload)
                self._cond.notify_all()
                return
        raise self.refuse(sender, error)

    def refuse(self, sender: str, error: InboxRefused) -> InboxRefused:
        """Record that a message from ``sender`` was refused (the site's transport stops, naming
        it: a link that lost a message cannot continue) and return ``error`` for the caller."""
        with self._cond:
            self.refused.setdefault(sender, str(error))
            self._cond.notify_all()
        return error

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
                    payload = box.pop(seq)
                    self._bytes -= len(payload)
                    return payload
                if self.refused:
                    site, why = next(iter(self.refused.items()))
                    raise TransportError(f"{me}: stopped because site {site} sent a message this site refused: {why}")
                if self.failed:
                    site, why = next(iter(self.failed.items()))
                    raise TransportError(f"{me}: site {site} stopped: {why}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TransportError(f"{me}: no message from site {sender} within {timeout:.0f} s "
                                         f"(message #{seq} of that link); is {sender} still running?")
                self._cond.wait(min(left, 1.0))


class FlareTransport(Transport):
    """One party's endpoint on a FLARE site (a :class:`~medsplit.transport.base.Transport`).

    Args:
        name: the party this endpoint speaks for (``server``, ``client0``, ...).
        site_of: party -> FLARE site (``server`` and ``aggregator`` live on the server site,
            ``client<k>`` on the k-th hospital site). Messages between two sites share one ordered
            link whichever of a site's parties sends them: every site walks the same schedule.
        proxies: site -> Collab proxy of that site (``collab.server``, ``collab.clients``).
        inbox: this site's :class:`Inbox` (owned by its Collab object).
        timeout: seconds a receive (and a send's delivery) waits before naming the silent site.
    """

    def __init__(self, name: str, site_of: dict[str, str], proxies: dict, inbox: Inbox, timeout: float = 120.0):
        super().__init__(name)
        self.site_of, self.proxies, self.inbox, self.timeout = dict(site_of), dict(proxies), inbox, timeout
        self.site = self.site_of.get(name, name)
        self._seq: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def handed_bytes(self) -> int:
        """Payload bytes handed to FLARE so far (the Channel's messages plus control messages)."""
        return sum(s.payload_bytes for (d, _), s in self.stats.items() if d == "send")

    def _site(self, party: str) -> str:
        site = self.site_of.get(party)
        if site is None:
            raise TransportError(f"{self.name}: no party named {party!r} in this job (parties: {sorted(self.site_of)})")
        return site

    def _send(self, receiver: str, payload: bytes) -> None:
        site = self._site(receiver)
        proxy = self.proxies.get(site)
        if proxy is None:
            raise TransportError(f"{self.name}: FLARE site {site!r} (party {receiver}) is not connected to this job")
        with self._lock:
            seq = self._seq.get(site, 0)
            self._seq[site] = seq + 1
        try:
            # expect_result: the call returns once the receiver has queued the message, so a lost
            # message is an error here, named, instead of a silent hang at the receiver.
            proxy(expect_result=True, timeout=self.timeout).deliver(self.site, seq, bytes(payload))
        except Exception as e:
            raise TransportError(f"{self.name}: sending message #{seq} to site {site} ({receiver}) failed: {e}") from e

    def _recv(self, sender: str, max_bytes: int) -> bytes:
        payload = self.inbox.take(self._site(sender), self.timeout, self.name)
        if len(payload) > max_bytes:
            raise TransportError(f"{self.name}: message from {sender} is {len(payload)} bytes, over the limit of {max_bytes}")
        return payload
