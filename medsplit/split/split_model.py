"""Run a chain of parts owned by different parties, with every crossing on a Channel.

Each part is its own autograd graph: its inputs are fresh leaves (received through the
channel when they come from another party, detached locally otherwise). Backward runs
part by part in reverse; a part calls ``torch.autograd.backward(sent, grads)`` once,
with the gradients of *every* consumer of what it produced. So a U-Net client encoder
gets gradients through the server path and through its own skip connections (the
original code dropped the latter), and no graph is traversed twice.

In a multi-process run every process runs the same schedule (SPMD): a part whose owner lives in
another process runs on the ``meta`` device (shapes only, no data, no weights), so each process
knows what it must receive; crossings become real sends and receives in the Channel, and only
the owner of a part computes, differentiates and steps it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch

from medsplit.split.channel import Channel
from medsplit.split.crossings import CrossingError
from medsplit.split.cut import Part
from medsplit.split.party import Party

# (part name, tensors it is about to send to another party) -> tensors actually sent.
SendTransform = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
# (part inputs, part outputs) -> an extra scalar loss the part's owner adds locally.
Regularizer = Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor]], torch.Tensor]


@dataclass
class _Edge:
    """One tensor delivered from a producer part to a consumer part."""

    name: str
    producer: int  # index in the chain; -1 for the batch (owned by the data owner)
    consumer: int  # index in the chain; len(chain) for the loss
    sent: torch.Tensor  # in the producer's graph
    received: torch.Tensor  # a leaf in the consumer's graph
    crossed: bool  # went through the channel


@dataclass
class _Pass:
    """One batch (or micro-batch) on its way through the chain."""

    holders: dict  # tensor name -> (index of the part that produced it, the tensor)
    weight: float | None  # share of the batch's rows (``None``: the whole batch, unweighted)
    # pending[k]: tensors of part k's graph and the gradient summed over their consumers
    pending: list[dict[int, list]]
    edges: list[_Edge] = field(default_factory=list)
    inputs_of: list[dict[str, torch.Tensor]] = field(default_factory=list)
    outputs_of: list[dict[str, torch.Tensor]] = field(default_factory=list)
    loss: torch.Tensor | None = None

    def output(self, key: str) -> torch.Tensor:
        return self.holders[key][1]


class SplitModel:
    """A split model as seen by a protocol: parts in order, each owned by a party.

    Args:
        chain: ``[(part, owner), ...]`` in execution order.
        channel: carries every tensor that moves between two different parties.
        data_owner: the party holding the inputs and the targets (a hospital).
        loss_fn: ``loss_fn(output, target) -> scalar``, computed by the owner of the last
            part (targets cross the channel, counted as ``label`` bytes, when that is the server).
        target_key: name under which targets travel.
        microbatches: micro-batches per training step, pipelined across the cut
            (``split.microbatches``; see :meth:`forward_backward`); 1: the batch at once.
    """

    def __init__(self, chain: list[tuple[Part, Party]], channel: Channel, data_owner: Party,
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], target_key: str = "y",
                 microbatches: int = 1):
        if microbatches < 1:
            raise ValueError(f"microbatches={microbatches} must be >= 1 (split.microbatches)")
        self.chain = chain
        self.channel = channel
        self.data_owner = data_owner
        self.loss_fn = loss_fn
        self.target_key = target_key
        self.microbatches = microbatches
        self.output_key = chain[-1][0].sends[-1]
        self.send_transforms: dict[str, SendTransform] = {}
        self.regularizers: dict[str, Regularizer] = {}

    def declare_crossings(self, inputs: tuple[str, ...] = ("x",), labels_may_cross: bool = True) -> None:
        """Tell the channel what may cross between this model's parties, from the chain itself:
        activations forward and gradients back on every cut, targets only to a loss owner that
        is not the data owner and only when ``labels_may_cross`` (the plan gives the server the
        labels); model inputs never. A chain that would need more fails here, before any send."""
        producer_of = {name: -1 for name in inputs}
        producer_of[self.target_key] = -1
        for k, (part, owner) in enumerate(self.chain):
            by_producer: dict[int, list[str]] = {}
            for name in part.reads:
                by_producer.setdefault(producer_of[name], []).append(name)
            for j, names in by_producer.items():
                if self._owner(j) is owner:
                    continue
                bad = [n for n in names if n in inputs]
                if bad:
                    raise CrossingError(f"part {part.name!r} ({owner.name}) reads the model input(s) {bad} held by "
                                        f"{self._owner(j).name}: inputs never cross; choose another cut or model")
                self.channel.declare(f"{self._part_name(j)}->{part.name}", "activation", names)
                self.channel.declare(f"{part.name}->{self._part_name(j)}", "gradient", names)
            for name in part.sends:
                producer_of[name] = k
        last_owner = self.chain[-1][1]
        if last_owner is not self.data_owner:
            if not labels_may_cross:
                raise CrossingError(f"the loss is computed by {last_owner.name} (part {self.chain[-1][0].name!r}), which "
                                    f"would need the targets from {self.data_owner.name}; this task's targets never leave "
                                    "the hospital: choose a cut whose last part is the hospital's")
            self.channel.declare("labels", "label", [self.target_key])
            # Multi-process evaluation returns the output to the data owner (metrics live there).
            self.channel.declare("output", "activation", [self.output_key])

    @classmethod
    def from_roles(cls, parts: list[Part], parties: dict[str, Party], channel: Channel,
                   loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> "SplitModel":
        """Chain ``parts`` in order, each run by the party of its role (``"client"``/``"server"``),
        using that party's own copy of the part (hospitals hold copies of the client parts)."""
        chain = [(parties[p.role].parts[p.name], parties[p.role]) for p in parts]
        return cls(chain, channel, parties["client"], loss_fn)

    @property
    def parties(self) -> list[Party]:
        return list({id(p): p for _, p in self.chain}.values())

    def train(self, mode: bool = True) -> "SplitModel":
        for part, _ in self.chain:
            part.train(mode)
        return self

    def eval(self) -> "SplitModel":
        return self.train(False)

    # ---- forward -----------------------------------------------------------------

    def _start(self, x: torch.Tensor, y: torch.Tensor | None, weight: float | None = None) -> _Pass:
        holders: dict[str, tuple[int, torch.Tensor]] = {"x": (-1, x)}
        if y is not None:
            holders[self.target_key] = (-1, y)
        return _Pass(holders, weight, [dict() for _ in range(len(self.chain) + 1)])

    def _forward_stage(self, run: _Pass, k: int) -> None:
        """Run part ``k`` of ``run`` (``k == len(chain)``: the loss, where the batch has targets)."""
        if k == len(self.chain):
            if self.target_key not in run.holders:
                return
            owner = self.chain[-1][1]
            loss_inputs = self._deliver((self.output_key, self.target_key), k, owner, run.holders, run.edges)
            if self.channel.hosts(owner.name):
                run.loss = self.loss_fn(loss_inputs[self.output_key], loss_inputs[self.target_key])
            return
        part, owner = self.chain[k]
        inputs = self._deliver(part.reads, k, owner, run.holders, run.edges)
        if self.channel.hosts(owner.name):
            outputs = part(inputs)
        else:  # another process computes it; here only its shapes (meta device) are needed
            with torch.no_grad():
                outputs = part({n: t.to("meta") for n, t in inputs.items()})
        run.inputs_of.append(inputs)
        run.outputs_of.append(outputs)
        for name, t in outputs.items():
            run.holders[name] = (k, t)

    def _run(self, x: torch.Tensor, y: torch.Tensor | None) -> _Pass:
        """Forward through every part (and the loss when ``y`` is given)."""
        run = self._start(x, y)
        for k in range(len(self.chain) + 1):
            self._forward_stage(run, k)
        return run

    def _owner(self, index: int) -> Party:
        if index == -1:
            return self.data_owner
        return self.chain[min(index, len(self.chain) - 1)][1]  # the loss belongs to the last part's owner

    def _part_name(self, index: int) -> str:
        if index == -1:
            return "data"
        return "loss" if index == len(self.chain) else self.chain[index][0].name

    def _deliver(self, names, consumer: int, receiver: Party, holders, edges: list[_Edge]) -> dict[str, torch.Tensor]:
        """Hand the tensors ``names`` to part ``consumer``; cross-party ones go through the channel."""
        by_producer: dict[int, list[str]] = {}
        for name in names:
            by_producer.setdefault(holders[name][0], []).append(name)
        delivered = {}
        for producer, group in by_producer.items():
            sender = self._owner(producer)
            sent = {n: holders[n][1] for n in group}
            crossed = sender is not receiver
            if crossed:
                transform = self.send_transforms.get(self._part_name(producer))
                if transform is not None and self.channel.hosts(sender.name):
                    sent = transform(sent)
                kind = "label" if group == [self.target_key] else "activation"
                link = "labels" if kind == "label" else f"{self._part_name(producer)}->{self._part_name(consumer)}"
                received = self.channel.send(sender.name, receiver.name, kind, sent, link=link)
            else:
                received = {n: (t.detach().requires_grad_(t.requires_grad) if t.is_floating_point() else t) for n, t in sent.items()}
            for n in group:
                edges.append(_Edge(n, producer, consumer, sent[n], received[n], crossed))
                delivered[n] = received[n]
        return delivered

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Inference: the output as its owner sees it (activations still cross the channel)."""
        with self.channel.evaluating():
            output = self._run(x, None).output(self.output_key)
            owner = self.chain[-1][1]
            if self.channel.distributed and owner is not self.data_owner:
                # Across processes the output goes back to the hospital, which holds the labels and
                # computes the metrics (uncompressed: it is the result, not a cut activation).
                output = self.channel.send(owner.name, self.data_owner.name, "activation", {self.output_key: output},
                                           link="output", use_codec=False)[self.output_key].detach()
            return output

    __call__ = forward

    # ---- training ----------------------------------------------------------------

    def train_step(self, x: torch.Tensor, y: torch.Tensor, step: bool = True) -> tuple[float, torch.Tensor]:
        """One forward/backward (and, with ``step``, optimiser step) of every party.

        With :attr:`microbatches` > 1 the batch goes through as micro-batches, pipelined (see
        :meth:`forward_backward`); the gradients accumulate and every party still steps once.
        Returns the loss value (the batch's mean loss) and the detached output (for running
        metrics); in a process that does not compute the loss, the loss is NaN (its owner reports it).
        """
        local = [p for p in self.parties if self.channel.hosts(p.name)]
        for party in local:
            party.zero_grad()
        output, loss = self.forward_backward(x, y)
        if step:
            for party in local:
                party.step()
        self.channel.next_step()
        return (float(loss) if loss is not None else float("nan")), output

    def forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Forward and backward of one batch; the parameters' gradients are left in ``.grad``.

        With ``M = microbatches`` > 1 the batch is cut into ``M`` micro-batches (rows in order,
        sizes as even as possible, at least two rows each, so a small last batch gets fewer) and
        run as a pipeline: every process runs the same wavefront schedule (:func:`wavefront`), so at
        one tick the hospital computes micro-batch k+1 while the server computes k, and the sends
        of that schedule do not wait for delivery (:meth:`Channel.overlapping`). Each micro-batch's
        loss is weighted by its share of the rows, so the accumulated gradient is the full batch's
        mean-loss gradient, except that BatchNorm normalises each micro-batch with its own
        statistics (and updates its running statistics once per micro-batch); batch-level
        regularisers (NoPeek's distance correlation) are computed per micro-batch too. Returns
        the detached output (all rows) and the batch's loss (``None`` where another process computes it).
        """
        sizes = microbatch_sizes(int(x.shape[0]), self.microbatches)
        if len(sizes) == 1:  # the whole batch at once: exactly the unpipelined step
            runs = [self._start(x, y)]
        else:
            n = int(x.shape[0])
            runs = [self._start(xk, yk, len(xk) / n) for xk, yk in zip(x.split(sizes), y.split(sizes))]
        stages = len(self.chain) + 1  # the parts, then the loss
        with self.channel.overlapping() if len(runs) > 1 else contextlib.nullcontext():
            for m, s in wavefront(len(runs), stages):
                self._forward_stage(runs[m], s)
            # Backward in reverse: the last micro-batch's graph is the freshest, and the server can
            # start on it while the hospital's backward of the one before waits for its gradients.
            for m, s in wavefront(len(runs), stages):
                self._backward_stage(runs[len(runs) - 1 - m], len(self.chain) - s)
        output = torch.cat([r.output(self.output_key).detach() for r in runs]) if len(runs) > 1 else runs[0].output(self.output_key).detach()
        losses = [r.loss for r in runs if r.loss is not None]
        if not losses:
            return output, None
        if len(runs) == 1:
            return output, losses[0].detach()
        return output, sum(r.loss.detach() * r.weight for r in runs)

    def _backward_stage(self, run: _Pass, k: int) -> None:
        """Differentiate part ``k`` of ``run`` (``k == len(chain)``: the loss) with the gradients its
        consumers returned, and send its inputs' gradients back to their producers."""
        owner = self.chain[min(k, len(self.chain) - 1)][1]
        pending = run.pending
        if k == len(self.chain) and run.loss is not None:
            # A micro-batch's loss counts with its share of the batch's rows.
            seed = None if run.weight is None else torch.full_like(run.loss, run.weight)
            pending[k][id(run.loss)] = [run.loss, seed]
        if not self.channel.hosts(owner.name):  # another process differentiates that part
            self._return_gradients(k, run.edges, pending)
            return
        tensors = [t for t, _ in pending[k].values()]
        grads = [g for _, g in pending[k].values()]
        if k < len(self.chain):
            reg = self.regularizers.get(self.chain[k][0].name)
            if reg is not None:
                extra = reg(run.inputs_of[k], run.outputs_of[k])
                tensors.append(extra)
                grads.append(None if run.weight is None else torch.full_like(extra, run.weight))
        if tensors:
            torch.autograd.backward(tensors, grads)
        self._return_gradients(k, run.edges, pending)

    def _return_gradients(self, consumer: int, edges: list[_Edge], pending) -> None:
        """Send the gradients of part ``consumer``'s inputs back to the parts that produced them."""
        by_producer: dict[int, list[_Edge]] = {}
        for e in edges:
            if e.consumer != consumer or e.producer < 0:
                continue
            # A crossed floating-point activation always gets a gradient message back: in another
            # process the producer cannot see whether the consumer's graph reached it.
            if e.received.grad is not None or (e.crossed and e.received.is_floating_point()):
                by_producer.setdefault(e.producer, []).append(e)
        consumer_here = self.channel.hosts(self._owner(consumer).name)
        for producer, group in by_producer.items():
            if consumer_here:
                grads = {e.name: (e.received.grad if e.received.grad is not None else torch.zeros_like(e.received)) for e in group}
            else:  # the producer's expectation: gradients shaped like what it sent
                grads = {e.name: e.sent.detach() for e in group}
            if group[0].crossed:
                link = f"{self._part_name(consumer)}->{self._part_name(producer)}"
                grads = self.channel.send(self._owner(consumer).name, self._owner(producer).name, "gradient", grads, link=link)
            if not self.channel.hosts(self._owner(producer).name):
                continue
            for e in group:
                slot = pending[producer].setdefault(id(e.sent), [e.sent, None])
                slot[1] = grads[e.name] if slot[1] is None else slot[1] + grads[e.name]


