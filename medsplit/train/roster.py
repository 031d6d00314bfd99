"""Which hospitals take part in a run right now, and who left or came back, when and why.

A federation goes on when a hospital stops answering, as long as ``split.min_hospitals`` remain
(:class:`Roster`); the protocols ask it who is present (the averaging ones average over those,
the relay hands the weights past an absent one), and the runner asks it whether a step runs.
In one process hospitals leave on the ``split.dropout`` schedule; across processes the server
finds a hospital gone when a step's exchange with it fails, and the placement's ``exchange``
tells every other party at the protocol's meeting points (before a hand-over, before averaging,
after the epoch), so all processes agree on who is present before anyone depends on it.
Only the server decides who left, and only from its own exchanges with a hospital; a party that
merely finds a hospital unreachable (the relay's hospital handing it the weights, the server
sending it the roster) carries on and lets the server's next exchange with it decide, so every
process takes the same decision at the same point whatever the timing of the failure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from medsplit.config.dropout_schedule import ScheduledDropout
from medsplit.transport.base import TransportError
from medsplit.transport.framing import FrameError


def is_outage(error: BaseException) -> bool:
    """Whether ``error`` says a peer stopped answering (its link closed or failed, or it stayed
    silent past ``split.timeout_s``), which may be a hospital dropping out; a frame that broke the
    rules (:class:`FrameError`: forged, malformed, out of sequence) is an attack, not an outage,
    and always stops the run."""
    return isinstance(error, TransportError) and not isinstance(error, FrameError)


class DropoutError(RuntimeError):
    """A hospital left that the run cannot go on without (names it and why)."""


@dataclass
class Departure:
    """Hospital ``hospital`` left epoch ``epoch`` (from 1, as in the history) after ``after`` of its
    batches of that epoch, because ``why``; back from epoch ``rejoined`` (``None``: not back)."""

    hospital: int
    epoch: int
    after: int
    why: str
    rejoined: int | None = None

    def as_dict(self) -> dict:
        return {"hospital": f"client{self.hospital}", **{k: v for k, v in asdict(self).items() if k != "hospital"}}


class Roster:
    """The hospitals present in a run of ``n`` hospitals.

    Args:
        n: hospital parties that train.
        minimum: the fewest that may remain (``split.min_hospitals``; ``None``: all, so none may leave).
        keeper: the hospital that evaluates and keeps the history; it cannot leave.
        schedule: ``split.dropout`` (one process only).
    """

    def __init__(self, n: int, minimum: int | None, keeper: int, schedule: list[ScheduledDropout] = ()):
        self.n, self.minimum, self.keeper = n, n if minimum is None else minimum, keeper
        self.schedule = {d.hospital: d for d in schedule}
        self.departures: list[Departure] = []
        self._absent: set[int] = set()
        #: how the other processes learn of departures (set by a multi-process placement)
        self.exchange: Callable[[Roster], None] | None = None
        #: a console line for what this process noticed but does not decide (set by a multi-process placement)
        self.notice: Callable[[str], None] = lambda text: None
        #: which restarted hospitals come back at an epoch's start (set by a multi-process placement; see :meth:`rejoin_at`)
        self.admission: Callable[[int], list[int]] | None = None
        #: how the end of a relay turn reaches the server (set by a multi-process placement; see :meth:`end_turn`)
        self.turn_report: Callable[[int], None] | None = None

    @property
    def tolerant(self) -> bool:
        """Whether a hospital may leave at all (``split.min_hospitals`` below the hospitals)."""
        return self.minimum < self.n

    def present(self, k: int) -> bool:
        return k not in self._absent

    def members(self) -> list[int]:
        return [k for k in range(self.n) if k not in self._absent]

    def scheduled_to_leave(self, k: int, epoch: int, done: int, last: bool = False) -> bool:
        """Whether the schedule takes hospital ``k`` out of ``epoch`` (from 0) now, after ``done`` of
        its batches (``last``: that was its last batch of the epoch, so a schedule asking for more
        batches than it has takes it out now, before the round's averaging or the next turn)."""
        d = self.schedule.get(k)
        return d is not None and d.epoch == epoch and self.present(k) and (d.after == done or (last and d.after > done))

    def rejoin_at(self, epoch: int) -> list[int]:
        """The hospitals back at the start of ``epoch`` (from 0), the schedule's in one process, the
        restarted ones the server admitted across processes; marks them present."""
        back = [k for k, d in self.schedule.items() if d.rejoin == epoch and not self.present(k)]
        if self.admission is not None and self.tolerant:
            back += [k for k in self.admission(epoch) if not self.present(k) and k not in back]
        for k in back:
            self._absent.discard(k)
            for dep in self.departures:
                if dep.hospital == k and dep.rejoined is None:
                    dep.rejoined = epoch + 1
        return back

    def leave(self, k: int, epoch: int, after: int, why: str) -> Departure:
        """Hospital ``k`` is gone from ``epoch`` (from 0) after ``after`` batches; raises
        :class:`DropoutError` when the run cannot go on without it."""
        if k == self.keeper:
            raise DropoutError(f"client{k} left in epoch {epoch + 1} ({why}), but it evaluates the model and keeps the "
                               "run's history: the run cannot go on without it (it resumes from the checkpoints)")
        left = len(self.members()) - (1 if self.present(k) else 0)
        if left < self.minimum:
            raise DropoutError(f"client{k} left in epoch {epoch + 1} ({why}); {left} of {self.n} hospitals remain, "
                               f"fewer than split.min_hospitals = {self.minimum}: the run stops (it resumes from the checkpoints)")
        self._absent.add(k)
        dep = Departure(k, epoch + 1, after, why)
        self.departures.append(dep)
        return dep

    def sync(self) -> None:
        """Bring every process to the same view of who is present (nothing to do in one process)."""
        if self.exchange is not None and self.tolerant:
            self.exchange(self)

    def end_turn(self, k: int) -> None:
        """Hospital ``k``'s relay turn ended. Across processes it reports the turn (its losses) to
        the server before it hands the weights on, so that afterwards nothing of the epoch waits on
        it: a hospital that dies after handing on its weights leaves at the server's next exchange
        with it (the next epoch's batch counts), as ``epoch=<next>:after=0`` does in one process;
        one whose report does not arrive leaves with its turn's weights, as ``after=<its batches>``."""
        if self.turn_report is not None and self.tolerant and self.present(k):
            self.turn_report(k)

    def record(self, dep: Departure) -> None:
        """Take in a departure another process found (see :meth:`sync`); one this process knows
        already (the server tells all of them each time) changes nothing, also after a rejoin."""
        known = any((d.hospital, d.epoch, d.after) == (dep.hospital, dep.epoch, dep.after) for d in self.departures)
        if self.present(dep.hospital) and not known:
            self._absent.add(dep.hospital)
            self.departures.append(dep)

    # ---- checkpoints ------------------------------------------------------------------------
    def state(self) -> dict:
        return {"absent": sorted(self._absent), "departures": [asdict(d) for d in self.departures]}

    def load_state(self, state: dict | None) -> None:
        if state:
            self._absent = set(state["absent"])
            self.departures = [Departure(**d) for d in state["departures"]]
