"""What every protocol shares: building the parties around one stage table, handing client
weights (and optimiser state) over the channel, and averaging them the way FedAvg does.

A protocol module subclasses :class:`Protocol`, sets the class attributes that describe it
(``name``, ``split``, ``baseline``, ``pooled``, ``runs_as_processes``, ``order``) and
registers itself with :func:`register`; nothing outside the protocol package compares
protocol names.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch

from medsplit.split import Channel, Party, SplitModel, cut
from medsplit.train.roster import Roster

HANDOVERS = ("carry", "reset", "local")
StepFn = Callable[[SplitModel, int, torch.Tensor], None]  # (model, client index, batch indices)

#: name -> protocol class; filled by :func:`register` as each protocol module is imported.
REGISTRY: dict[str, type[Protocol]] = {}


def register(cls: type[Protocol]) -> type[Protocol]:
    """Class decorator: make ``cls`` a choice of ``split.protocol`` under ``cls.name``."""
    module = cls.__module__.rsplit(".", 1)[-1]
    if cls.__module__.startswith("medsplit.train.protocols.") and module != cls.name.replace("-", "_"):
        # medsplit.config lists the choices from the module names (no torch import), so they must agree
        raise ValueError(f"protocol {cls.name!r} must live in medsplit/train/protocols/{cls.name.replace('-', '_')}.py, "
                         f"not {module}.py")
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(f"two protocols named {cls.name!r}: {REGISTRY[cls.name].__name__} and {cls.__name__}")
    REGISTRY[cls.name] = cls
    return cls


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
        microbatches: micro-batches per training step (``split.microbatches``), pipelined across
            the cut by every chain (:meth:`SplitModel.forward_backward`); the unsplit baselines
            accumulate them too, so their BatchNorm sees the same micro-batches.

    In a multi-process run (``channel.local`` names the parties of this process) every process
    builds the same protocol from the same seed, then keeps only its own parties' weights and
    optimisers: the other parties' parts move to the ``meta`` device (shapes, no data), which is
    what this process needs to check the messages it receives.
    """

    name = "protocol"
    #: the model is cut between hospital and server (``False``: each party trains the whole model)
    split = True
    #: an unsplit reference the split protocols are compared with (sweeps run it once per setting)
    baseline = False
    #: all hospitals' training rows pooled into one party (no partition between hospitals)
    pooled = False
    #: can run with every party in its own process (``split.transport=gloo`` or ``flare``)
    runs_as_processes = False
    #: each hospital's turn ends with :meth:`Roster.end_turn <medsplit.train.roster.Roster.end_turn>`
    #: (across processes its losses then go to the server, not to the evaluating hospital)
    reports_turns = False
    #: position in listings (``split.protocol`` choices, CLI help): lower comes first
    order = 100

    def __init__(self, table, cut_at: int | None, n_clients: int, make_optimizer, loss_fn, channel: Channel,
                 optimizer_handover: str = "carry", labels_may_cross: bool = True, microbatches: int = 1):
        if optimizer_handover not in HANDOVERS:
            raise ValueError(f"optimizer_handover={optimizer_handover!r}; valid choices are {HANDOVERS}")
        self.optimizer_handover = optimizer_handover
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
        self.servers = self._make_servers(server_parts, make_optimizer) if server_parts else []
        for party in self.parties:
            if not channel.hosts(party.name):
                party.to("meta")  # held by another process; only its shapes are needed here
                party.optimizer = None
        self.models = [self._chain_for(k) for k in range(len(self.clients))]
        #: aggregator -> the last round's average (weights, optimiser state) where it runs in this process
        self._averages: dict[str, tuple[dict, dict]] = {}
        # Who takes part (every hospital, unless the runner installs split.min_hospitals' roster).
        self.roster = Roster(len(self.clients), None, self.history_keeper())
        for model in self.models:
            model.microbatches = microbatches
        if self.split:
            for model in self.models:
                model.declare_crossings(tuple(table.inputs), labels_may_cross)
            # Client weights (and optimiser state) travel between hospitals or to the aggregator.
            channel.declare("weights", "weights", None)
            channel.declare("optimizer state", "weights", None)

    # ---- who the parties are -----------------------------------------------------------
    def n_party_clients(self) -> int:
        """How many hospital parties train (one per hospital; the pooled baseline has one)."""
        return self.n_clients

    def _make_servers(self, server_parts: dict, make_optimizer) -> list[Party]:
        """The server-side parties: one server that every hospital's chain shares."""
        return [Party("server", server_parts, make_optimizer)]

    def _server_for(self, k: int) -> Party | None:
        """The server party of hospital ``k``'s chain."""
        return self.servers[0] if self.servers else None

    @property
    def server(self) -> Party | None:
        """The server of hospital 0's chain (the only server, where there is one)."""
        return self._server_for(0)

    def _chain_for(self, k: int) -> SplitModel:
        return SplitModel.from_roles(self.parts, {"client": self.clients[k], "server": self._server_for(k)},
                                     self.channel, self.loss_fn)

    @property
    def parties(self) -> list[Party]:
        return self.clients + self.servers

    @classmethod
    def training_rows(cls, clients: list[np.ndarray]) -> list[np.ndarray]:
        """The training rows of each hospital party, from each hospital's rows (the partition):
        one array per party, in the order of ``run_epoch``'s ``batches_per_client``."""
        return clients

    @classmethod
    def history_name(cls, k: int, n_trainers: int) -> str:
        """How hospital party ``k`` of ``n_trainers`` is named in a run's history: ``client<k>``;
        ``all`` for the one party of an unsplit protocol (everyone's data, or the only hospital)."""
        return "all" if not cls.split and n_trainers == 1 else f"client{k}"

    # ---- training ------------------------------------------------------------------------
    def eval_model(self) -> SplitModel:
        """The model that validation and test use after an epoch."""
        return self.models[0]

    def run_epoch(self, batches_per_client: list[list[torch.Tensor]], step: StepFn) -> None:
        raise NotImplementedError

    def history_keeper(self) -> int:
        """The hospital whose model is evaluated after every epoch (its process keeps the history):
        the one hospital that may not drop out."""
        return 0

    def rejoin(self, k: int) -> None:
        """Hospital ``k`` takes part again (see :meth:`_take_back`). Under ``local`` its own
        optimiser starts afresh: its state left with it, as a restarted process has none, so the
        in-process schedule and a restart across processes give the same numbers."""
        self._take_back(k)
        if self.optimizer_handover == "local" and self.channel.hosts(self.clients[k].name):
            self.clients[k].clear_optimizer_state()

    def _take_back(self, k: int) -> None:
        """What a rejoining hospital ``k`` is given: the current client weights (and, with
        ``carry``, optimiser state), which the aggregator sends it."""
        self._hand_over(self.clients[self._rejoin_source(k)], self.clients[k], via="aggregator")

    def _rejoin_source(self, k: int) -> int:
        """A hospital present besides the rejoining ``k``: after a round's averaging it holds the current weights."""
        return next(j for j in self.roster.members() if j != k)

    # ---- weight sharing helpers --------------------------------------------------------
    def _send_weights(self, sender: Party, receiver: str, link: str = "weights") -> dict[str, torch.Tensor]:
        return self.channel.send(sender.name, receiver, "weights", dict(sender.parts.state_dict()), link=link)

    def _send_optimizer_state(self, sender: str, receiver: str, state: dict[str, torch.Tensor], like: Party,
                              link: str = "optimizer state") -> dict[str, torch.Tensor]:
        """Optimiser state as a message; the receiver checks it against ``like``'s parameters
        (it cannot know in advance which moments the sender holds)."""
        return self.channel.send(sender, receiver, "weights", state, link=link, expect=optimizer_state_check(like))

    def _hand_over(self, sender: Party, receiver: Party, via: str | None = None, links: str = "") -> None:
        """``receiver`` continues from ``sender``'s weights (and, with ``carry``, its optimiser
        state), both sent over the channel by ``via``: the sender itself (the relay), or the
        aggregator that holds the round's average (a hospital rejoining). ``links`` prefixes the
        link names, as in :meth:`_average`."""
        via = via or sender.name
        here = self.channel.hosts(receiver.name)
        held, held_state = self._held_by(via, sender)
        weights = self.channel.send(via, receiver.name, "weights", held, link=f"{links}weights")
        if here:
            receiver.parts.load_state_dict(weights)
        if self.optimizer_handover == "carry":
            state = self._send_optimizer_state(via, receiver.name, held_state, receiver, f"{links}optimizer state")
            if here:
                receiver.load_optimizer_tensors(state)
        elif self.optimizer_handover == "reset":
            receiver.clear_optimizer_state()

    def _held_by(self, via: str, sender: Party) -> tuple[dict, dict]:
        """``sender``'s weights and optimiser state as ``via`` holds them: ``sender``'s own, except
        where an aggregator sends them and ``sender`` runs in another process (a hospital rejoining
        a multi-process run): then the aggregator's last average, which every member loaded."""
        if via in self._averages and via != sender.name and not self.channel.hosts(sender.name):
            return self._averages[via]
        return dict(sender.parts.state_dict()), sender.optimizer_tensors()

    def _fedavg(self, weights: list[float]) -> None:
        """Average the present hospitals' client parts (weighted by sample count) and give each of
        them the average; with ``carry`` the optimiser states are averaged the same way. The
        aggregator lives with the server in a multi-process run."""
        self.roster.sync()  # every process agrees on who is averaged
        self._average(*self._present(self.clients, weights), "aggregator")

    def _present(self, members: list[Party], weights: list[float]) -> tuple[list[Party], list[float]]:
        """The hospitals' ``members`` (one per hospital) and ``weights`` of those present."""
        kept = self.roster.members()
        return [members[k] for k in kept], [weights[k] for k in kept]

    def _average(self, members: list[Party], weights: list[float], aggregator: str, links: str = "") -> None:
        """FedAvg over ``members``: each uploads its parts to ``aggregator``, which sends back the
        weighted average (and, with ``carry``, averages the optimiser states the same way).
        ``links`` prefixes the link names (``""``: ``weights`` and ``optimizer state``)."""
        weights_link, state_link = f"{links}weights", f"{links}optimizer state"
        aggregator_here = self.channel.hosts(aggregator)
        uploads = [self._send_weights(c, aggregator, weights_link) for c in members]
        # Elsewhere only the shapes matter (what each member expects back).
        avg = weighted_average(uploads, weights) if aggregator_here else dict(members[0].parts.state_dict())
        if aggregator_here:
            self._averages[aggregator] = (avg, {})
        for c in members:
            received = self.channel.send(aggregator, c.name, "weights", avg, link=weights_link)
            if self.channel.hosts(c.name):
                c.parts.load_state_dict(received)
        if self.optimizer_handover == "reset":
            for c in members:
                c.clear_optimizer_state()
        elif self.optimizer_handover == "carry":
            states = [self._send_optimizer_state(c.name, aggregator, c.optimizer_tensors(), c, state_link) for c in members]
            # A member that has not stepped yet has no state to contribute.
            kept = [(s, w) for s, w in zip(states, weights) if s]
            if aggregator_here and kept:
                avg_state = weighted_average([s for s, _ in kept], [w for _, w in kept])
                self._averages[aggregator] = (avg, avg_state)
            else:
                avg_state = {}
            # Across processes a member cannot know whether the others had state, so the
            # aggregator always answers (an empty message when nobody had any).
            if kept or self.channel.distributed:
                for c in members:
                    received = self._send_optimizer_state(aggregator, c.name, avg_state, c, state_link)
                    if self.channel.hosts(c.name) and received:
                        c.load_optimizer_tensors(received)

    # ---- checkpoints and evaluation ----------------------------------------------------
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


def weighted_average(tensors: list[dict[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
    """Per-key weighted mean (in float64; integer buffers such as BatchNorm's counter rounded back)."""
    total = float(sum(weights))
    avg = {}
    for key, ref in tensors[0].items():
        acc = sum(t[key].double() * (w / total) for t, w in zip(tensors, weights))
        avg[key] = acc.round().to(ref.dtype) if not ref.is_floating_point() else acc.to(ref.dtype)
    return avg


def sample_counts(batches_per_client) -> list[int]:
    """Training images per hospital in this epoch's batches: FedAvg's weights."""
    return [sum(len(idx) for idx in batches) for batches in batches_per_client]
