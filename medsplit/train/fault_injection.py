"""Test-only fault injection for party processes (``MEDSPLIT_FAULT``): kill a party, make it hang
or send NaN at a chosen point, so the process tests can drop a hospital exactly where they mean to."""

from __future__ import annotations

import os
import signal
import time

FAULT_ENV = "MEDSPLIT_FAULT"  # tests: "client1:epoch=1:step=2" kills that party there (SIGKILL)


def fault_hook(name: str, epoch: int, count: int, at: str = "step") -> str | None:
    """Test-only fault injection: ``MEDSPLIT_FAULT=client1:epoch=1:step=2`` kills that party
    as it starts its step 2 of epoch 1 (both from 0; ``:mode=hang`` makes it stop answering
    instead, ``:mode=nan`` makes it send NaN).

    ``MEDSPLIT_FAULT=client1:epoch=1:roster=0`` kills it while it is idle instead: right after it
    took in its roster message 0 of epoch 1 (``split.min_hospitals`` runs; the relay sends one
    before every turn, so ``roster=0`` is the meeting point before client0's turn and client1 dies
    while client0 trains, between its own turns, with nothing in flight to or from it).

    Args:
        name: this party; epoch: the epoch (from 0).
        count: how many ``at`` points this party passed before this one in ``epoch`` (from 0).
        at: which point calls: ``"step"`` (a training step) or ``"roster"`` (a roster received).
    """
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return None
    who, *rest = spec.split(":")
    where = dict(item.split("=") for item in rest)
    point = "roster" if "roster" in where else "step"
    if who == name and point == at and int(where.get("epoch", 0)) == epoch and int(where.get(point, 0)) == count:
        mode = where.get("mode", "kill")
        if mode == "hang":
            time.sleep(10_000)  # stops answering without closing its sockets
        elif mode == "nan":
            return "nan"
        else:
            os.kill(os.getpid(), signal.SIGKILL)
    return None
