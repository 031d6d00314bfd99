"""SplitFed, variant SFL-V2 (Thapa et al., AAAI 2022): one server model shared by all hospitals."""

from __future__ import annotations

from medsplit.train.protocols.base import Protocol, register, sample_counts


def interleaved(batches_per_client, step, models) -> None:
    """Every hospital's batches in turn, round-robin (as they would arrive at the server when
    the hospitals train in parallel); a hospital whose batches have run out drops out."""
    iters = [iter(b) for b in batches_per_client]
    active = list(range(len(iters)))
    while active:
        for k in list(active):
            idx = next(iters[k], None)
            if idx is None:
                active.remove(k)
                continue
            step(models[k], k, idx)


@register
class SplitFed(Protocol):
    """SplitFed, variant SFL-V2 (Thapa et al. 2022): clients train in parallel against one
    shared server model, which every client's batch updates in turn (batches interleaved
    round-robin, as they would arrive); client parts are averaged (FedAvg) every round.
    SFL-V1 (one server copy per client, averaged too) is ``splitfed-v1``."""

    name = "splitfed"
    runs_as_processes = True
    order = 10

    def run_epoch(self, batches_per_client, step):
        interleaved(batches_per_client, step, self.models)
        self._fedavg(sample_counts(batches_per_client))
