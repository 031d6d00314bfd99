"""The one FLARE method every medsplit site publishes: ``deliver``, the wire of the transport.

Sites (the medsplit server and hospitals, the ping-pong benchmark's two ends) inherit it, so the
transport's receiving side is written once. FLARE's Collab API finds published methods through
``dir()``, which lists inherited ones.

Who sent a message is FLARE's authenticated caller (``collab.caller``: the participant whose
job cell the call came from, which CellNet binds to that site's certificate under mutual TLS),
never the ``sender`` argument: a site that names another as the sender is refused with a
:class:`~medsplit.flare.transport.MessageOriginError` naming both.
"""

from __future__ import annotations

from nvflare.collab import collab

from medsplit.flare.transport import Inbox, MessageOriginError

#: The server site's name in FLARE's Collab API (``collab.caller`` of a call from the server).
SERVER_SITE = "server"


class CallerNotAllowed(PermissionError):
    """A published method called by a site that may not call it (the message names both sites)."""


def authenticated_caller() -> str:
    """The site that made the Collab call being handled, as FLARE's runtime authenticated it."""
    return collab.caller


def only_from_server(method: str) -> str:
    """Refuse the current call unless the server site made it; returns the caller."""
    caller = authenticated_caller()
    if caller != SERVER_SITE:
        raise CallerNotAllowed(f"site {collab.site_name}: only the server may call {method}(); site {caller!r} "
                               "called it (FLARE's authenticated caller); refused")
    return caller


class InboxSite:
    """A Collab site whose peers send it medsplit wire bytes (``FlareTransport.send`` calls
    ``deliver`` on the receiving site); messages wait in ``self.inbox`` until the site's
    transport takes them, in sequence order per sender."""

    def __init__(self) -> None:
        self.inbox = Inbox()

    @collab.publish
    def deliver(self, sender: str, seq: int, payload: bytes) -> bool:
        """Keep one message from the calling site (its ``seq``-th); ``sender`` must name the caller."""
        caller = authenticated_caller()
        self.inbox.site = collab.site_name
        if sender != caller:
            raise MessageOriginError(f"site {collab.site_name}: a message claiming to come from site {sender!r} was "
                                     f"sent by site {caller!r} (FLARE's authenticated caller); refused")
        # A refused message (replayed, out of window, over the bounds) also stops this site's
        # transport naming the caller: that link has lost a message and cannot continue.
        self.inbox.put(caller, seq, payload)
        return True

    @collab.publish
    def alive(self) -> bool:
        """Answers while this site runs: a peer waiting on it asks (FlareTransport.check_alive)."""
        return True
