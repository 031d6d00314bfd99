"""One gloo group of two ranks per pair of parties, so one link can be formed anew when a party
restarts while the others keep theirs.

A single gloo group for every rank fixes the membership for the whole run: a hospital that
restarts cannot enter it again. Here each pair of parties has its own two-rank group, formed over
a prefix of the rendezvous store that names both parties and their incarnations (how often each
has joined the run: 0 at the start, one more for each restart), so a restarted hospital and each
peer form a fresh group on fresh keys while every other link goes on untouched. Frames carry
sequence numbers per link, from 0 for every incarnation of it.
"""

from __future__ import annotations

import datetime
import threading
import time
from dataclasses import dataclass

import torch.distributed as dist


def party_id(rank: int, incarnation: int) -> str:
    """How a party is named in a link's store keys and its frames' authentication codes: its rank,
    with its incarnation after a restart (``"2.1"``), so nothing of an earlier one is accepted."""
    return str(rank) if incarnation == 0 else f"{rank}.{incarnation}"


def link_prefix(a: int, b: int, incarnations: dict[int, int]) -> str:
    """The store prefix of the link between ranks ``a`` and ``b`` in these incarnations."""
    lo, hi = sorted((a, b))
    return f"medsplit/link/{party_id(lo, incarnations.get(lo, 0))}-{party_id(hi, incarnations.get(hi, 0))}"


@dataclass
class Link:
    """This party's end of one link: its two-rank gloo group and the frames counted on it."""

    peer: int  # the peer's rank in the run
    me: int  # this party's rank in the pair's group (0: the lower run rank)
    pg: object
    sent: int = 0  # the next frame's sequence number, each way
    received: int = 0

    @property
    def other(self) -> int:
        """The peer's rank in the pair's group."""
        return 1 - self.me

    def close(self) -> None:
        try:
            self.pg.shutdown()  # releases gloo's sockets and threads promptly
        except Exception:  # noqa: BLE001 - already broken by a dead peer
            pass


def form_link(store, rank: int, peer: int, incarnations: dict[int, int], device, timeout: datetime.timedelta,
              deadline: float) -> Link:
    """The link between ``rank`` (this party) and ``peer``, formed by both over the store by
    :func:`link_prefix`, under ``deadline`` (``time.monotonic()``).

    gloo's set-up has been seen waiting far past its own timeout (70-150 s for a 30 s one): it
    runs in a thread that this party stops waiting for at the deadline.

    Raises:
        TimeoutError: the peer did not form its end in time; RuntimeError: gloo failed.
    """
    opts = dist.ProcessGroupGloo._Options()
    opts._timeout = timeout
    opts._devices = [device]
    me = 0 if rank < peer else 1
    result: dict = {}

    def form():
        try:
            result["pg"] = dist.ProcessGroupGloo(dist.PrefixStore(link_prefix(rank, peer, incarnations), store), me, 2, opts)
        except Exception as e:  # noqa: BLE001
            result["error"] = e

    thread = threading.Thread(target=form, name=f"medsplit-link-{rank}-{peer}", daemon=True)
    thread.start()
    thread.join(max(1.0, deadline - time.monotonic()))
    if "pg" in result:
        return Link(peer, me, result["pg"])
    if "error" in result:
        raise RuntimeError(str(result["error"]))
    raise TimeoutError(f"did not form within {timeout.total_seconds():g} s (split.timeout_s)")
