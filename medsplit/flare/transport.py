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
from collections.abc import Callable

from medsplit.transport.base import Transport, TransportError
from medsplit.transport.framing import FrameError


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


class SiteGone(TransportError):
    """A wait on a site that stopped answering (its process died or its link failed): an outage
    (:func:`~medsplit.train.roster.is_outage`), which a run with ``split.min_hospitals`` survives."""


class RefusedSite(FrameError):
    """Every wait of a site that refused a message (replayed, out of window, over the bounds):
    that link lost a message and its peer broke the rules, which is an attack, not an outage
    (a :class:`~medsplit.transport.framing.FrameError`), so the run stops."""


class RunStopped(RuntimeError):
    """A wait ended because another site stopped the run (its own error: a policy refusal, an
    alarm, a refused message); not a transport failure of the site waited on, so no run goes on
    without that site over it."""


def site_went_away(error: BaseException) -> bool:
    """Whether a site's failed Collab call (FLARE's ``CollabCallError``) says the site went away:
    FLARE could not reach it or heard nothing back in time, or the site's own run stopped on an
    outage (a :class:`TransportError` there: a peer it waited on stopped answering). Anything
    else the site raised (a refused or malformed message, its policy refusing the job, its
    hijack detector's alarm) is the site stopping the run on purpose."""
    return getattr(error, "cause_type", None) in ("TransportError", SiteGone.__name__, "TimeoutError") or flare_cannot_reach(error)


def flare_cannot_reach(error: BaseException) -> bool:
    """Whether a failed Collab call says FLARE could not reach the site (no connection to it)."""
    return getattr(error, "cause_type", None) == "str" and any(code in str(error) for code in ("target_unreachable", "comm_error"))


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
        self.stops_run: set[str] = set()  # failed sites whose failure ends every wait (the run stops)
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

    def fail(self, site: str, why: str, stops_run: bool = True) -> None:
        """Site ``site`` stopped because ``why``: waits on it end (:class:`SiteGone`) and, where
        ``stops_run``, every other wait too (:class:`RunStopped`); without it the run may go on
        without that site (``split.min_hospitals``), whose next exchange with it decides."""
        with self._cond:
            self.failed[site] = why
            if stops_run:
                self.stops_run.add(site)
            self._cond.notify_all()

    def take(self, sender: str, timeout: float, me: str, check: Callable[[str], None] | None = None,
             check_every: float = 2.0) -> bytes:
        """The next message from site ``sender``, waiting at most ``timeout`` seconds; every
        ``check_every`` seconds of waiting ``check(sender)`` (if given) may end the wait by raising
        (it runs without the inbox's lock, so messages keep arriving meanwhile)."""
        deadline = time.monotonic() + timeout
        next_check = time.monotonic() + check_every
        while True:
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
                        raise RefusedSite(f"{me}: stopped because site {site} sent a message this site refused: {why}")
                    if self.stops_run:
                        site = sender if sender in self.stops_run else min(self.stops_run)
                        raise RunStopped(f"{me}: site {site} stopped: {self.failed[site]}")
                    if sender in self.failed:
                        raise SiteGone(f"{me}: site {sender} stopped: {self.failed[sender]}")
                    now = time.monotonic()
                    if now >= deadline:
                        raise TransportError(f"{me}: no message from site {sender} within {timeout:.0f} s "
                                             f"(message #{seq} of that link); is {sender} still running?")
                    if check is not None and now >= next_check:
                        break
                    self._cond.wait(min(deadline - now, 1.0, next_check - now if check is not None else 1.0))
            check(sender)
            next_check = time.monotonic() + check_every


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
        check_alive_s: while a receive waits, ask FLARE every this many seconds whether the silent
            site is still there (:meth:`check_alive`), so a site whose process died is found in
            seconds, not after ``timeout`` (``None``: never).
        hospitals_may_leave: the run goes on without a hospital that went away
            (``split.min_hospitals``): a send to a site that went away does not raise, the next
            receive from that site does (see :meth:`_send`), as over gloo.
    """

    def __init__(self, name: str, site_of: dict[str, str], proxies: dict, inbox: Inbox, timeout: float = 120.0,
                 check_alive_s: float | None = None, hospitals_may_leave: bool = False):
        super().__init__(name)
        self.site_of, self.proxies, self.inbox, self.timeout = dict(site_of), dict(proxies), inbox, timeout
        self.check_alive_s, self.hospitals_may_leave = check_alive_s, hospitals_may_leave
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
            deliver = lambda: proxy(expect_result=True, timeout=self.timeout).deliver(self.site, seq, bytes(payload))  # noqa: E731
            if self.check_alive_s is None:
                deliver()
            else:
                self._while_alive(site, deliver)
        except Exception as e:
            error = e if isinstance(e, SiteGone) else TransportError(
                f"{self.name}: sending message #{seq} to site {site} ({receiver}) failed: {e}")
            if self.hospitals_may_leave and (isinstance(e, SiteGone) or site_went_away(e)):
                # A run that may lose a hospital treats a delivery to a site that went away as a
                # gloo send to a dead peer: the message is lost and the next receive from that site
                # says it left. So whether a step counts is decided by what this party received,
                # not by whether the dead site's acknowledgement of its last message got back
                # before it died (a race: the site may have taken the message and then died).
                self.inbox.fail(site, str(error).splitlines()[0], stops_run=False)
                return
            if error is e:
                raise
            raise error from e

    def _while_alive(self, site: str, call) -> None:
        """``call()`` (a delivery to ``site``), asking FLARE whether ``site`` is still there while
        it waits: a message in flight when the site's process dies is never answered, and FLARE
        would hold the call for the whole timeout. (FLARE's own call then ends at its timeout.)"""
        done, outcome = threading.Event(), {}

        def run():
            try:
                call()
            except Exception as e:
                outcome["error"] = e
            finally:
                done.set()

        threading.Thread(target=run, daemon=True, name=f"deliver-to-{site}").start()
        while not done.wait(self.check_alive_s):
            self.check_alive(site)
        if "error" in outcome:
            raise outcome["error"]

    def check_alive(self, site: str) -> None:
        """Raise :class:`SiteGone` when FLARE cannot reach ``site`` (its published ``alive``);
        any other answer, or none within ``check_alive_s`` (a busy machine), leaves the wait to
        its timeout."""
        try:
            self.proxies[site](expect_result=True, timeout=max(self.check_alive_s or 0, 5.0)).alive()
        except Exception as e:
            if flare_cannot_reach(e):
                raise SiteGone(f"{self.name}: site {site} stopped answering: FLARE cannot reach it ({e})") from e

    def _recv(self, sender: str, max_bytes: int) -> bytes:
        if self.check_alive_s is None:
            payload = self.inbox.take(self._site(sender), self.timeout, self.name)
        else:
            payload = self.inbox.take(self._site(sender), self.timeout, self.name, self.check_alive, self.check_alive_s)
        if len(payload) > max_bytes:
            raise TransportError(f"{self.name}: message from {sender} is {len(payload)} bytes, over the limit of {max_bytes}")
        return payload
