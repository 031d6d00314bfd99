"""Transports under the Channel: how encoded messages move between parties; and placements: how a
run whose parties live apart is started.

``TRANSPORTS`` maps ``split.transport`` names to :class:`Transport` factories; ``PLACEMENTS`` maps
them to the function that starts such a run (``start(cfg, run_dir, resume=..., quiet=...) ->
run_dir``). A placement whose code lives in a module of its own (the gloo party processes, FLARE's
sites) registers itself with :func:`register_placement` when that module is imported;
:func:`placement` imports it by name on first use, so this package imports none of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from medsplit.transport.base import LinkStats, PartyInfo, Transport, TransportError
from medsplit.transport.inprocess import InProcessHub, InProcessTransport


def _gloo(*args, **kwargs):
    # Imported lazily: torch.distributed start-up is not needed by in-process runs.
    from medsplit.transport.gloo import GlooTransport

    return GlooTransport(*args, **kwargs)


TRANSPORTS = {"inprocess": InProcessTransport, "gloo": _gloo}

#: ``split.transport`` -> the function that starts a run with that transport (filled by :func:`register_placement`).
PLACEMENTS: dict[str, Callable] = {}
#: ``split.transport`` -> the module that registers its placement when imported (by name: no import here).
PLACEMENT_MODULES = {"gloo": "medsplit.train.parties", "flare": "medsplit.flare.simulate"}


def register_placement(name: str, start: Callable, transport: Callable | None = None) -> None:
    """Make ``split.transport=name`` start runs with ``start`` (and, given, build links with ``transport``)."""
    PLACEMENTS[name] = start
    if transport is not None:
        TRANSPORTS.setdefault(name, transport)


def placement(name: str) -> Callable:
    """The function that starts a run with ``split.transport=name``."""
    if name not in PLACEMENTS and name in PLACEMENT_MODULES:
        importlib.import_module(PLACEMENT_MODULES[name])  # registers itself
    try:
        return PLACEMENTS[name]
    except KeyError:
        raise ValueError(f"no placement registered for split.transport={name!r}; known: {sorted(set(PLACEMENTS) | set(PLACEMENT_MODULES))}") from None


__all__ = ["Transport", "TransportError", "LinkStats", "PartyInfo", "InProcessHub", "InProcessTransport", "TRANSPORTS",
           "PLACEMENTS", "placement", "register_placement"]
