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

    def run_epoch(self, batches_per_client, step):
        for k, batches in enumerate(batches_per_client):
            if k != self.last:
                self._hand_over(self.clients[self.last], self.clients[k])
            for idx in batches:
                step(self.models[k], k, idx)
            self.last = k

    def eval_model(self):
        return self.models[self.last]

    def state(self):
        return {**super().state(), "last": self.last}

    def load_state(self, state):
        super().load_state(state)
        self.last = int(state["last"])
