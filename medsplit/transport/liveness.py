"""Signs of life between the parties of a gloo run, so a frozen party is named by every peer
that waits on it, not only by the one that waits on it directly.

Each party's thread bumps its own counter in the rendezvous store every :data:`BEAT_S` seconds,
over its own store connection, and reads everyone's counters. When a receive fails or times out,
the transport names the parties whose counter stood still for more than :data:`STALL_S` seconds
(frozen, e.g. by SIGSTOP, or dead): a hospital waiting on the server that waits on a frozen
hospital names the frozen one, as the server does. A party that is alive but stuck (a hang in
its own code) keeps beating and is named only as not answering.

The store lives in the server's process: when the server itself is frozen or gone, the counters
cannot be read, and that is what is said.
"""

from __future__ import annotations

import datetime
import threading
import time

import torch.distributed as dist

BEAT_S = 0.5
STALL_S = 3.0
KEY = "medsplit/alive/{}"


class Liveness:
    """This party's heartbeat and its view of everyone else's.

    Args:
        host, port: the rendezvous store.
        rank: this party's rank.
        names: every rank -> the name(s) it goes by (``"server/aggregator"``).
    """

    def __init__(self, host: str, port: int, rank: int, names: dict[int, str]):
        self.rank, self.names = rank, dict(names)
        self._store = dist.TCPStore(host, port, is_master=False, timeout=datetime.timedelta(seconds=5), use_libuv=False)
        self._counts: dict[int, int] = {}
        self._advanced: dict[int, float] = {}
        self._last_read: float | None = None
        self._lost: str | None = None  # why the store stopped answering
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"medsplit-liveness-{rank}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._store.add(KEY.format(self.rank), 1)
                now = time.monotonic()
                for r in self.names:
                    count = self._store.add(KEY.format(r), 0)
                    with self._lock:
                        if self._counts.get(r) != count:
                            self._counts[r], self._advanced[r] = count, now
                with self._lock:
                    self._last_read = now
            except Exception as e:  # noqa: BLE001 - the store's process froze or ended
                with self._lock:
                    self._lost = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                return
            self._stop.wait(BEAT_S)

    def report(self) -> str:
        """Who has stopped showing signs of life (empty when everyone has), for error messages."""
        with self._lock:
            last, lost = self._last_read, self._lost
            stalled = [(r, last - t) for r, t in self._advanced.items() if r != self.rank and last is not None and last - t > STALL_S]
        parts = [f"{self.names[r]} (rank {r}) showed no sign of life for the last {s:.1f} s (frozen, e.g. SIGSTOP, or dead)"
                 for r, s in sorted(stalled)]
        if lost is not None and self.rank != 0:
            parts.append(f"the server's rendezvous store stopped answering ({self.names.get(0, 'server')} frozen or gone; {lost})")
        return "; ".join(parts)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * BEAT_S + 5)
        self._store = None
