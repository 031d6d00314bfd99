"""Who trains what: sequential relay, SplitFed, centralised and FedAvg baselines.

All four run on the same data, partitions, seeds, batches and metrics; they differ
only in which party owns which part and how client weights are shared.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch

from medsplit.split import Channel, Party, SplitModel, cut

HANDOVERS = ("carry", "reset", "local")
StepFn = Callable[[SplitModel, int, torch.Tensor], None]  # (model, client index, batch indices)


class Protocol:
    """Builds the parties for one run and trains them one epoch at a time.

    Args:
        table: the whole model as a stage table (its initial weights are shared by everyone).
        cut_at: user-facing cut; ignored by the unsplit baselines.
        n_clients: number of hospitals.
        make_optimizer: optimiser factory, one optimiser per party.
        loss_fn: the task loss.
        channel: counts everything that crosses between parties.
        optimizer_handover: what a hospital's optimiser state does when the hospital takes in
            client weights (``split.optimizer_handover``): ``carry`` it travels with the weights
            (the relay hands it on, the averaging protocols average it), ``reset`` it starts
            afresh, ``local`` each hospital keeps its own.
        labels_may_cross: the task's plan lets targets cross to the server when the server
            computes the loss (classification); ``False`` (segmentation masks) makes a chain
            that would need it fail before training.

    In a multi-process run (``channel.local`` names the parties of this process) every process
    builds the same protocol from the same seed, then keeps only its own parties' weights and
    optimisers: the other parties' parts move to the ``meta`` device (shapes, no data), which is
    what this process needs to check the messages it receives.
    """

    name = "protocol"
    split = True

    def __init__(self, table, cut_at: int | None, n_clients: int, make_optimizer, loss_fn, channel: Channel,
                 optimizer_handover: str = "carry", labels_may_cross: bool = True):
        if optimizer_handover not in HANDOVERS:
            raise ValueError(f"optimizer_handover={optimizer_handover!r}; valid choices are {HANDOVERS}")
        self.optimizer_handover = optimizer_handover
        self.table = table
        self.channel = channel
        self.loss_fn = loss_fn
        self.n_clients = n_clients
        self.parts = cut(table, cut_at if self.split else None)
        client_parts = {p.name: p for p in self.parts if p.role == "client"}
        server_parts = {p.name: p for p in self.parts if p.role == "server"}
        # Every client starts from the same initial weights (deep copies of one init).
        self.clients = [
            Party(f"client{k}", client_parts if k == 0 else copy.deepcopy(client_parts), make_optimizer)
            for k in range(self.n_party_clients())
        ]
        self.server = Party("server", server_parts, make_optimizer) if server_parts else None
        for party in self.parties:
            if not channel.hosts(party.name):
                party.to("meta")  # held by another process; only its shapes are needed here
                party.optimizer = None
        self.models = [self._chain_for(c) for c in self.clients]
        if self.split:
            for model in self.models:
                model.declare_crossings(tuple(table.inputs), labels_may_cross)
            # Client weights (and optimiser state) travel between hospitals or to the aggregator.
            channel.declare("weights", "weights", None)
            channel.declare("optimizer state", "weights", None)

    def n_party_clients(self) -> int:
        return self.n_clients

    def _chain_for(self, client: Party) -> SplitModel:
        return SplitModel.from_roles(self.parts, {"client": client, "server": self.server}, self.channel, self.loss_fn)

    @property
    def parties(self) -> list[Party]:
        return self.clients + ([self.server] if self.server is not None else [])

    def eval_model(self) -> SplitModel:
        """The model that validation and test use after an epoch."""
        return self.models[0]

    def run_epoch(self, batches_per_client: list[list[torch.Tensor]], step: StepFn) -> None:
        raise NotImplementedError

    # weight sharing helpers --------------------------------------------------------
    def _send_weights(self, sender: Party, receiver: str) -> dict[str, torch.Tensor]:
        return self.channel.send(sender.name, receiver, "weights", dict(sender.parts.state_dict()), link="weights")

    def _send_optimizer_state(self, sender: str, receiver: str, state: dict[str, torch.Tensor], like: Party) -> dict[str, torch.Tensor]:
        """Optimiser state as a message; the receiver checks it against ``like``'s parameters
        (it cannot know in advance which moments the sender holds)."""
        return self.channel.send(sender, receiver, "weights", state, link="optimizer state", expect=optimizer_state_check(like))

    def _hand_over(self, sender: Party, receiver: Party) -> None:
        """``receiver`` continues from ``sender``'s client weights (and, with ``carry``, its
        optimiser state), both sent over the channel."""
        here = self.channel.hosts(receiver.name)
        weights = self._send_weights(sender, receiver.name)
        if here:
            receiver.parts.load_state_dict(weights)
        if self.optimizer_handover == "carry":
            state = self._send_optimizer_state(sender.name, receiver.name, sender.optimizer_tensors(), receiver)
            if here:
                receiver.load_optimizer_tensors(state)
        elif self.optimizer_handover == "reset":
            receiver.clear_optimizer_state()

    def _fedavg(self, weights: list[float]) -> None:
        """Average client parts (weighted by sample count) and give every client the average;
        with ``carry`` the optimiser states are averaged the same way. The aggregator lives with
        the server in a multi-process run."""
        aggregator_here = self.channel.hosts("aggregator")
        uploads = [self._send_weights(c, "aggregator") for c in self.clients]
        # Elsewhere only the shapes matter (what each hospital expects back).
        avg = _weighted_average(uploads, weights) if aggregator_here else dict(self.clients[0].parts.state_dict())
        for c in self.clients:
            received = self.channel.send("aggregator", c.name, "weights", avg, link="weights")
            if self.channel.hosts(c.name):
                c.parts.load_state_dict(received)
        if self.optimizer_handover == "reset":
            for c in self.clients:
                c.clear_optimizer_state()
        elif self.optimizer_handover == "carry":
            states = [self._send_optimizer_state(c.name, "aggregator", c.optimizer_tensors(), c) for c in self.clients]
            # A hospital that has not stepped yet has no state to contribute.
            kept = [(s, w) for s, w in zip(states, weights) if s]
            if aggregator_here and kept:
                avg_state = _weighted_average([s for s, _ in kept], [w for _, w in kept])
            else:
                avg_state = {}
            # Across processes a hospital cannot know whether the others had state, so the
            # aggregator always answers (an empty message when nobody had any).
            if kept or self.channel.distributed:
                for c in self.clients:
                    received = self._send_optimizer_state("aggregator", c.name, avg_state, c)
                    if self.channel.hosts(c.name) and received:
                        c.load_optimizer_tensors(received)

    @property
    def local_parties(self) -> list[Party]:
        """The parties this process runs (all of them in one process)."""
        return [p for p in self.parties if self.channel.hosts(p.name)]

    def state(self) -> dict:
        return {p.name: p.state() for p in self.local_parties}

    def load_state(self, state: dict) -> None:
        for p in self.local_parties:
            p.load_state(state[p.name])

    def eval_state_dict(self) -> dict[str, torch.Tensor]:
        """Whole-model weights of the evaluation model (keys of the stage table); in a
        multi-process run, the parts of it this process holds."""
        out = {}
        for part, owner in self.eval_model().chain:
            if self.channel.hosts(owner.name):
                out.update(part.state_dict())
        return out

    def eval_client_index(self) -> int:
        """Which hospital's model :meth:`eval_model` is (its process evaluates)."""
        return self.models.index(self.eval_model())


