"""Who takes part in a multi-process run, decided by the server alone from its own exchanges
with each hospital: a hospital that stopped answering leaves (its step, the end of its relay turn
or the next epoch's batch counts fail), and a restarted one comes back at an epoch's start (it
checks in again; the server admits it, tells the others to link with it again, and tells it where
the run stands). The others learn every change at the protocol's meeting points
(:mod:`medsplit.train.roster`)."""

from __future__ import annotations

from medsplit.train.fault_injection import fault_hook
from medsplit.train.party_plan import SERVER
from medsplit.train.roster import Departure, Roster, is_outage
from medsplit.transport.base import TransportError


class Membership:
    """The :class:`~medsplit.train.party_run.ControlCoordinator`'s part in who takes part (a mixin:
    it uses the coordinator's ``control``, ``transport``, ``roster``, ``runner``, ``hospitals``,
    ``epoch``, ``steps_ahead``, ``announced``, ``turn_losses`` and ``say``)."""

    #: a restarted hospital, until the epoch it is admitted at starts: where the run stands
    rejoining: dict | None = None

    def _decide_departure(self, k: int, after: int, error: Exception) -> None:
        """The server decides that hospital ``k`` left this epoch after ``after`` of its batches,
        because its exchange with it failed with ``error`` (said on the console; the others learn it
        at the next meeting point). Its losses of the epoch leave with it, as in a failed step."""
        self.runner._leave(k, self.epoch, after, str(error).splitlines()[0][:300])  # the runner's own console line
        if k in self.runner.losses:
            self.runner.losses[k].clear()

    def _decided_later(self, k: int) -> bool:
        """Whether the server has an exchange with hospital ``k`` still ahead that decides whether it
        left: a step of this epoch, or the next epoch's batch counts."""
        return self.steps_ahead.get(k, 0) > 0 or self.epoch + 1 < self.cfg.train.epochs

    def report_turn(self, k: int) -> None:
        """The end of hospital ``k``'s relay turn (:meth:`~medsplit.train.roster.Roster.end_turn`):
        its process sends the server its losses of the turn, which the server passes on to the
        evaluating hospital with its own. A report that does not arrive is the server's exchange
        with ``k`` failing: ``k`` left after all its batches, before it handed the weights on."""
        if k == self.k:
            self.control.send(SERVER, turn=list(self.runner.losses[k]))
        elif self.is_server:
            try:
                self.turn_losses[k] = self.control.recv(self.hospitals[k], "turn")["turn"]
            except TransportError as e:
                if not is_outage(e):
                    raise
                self._decide_departure(k, self.announced[k], e)

    def may_lose(self, k: int, error: Exception) -> bool:
        """The server drops a hospital whose link failed or went silent (split.timeout_s); a
        frame that broke the rules (a :class:`~medsplit.transport.framing.FrameError`) stays an
        error: that is an attack, not an outage (:func:`~medsplit.train.roster.is_outage`)."""
        return self.is_server and is_outage(error)

    def share_roster(self, roster: Roster) -> None:
        """The server tells every hospital still present who has left (all of it, each time: small).

        A hospital that cannot be told (it died since the last meeting point, e.g. while another
        hospital of the relay trained) is not dropped here, where the others may have been told
        already: when the server still has a step of it to run this epoch, or a next epoch whose
        batch counts it must announce, that exchange fails and decides, and the next meeting point
        tells everyone. In the last epoch, after its last step, the failure stops the run, as
        before (nothing later would decide it for every process alike)."""
        if self.is_server:
            news = [{"hospital": d.hospital, "epoch": d.epoch, "after": d.after, "why": d.why} for d in roster.departures]
            for k in roster.members():
                try:
                    self.control.send(self.hospitals[k], roster=news)
                except TransportError as e:
                    if not (is_outage(e) and self._decided_later(k)):
                        raise
                    self.say(f"could not tell {self.hospitals[k]} who has left ({str(e).splitlines()[0][:300]}); "
                             f"the server's next exchange with it decides whether it left")
            return
        for d in self.control.recv(SERVER, "roster")["roster"]:
            roster.record(Departure(**d))
        fault_hook(self.name, self.epoch, self.rosters, at="roster")
        self.rosters += 1

    # ---- restarted hospitals --------------------------------------------------------------
    def admit_rejoins(self, epoch: int) -> list[int]:
        """The restarted hospitals that come back at the start of ``epoch`` (from 0), the same list
        in every process (:attr:`Roster.admission <medsplit.train.roster.Roster.admission>`).

        The server admits at most one a boundary (the rest wait for the next): a restarted party
        whose check-in fits (config keys, secret) and whose hospital has left. It forms the server's
        link to it, tells every hospital present to link with it again (``rejoins``), and tells it
        where the run stands (``rejoined``); the protocol's :meth:`rejoin` then gives it the current
        weights."""
        if self.rejoining is not None:  # this restarted hospital: admitted at its start-up
            self.rejoining = None
            return [self.k]
        if not self.is_server:
            back = self.control.recv(SERVER, "rejoins")["rejoins"]
            for b in back:
                self.transport.relink(self.hospitals[b["hospital"]], b["incarnation"])
            return [b["hospital"] for b in back]
        back = []
        for request, record, problems in self.transport.rejoin_requests():
            k = record["rank"] - 1 if not problems else None
            if k is not None and self.roster.present(k):
                problems = [f"client{k} is still in the run (a duplicated --rank?)"]
            if problems:
                self.transport.refuse(request, "; ".join(problems))
                self.say(f"refused a restarted party: {'; '.join(problems)}")
            elif not back:
                present = [0] + [m + 1 for m in self.roster.members()]
                back.append({"hospital": k, "incarnation": self.transport.admit(request, k + 1, present), "hello": record})
        for m in self.roster.members():
            try:
                self.control.send(self.hospitals[m], rejoins=[{"hospital": b["hospital"], "incarnation": b["incarnation"]}
                                                              for b in back])
            except TransportError as e:  # gone since the last epoch: this epoch's batch counts, next, decide
                if not is_outage(e):
                    raise
                self.say(f"could not tell {self.hospitals[m]} who rejoins ({str(e).splitlines()[0][:300]}); "
                         f"the server's next exchange with it decides whether it left")
        for b in back:
            state = self.roster.state()
            self.control.send(self.hospitals[b["hospital"]], rejoined={
                "epoch": epoch, "absent": state["absent"], "departures": state["departures"], "parties": self.parties})
            self.say(f"client{b['hospital']} restarted ({b['hello'].get('host')}, pid {b['hello'].get('pid')}) and "
                     f"rejoins at epoch {epoch + 1} with the current weights")
        return [b["hospital"] for b in back]

    def rejoin_run(self) -> int:
        """A restarted hospital learns where the run stands from the server (``rejoined``): the
        epoch it joins at, who has left, every party's hello; returns that epoch."""
        self.rejoining = self.control.recv(SERVER, "rejoined")["rejoined"]
        self.parties = self.rejoining["parties"]
        return self.rejoining["epoch"]

    def restore_roster(self) -> None:
        """Where the run stands, in this restarted hospital's roster (it is present from its first epoch)."""
        self.roster.load_state({"absent": self.rejoining["absent"], "departures": self.rejoining["departures"]})
