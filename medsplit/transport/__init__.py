"""Transports under the Channel: how encoded messages move between parties.

``TRANSPORTS`` maps ``split.transport`` names to factories; FLARE registers itself as one more.
"""

from __future__ import annotations

from medsplit.transport.base import LinkStats, PartyInfo, Transport, TransportError
from medsplit.transport.inprocess import InProcessHub, InProcessTransport


def _gloo(*args, **kwargs):
    # Imported lazily: torch.distributed start-up is not needed by in-process runs.
    from medsplit.transport.gloo import GlooTransport

    return GlooTransport(*args, **kwargs)


TRANSPORTS = {"inprocess": InProcessTransport, "gloo": _gloo}

__all__ = ["Transport", "TransportError", "LinkStats", "PartyInfo", "InProcessHub", "InProcessTransport", "TRANSPORTS"]
