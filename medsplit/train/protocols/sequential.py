"""The original study's protocol: a relay of hospitals around one server."""

from __future__ import annotations

from medsplit.train.protocols.base import Protocol, register
from medsplit.train.roster import is_outage
from medsplit.transport.base import TransportError


@register
class SequentialRelay(Protocol):
    """The original study's protocol: clients take turns against one server, each
    starting from the previous client's client-side weights (sent as ``weights`` bytes)."""

    name = "sequential"
    runs_as_processes = True
    reports_turns = True
    order = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.last = 0  # index of the client that trained most recently
        self._turn: int | None = None  # the hospital whose turn just ran, until every process knows it stayed

    def run_epoch(self, batches_per_client, step):
        for k, batches in enumerate(batches_per_client):
            self._settle_turn()
            if not self.roster.present(k):
                continue  # dropped out: the weights pass it by
            if k != self.last:
                self._pass_weights(self.last, k)
            for idx in batches:
                step(self.models[k], k, idx)
            self.roster.end_turn(k)
            self._turn = k
        self._settle_turn()

    def _pass_weights(self, j: int, k: int) -> None:
        """Hospital ``j`` hands its weights (and optimiser state) to hospital ``k`` for its turn.

        Across processes ``k`` may have died since the last meeting point (while another hospital
        trained); ``j`` finds it first: its send fails. Where hospitals may leave, that is not
        ``j``'s departure, nor ``j``'s decision: ``j`` carries on as though it had handed them
        over. The server decides, as for any hospital: ``k``'s first step fails, ``k`` leaves
        after 0 of its batches, and the meeting point before the next turn tells every process,
        so the weights stay with ``j`` and go to the next hospital present, which is what the
        in-process schedule ``client<k>:epoch=<this epoch>:after=0`` does (a send that failed
        is not counted). Every process decides alike whether the send failed or still reached
        a socket buffer of the dead peer; only the byte count tells them apart (a send the
        transport took is counted). Only the sending process forgives a failed send (a hospital
        whose weights do not arrive stops, as before), and only an outage: a frame that broke
        the rules stops the run."""
        try:
            self._hand_over(self.clients[j], self.clients[k])
        except TransportError as e:
            sending_here = self.channel.hosts(self.clients[j].name) and not self.channel.hosts(self.clients[k].name)
            if not (self.roster.tolerant and sending_here and is_outage(e)):
                raise
            self.roster.notice(f"handing the weights to client{k} failed ({str(e).splitlines()[0][:300]}); "
                               f"the server's step with client{k} decides whether it left")

    def _settle_turn(self) -> None:
        """Every process learns who is present (the server finds a hospital gone during its turn);
        then the hospital whose turn ran holds the weights, unless it left and took them with it."""
        self.roster.sync()
        if self._turn is not None and self.roster.present(self._turn):
            self.last = self._turn
        self._turn = None

    def history_keeper(self):
        return len(self.clients) - 1  # the last turn of every epoch is its

    def _take_back(self, k):
        """Nothing to send now: the hospital before it in the relay hands it the weights at its turn.
        An epoch starts with the weights at the history keeper (the last turn of every epoch is its),
        which a restarted process, built afresh, learns here."""
        self.last = self.history_keeper()

    def eval_model(self):
        return self.models[self.last]

    def state(self):
        return {**super().state(), "last": self.last}

    def load_state(self, state):
        super().load_state(state)
        self.last = int(state["last"])