def microbatch_sizes(rows: int, microbatches: int) -> list[int]:
    """Rows per micro-batch: ``microbatches`` parts as even as possible, the larger first, each of at
    least two rows (BatchNorm cannot train on one), so a batch too small for them gets fewer."""
    m = max(1, min(microbatches, rows // 2))
    return [rows // m + (1 if i < rows % m else 0) for i in range(m)]


def wavefront(microbatches: int, stages: int) -> list[tuple[int, int]]:
    """The pipeline schedule as one sequence of ``(micro-batch, stage)``: at tick ``t`` stage ``s``
    works on micro-batch ``t - s``, the later stages first, so what a stage produced at the last tick
    is handed on (a message leaves) before the earlier stages compute the next micro-batch: the
    hospital sends micro-batch k and computes k+1 while the server computes k. Every process runs
    this same sequence (skipping the stages of parties it does not host), so the messages pair up in
    the same order in every process, and one process computes exactly what the parties compute
    apart. One micro-batch: stage after stage."""
    return [(t - s, s) for t in range(microbatches + stages - 1) for s in reversed(range(stages))
            if 0 <= t - s < microbatches]


def two_party(parts: list[Part], loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
              channel: Channel | None = None, make_optimizer=None, client_name: str = "client0") -> SplitModel:
    """One hospital and one server around the parts of a cut (roles from the model's plan).

    Args:
        parts: from :func:`medsplit.split.cut.cut` (or any parts with ``client``/``server`` roles).
        loss_fn: the task loss, computed by the owner of the last part.
        channel: a fresh :class:`Channel` when omitted.
        make_optimizer: optimiser factory for each party (``None``: no optimiser).
        client_name: the hospital's party name, as it appears in byte counts and transfers.
    """
    client = Party(client_name, {p.name: p for p in parts if p.role == "client"}, make_optimizer)
    server = Party("server", {p.name: p for p in parts if p.role == "server"}, make_optimizer)
    return SplitModel.from_roles(parts, {"client": client, "server": server}, channel or Channel(), loss_fn)
