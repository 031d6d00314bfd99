"""The original study's protocol: a relay of hospitals around one server."""

from __future__ import annotations

from medsplit.train.protocols.base import Protocol, register


@register
class SequentialRelay(Protocol):
    """The original study's protocol: clients take turns against one server, each
    starting from the previous client's client-side weights (sent as ``weights`` bytes)."""

    name = "sequential"
    runs_as_processes = True
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
                self._hand_over(self.clients[self.last], self.clients[k])
            for idx in batches:
                step(self.models[k], k, idx)
            self._turn = k
        self._settle_turn()

    def _settle_turn(self) -> None:
        """Every process learns who is present (the server finds a hospital gone during its turn);
        then the hospital whose turn ran holds the weights, unless it left and took them with it."""
        self.roster.sync()
        if self._turn is not None and self.roster.present(self._turn):
            self.last = self._turn
        self._turn = None

    def history_keeper(self):
        return len(self.clients) - 1  # the last turn of every epoch is its

    def rejoin(self, k):
        """Nothing to send now: the hospital before it in the relay hands it the weights at its turn."""

    def eval_model(self):
        return self.models[self.last]

    def state(self):
        return {**super().state(), "last": self.last}

    def load_state(self, state):
        super().load_state(state)
        self.last = int(state["last"])
