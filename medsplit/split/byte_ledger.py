"""The byte ledger: how many bytes crossed, per phase, epoch, sender, receiver, kind and link.

The :class:`~medsplit.split.channel.Channel` adds each message's wire size here. Its rows are what
the run record reports and what a checkpoint stores (``rows(None)``), so a resumed run restores
them with :meth:`ByteLedger.load` and its totals stay those of an uninterrupted run. The row format
is that of checkpoints already written: changing it breaks their resume.
"""

from __future__ import annotations

from collections import defaultdict

# The order of a row's key fields; rows are listed sorted by them.
_KEY = ("phase", "epoch", "sender", "receiver", "kind", "link")


class ByteLedger:
    """Counted bytes, summed per (phase, epoch, sender, receiver, kind, link)."""

    def __init__(self) -> None:
        self._counts: dict[tuple, int] = defaultdict(int)

    def add(self, phase: str, epoch: int, sender: str, receiver: str, kind: str, link: str, nbytes: int) -> None:
        self._counts[(phase, epoch, sender, receiver, kind, link)] += nbytes

    def rows(self, phase: str | None = "train") -> list[dict]:
        """The counts as JSON-able rows of ``phase`` (``None``: every phase), in key order."""
        return [{**dict(zip(_KEY, key)), "bytes": nbytes}
                for key, nbytes in sorted(self._counts.items()) if phase is None or key[0] == phase]

    def total(self, phase: str | None = "train") -> int:
        return sum(row["bytes"] for row in self.rows(phase))

    def load(self, rows: list[dict]) -> None:
        """Restore rows saved by :meth:`rows` (a checkpoint's); each replaces the count of its key."""
        for row in rows:
            self._counts[tuple(row[k] for k in _KEY)] = row["bytes"]
