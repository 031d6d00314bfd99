"""Baseline: one party trains the whole model on everyone's data."""

from __future__ import annotations

import numpy as np

from medsplit.train.protocols.base import Protocol, register


@register
class Centralised(Protocol):
    """Baseline: one party trains the whole model on everyone's training data."""

    name = "centralised"
    split = False
    baseline = True
    pooled = True
    order = 80

    def n_party_clients(self) -> int:
        return 1

    @classmethod
    def training_rows(cls, clients):
        # Every hospital's rows pooled in row order, so the batches do not depend on how many
        # clients the config names and equal those of a one-client split run.
        return [np.sort(np.concatenate(clients))]

    def run_epoch(self, batches_per_client, step):
        for idx in batches_per_client[0]:
            step(self.models[0], 0, idx)
