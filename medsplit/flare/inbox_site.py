"""The one FLARE method every medsplit site publishes: ``deliver``, the wire of the transport.

Sites (the medsplit server and hospitals, the ping-pong benchmark's two ends) inherit it, so the
transport's receiving side is written once. FLARE's Collab API finds published methods through
``dir()``, which lists inherited ones.
"""

from __future__ import annotations

from nvflare.collab import collab

from medsplit.flare.transport import Inbox


class InboxSite:
    """A Collab site whose peers send it medsplit wire bytes (``FlareTransport.send`` calls
    ``deliver`` on the receiving site); messages wait in ``self.inbox`` until the site's
    transport takes them, in sequence order per sender."""

    def __init__(self) -> None:
        self.inbox = Inbox()

    @collab.publish
    def deliver(self, sender: str, seq: int, payload: bytes) -> bool:
        """Keep one message from ``sender`` (its ``seq``-th) for this site's transport."""
        self.inbox.put(sender, seq, payload)
        return True