class SequentialRelay(Protocol):
    """The original study's protocol: clients take turns against one server, each
    starting from the previous client's client-side weights (sent as ``weights`` bytes)."""

    name = "sequential"

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


class SplitFed(Protocol):
    """SplitFed, variant SFL-V2 (Thapa et al. 2022): clients train in parallel against one
    shared server model, which every client's batch updates in turn (batches interleaved
    round-robin, as they would arrive); client parts are averaged (FedAvg) every round.
    (SFL-V1 would keep one server copy per client and average those too; not implemented.)"""

    name = "splitfed"

    def run_epoch(self, batches_per_client, step):
        iters = [iter(b) for b in batches_per_client]
        active = list(range(len(iters)))
        while active:
            for k in list(active):
                idx = next(iters[k], None)
                if idx is None:
                    active.remove(k)
                    continue
                step(self.models[k], k, idx)
        self._fedavg(_sample_counts(batches_per_client))


class Centralised(Protocol):
    """Baseline: one party trains the whole model on everyone's training data."""

    name = "centralised"
    split = False

    def n_party_clients(self) -> int:
        return 1

    def run_epoch(self, batches_per_client, step):
        for idx in batches_per_client[0]:
            step(self.models[0], 0, idx)


class FedAvg(Protocol):
    """Baseline: every client trains the whole model locally; weights averaged each round."""

    name = "fedavg"
    split = False

    def run_epoch(self, batches_per_client, step):
        for k, batches in enumerate(batches_per_client):
            for idx in batches:
                step(self.models[k], k, idx)
        self._fedavg(_sample_counts(batches_per_client))


def optimizer_state_check(party: Party):
    """A check for received optimiser state: every tensor named ``"<param index>.<slot>"`` for a
    parameter of ``party``, shaped like it (or a scalar step count), floating point, finite."""
    shapes = [tuple(p.shape) for p in party.parameters() if p.requires_grad]

    def check(tensors: dict[str, torch.Tensor]) -> str | None:
        for name, t in tensors.items():
            idx, dot, slot = name.partition(".")
            if not dot or not idx.isdigit() or int(idx) >= len(shapes) or not slot:
                return f"optimiser state {name!r} names no parameter of {party.name} ({len(shapes)} parameters)"
            if tuple(t.shape) not in ((), shapes[int(idx)]):
                return f"optimiser state {name!r} has shape {tuple(t.shape)} (parameter {idx} has {shapes[int(idx)]})"
            if not t.is_floating_point():
                return f"optimiser state {name!r} has dtype {t.dtype} (expected floating point)"
        return None

    return check


def _weighted_average(tensors: list[dict[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
    """Per-key weighted mean (in float64; integer buffers such as BatchNorm's counter rounded back)."""
    total = float(sum(weights))
    avg = {}
    for key, ref in tensors[0].items():
        acc = sum(t[key].double() * (w / total) for t, w in zip(tensors, weights))
        avg[key] = acc.round().to(ref.dtype) if not ref.is_floating_point() else acc.to(ref.dtype)
    return avg


def _sample_counts(batches_per_client) -> list[int]:
    return [sum(len(idx) for idx in batches) for batches in batches_per_client]


PROTOCOLS = {p.name: p for p in (SequentialRelay, SplitFed, Centralised, FedAvg)}
