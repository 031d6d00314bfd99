"""Baseline: federated averaging of the whole model (McMahan et al. 2017)."""

from __future__ import annotations

from medsplit.train.protocols.base import Protocol, register, sample_counts


@register
class FedAvg(Protocol):
    """Baseline: every client trains the whole model locally; weights averaged each round."""

    name = "fedavg"
    split = False
    baseline = True
    order = 90

    def run_epoch(self, batches_per_client, step):
        for k, batches in enumerate(batches_per_client):
            for idx in batches:
                step(self.models[k], k, idx)
        self._fedavg(sample_counts(batches_per_client))
