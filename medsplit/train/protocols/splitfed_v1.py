"""SplitFed, variant SFL-V1 (Thapa et al., "SplitFed: When Federated Learning Meets Split
Learning", AAAI 2022): every hospital trains against its own copy of the server-side model;
at the end of each round the fed server averages the hospitals' parts and the main server
averages its copies, both weighted by the hospitals' sample counts."""

from __future__ import annotations

import copy

from medsplit.split import Party
from medsplit.train.protocols.base import register, sample_counts
from medsplit.train.protocols.splitfed import SplitFed, interleaved

#: where the server copies are averaged (the paper's "main server"; "aggregator" is its fed server)
MAIN_SERVER = "main-server"
#: prefix of the links the server copies' averaging uses ("server weights", "server optimizer state")
SERVER_LINKS = "server "


@register
class SplitFedV1(SplitFed):
    """SplitFed SFL-V1: hospital ``k`` trains against server copy ``server<k>``; all copies start
    from the same initial weights; each round (epoch) ends with FedAvg of the hospital parts
    (through ``aggregator``, as SFL-V2 does) and of the server copies (through ``main-server``),
    weighted by sample counts, so every copy leaves the round with the same weights.

    The paper runs the hospitals in parallel; here their batches run in SFL-V2's deterministic
    round-robin order (hospital 0's first batch, hospital 1's first batch, ...). Since each
    hospital has its own server copy, the order does not change any copy's updates (the
    batches' augmentations come from per-hospital generators; dropout, which draws from the
    global generator, would see the same draws only in this order).

    The copies' averaging is counted on the channel as ``weights`` messages on the links
    ``server weights`` and ``server optimizer state`` (with ``carry``). In the paper the
    copies live on the main server itself, so these bytes need not cross a network; they are
    counted (on their own links, so a reader can leave them out) because a main server that
    runs the copies on separate machines would send them. ``split.optimizer_handover`` applies
    to the copies as to the hospitals: ``carry`` averages their optimiser states, ``reset``
    clears them after each averaging, ``local`` keeps each copy's own. With one hospital and
    ``carry`` or ``local`` the averages change nothing, and SFL-V1 trains exactly as SFL-V2.

    Runs in one process only (``split.transport=inprocess``).
    """

    name = "splitfed-v1"
    runs_as_processes = False
    order = 20

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.split:
            self.channel.declare(f"{SERVER_LINKS}weights", "weights", None)
            self.channel.declare(f"{SERVER_LINKS}optimizer state", "weights", None)

    def _make_servers(self, server_parts: dict, make_optimizer) -> list[Party]:
        # One copy per hospital, deep copies of one init; names end in the hospital's index.
        return [Party(f"server{k}", server_parts if k == 0 else copy.deepcopy(server_parts), make_optimizer)
                for k in range(self.n_party_clients())]

    def _server_for(self, k: int) -> Party | None:
        return self.servers[k] if self.servers else None

    def run_epoch(self, batches_per_client, step):
        interleaved(batches_per_client, step, self.models)
        self.average_round(batches_per_client)

    def average_round(self, batches_per_client) -> None:
        """The round's end: FedAvg of the hospital parts, then of the server copies."""
        counts = sample_counts(batches_per_client)
        self._fedavg(counts)
        self._average(*self._present(self.servers, counts), MAIN_SERVER, links=SERVER_LINKS)

    def _take_back(self, k):
        """Hospital ``k`` and its server copy continue from the current weights of both."""
        super()._take_back(k)
        self._hand_over(self.servers[self._rejoin_source(k)], self.servers[k], via=MAIN_SERVER, links=SERVER_LINKS)
