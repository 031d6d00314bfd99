"""One site's share of a split model: run only the local parties' parts, exchange the rest.

Every site builds the same protocol (same parts, same initial weights, same schedule) and walks
the same chain in the same order; a part owned by another site is not computed, and a tensor that
crosses between a local and a remote party is sent or received on the transport as medsplit's
wire bytes (:mod:`medsplit.split.wire`, never pickle). Because every site follows the same
schedule, the n-th message one site sends another is the n-th it expects: no message ids needed.

Stand-in for issue 12's engine changes (owned by the transport work): when those land, the FLARE
transport plugs into them and this module goes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch

from medsplit.split import wire
from medsplit.split.channel import Channel, NonFiniteError
from medsplit.split.engine import SplitModel, _Edge

#: Largest message a site accepts (a ResNet-50 server part's weights are ~100 MB).
MAX_MESSAGE_BYTES = 1 << 31


class MessageError(ValueError):
    """A received message that does not match what the schedule expects (names the peer, link, step)."""


@dataclass
class PartyChannel(Channel):
    """A :class:`Channel` for one site: counts and sends what its parties send, receives what they get.

    Args:
        local: the parties this site runs (``{"client0"}``, or ``{"server", "aggregator"}``).
        site_of: party -> site name on the transport (parties not listed are their own site).
        transport: moves the bytes (``send(site, payload)``, ``recv(site, max_bytes)``).
    """

    local: frozenset = frozenset()
    site_of: dict = field(default_factory=dict)
    transport: object = None
    control_bytes: int = 0  # schedule, selection and prediction messages this site SENT (not split traffic)
    control_bytes_received: int = 0

    def site(self, party: str) -> str:
        return self.site_of.get(party, party)

    def is_local(self, party: str) -> bool:
        return party in self.local

    # ---- split traffic -------------------------------------------------------------------
    def send(self, sender, receiver, kind, tensors, link=""):
        local_s, local_r = self.is_local(sender), self.is_local(receiver)
        if local_s and local_r:
            return super().send(sender, receiver, kind, tensors, link)
        if not local_s and not local_r:  # someone else's message: nothing crosses here
            return {n: t.detach() for n, t in tensors.items()}
        if local_s:
            return self._send_remote(sender, receiver, kind, tensors, link)
        # The sender's tensors on this site are a ghost's: their names/shapes/dtypes are what the
        # message must carry (an empty dict: the ghost never stepped, e.g. optimiser state).
        expected = {n: (tuple(t.shape), t.dtype) for n, t in tensors.items()}
        return self.receive(sender, receiver, kind, link, expected or None)

    def _send_remote(self, sender, receiver, kind, tensors, link):
        if self.check_finite:
            for name, t in tensors.items():
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    raise NonFiniteError(f"{sender} sent a non-finite {kind} {name!r} to {receiver} "
                                         f"(epoch {self.epoch}, step {self.step}, phase {self.phase})")
        codec = self.codecs.get(kind)
        with torch.no_grad():
            outgoing = codec.encode(tensors) if codec is not None else tensors
        payload = wire.encode(outgoing)
        self.transport.send(self.site(receiver), payload)
        self._count(sender, receiver, kind, link, len(payload))
        return {n: t.detach() for n, t in tensors.items()}

    def receive(self, sender: str, receiver: str, kind: str, link: str,
                expected: dict[str, tuple] | list[str] | None) -> dict[str, torch.Tensor]:
        """Receive the next message from ``sender``'s site and check it against ``expected``
        (names, or names -> (shape, dtype)); a mismatch names the peer, link and step."""
        payload = self.transport.recv(self.site(sender), MAX_MESSAGE_BYTES)
        where = f"{kind} from {sender} to {receiver} on link {link!r} (epoch {self.epoch}, step {self.step}, phase {self.phase})"
        try:
            received, _ = wire.decode(payload)
        except (wire.WireFormatError, KeyError, TypeError, ValueError) as e:
            raise MessageError(f"malformed {where}: {e}") from e
        codec = self.codecs.get(kind)
        if codec is not None:
            received = codec.decode(received)
        if expected is not None:
            names = list(expected)
            if sorted(received) != sorted(names):
                raise MessageError(f"{where} carries {sorted(received)}, expected {sorted(names)}")
            if isinstance(expected, dict):
                for n, (shape, dtype) in expected.items():
                    t = received[n]
                    if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
                        raise MessageError(f"{where}: tensor {n!r} is {tuple(t.shape)} {t.dtype}, expected {tuple(shape)} {dtype}")
        if self.check_finite:
            for n, t in received.items():
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    raise NonFiniteError(f"{sender} sent a non-finite {kind} {n!r} to {receiver} "
                                         f"(epoch {self.epoch}, step {self.step}, phase {self.phase})")
        if kind == "activation":
            received = {n: (t.requires_grad_(True) if t.is_floating_point() else t) for n, t in received.items()}
        self._count(sender, receiver, kind, link, len(payload))
        if self.observers:
            from medsplit.split.channel import Transfer

            event = Transfer(sender, receiver, kind, link, received, len(payload), self.epoch, self.step, self.phase)
            for observer in list(self.observers):
                observer(event)
        return received

    def _count(self, sender, receiver, kind, link, nbytes) -> None:
        link = link or f"{sender}->{receiver}"
        self._bytes[(self.phase, self.epoch, sender, receiver, kind, link)] += nbytes

    def sent_rows(self, phase: str | None = None) -> list[dict]:
        """Byte rows of messages this site's parties SENT (each message is counted once when the
        sites' rows are merged; the receiver counts the same bytes too)."""
        return [r for r in self.byte_rows(phase) if self.is_local(r["sender"])]

    # ---- control messages (not split traffic: counted apart) ------------------------------
    def send_json(self, receiver: str, obj: dict) -> None:
        payload = json.dumps(obj, separators=(",", ":")).encode()
        self.transport.send(self.site(receiver), payload)
        self.control_bytes += len(payload)

    def recv_json(self, sender: str) -> dict:
        payload = self.transport.recv(self.site(sender), 1 << 26)
        try:
            obj = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise MessageError(f"control message from {sender} is not JSON: {e}") from e
        if not isinstance(obj, dict):
            raise MessageError(f"control message from {sender} is not a JSON object")
        self.control_bytes_received += len(payload)
        return obj

    def send_tensors(self, receiver: str, tensors: dict[str, torch.Tensor]) -> None:
        payload = wire.encode(tensors)
        self.transport.send(self.site(receiver), payload)
        self.control_bytes += len(payload)

    def recv_tensors(self, sender: str, names: list[str]) -> dict[str, torch.Tensor]:
        payload = self.transport.recv(self.site(sender), MAX_MESSAGE_BYTES)
        try:
            out, _ = wire.decode(payload)
        except wire.WireFormatError as e:
            raise MessageError(f"malformed message from {sender}: {e}") from e
        if sorted(out) != sorted(names):
            raise MessageError(f"message from {sender} carries {sorted(out)}, expected {sorted(names)}")
        self.control_bytes_received += len(payload)
        return out


class PartySplitModel(SplitModel):
    """A :class:`SplitModel` that runs only the parts of the channel's local parties.

    Built from an ordinary one (:meth:`of`); every site calls the same methods in the same order.
    ``x``/``y`` are ``None`` on sites that do not hold the batch.
    """

    channel: PartyChannel

    @classmethod
    def of(cls, model: SplitModel) -> "PartySplitModel":
        new = cls(model.chain, model.channel, model.data_owner, model.loss_fn, model.target_key)
        new.send_transforms, new.regularizers = model.send_transforms, model.regularizers
        return new

    def _local(self, party) -> bool:
        return self.channel.is_local(party.name)

    def involves_site(self) -> bool:
        """Whether this site runs any part (or holds the data) of this model."""
        return any(self._local(p) for p in self.parties) or self._local(self.data_owner)

    @property
    def loss_owner(self):
        return self.chain[-1][1]

    # ---- forward ------------------------------------------------------------------------
    def _run_party(self, x, y, with_loss: bool):
        holders: dict = {"x": (-1, x)}
        if with_loss:
            holders[self.target_key] = (-1, y)
        edges: list[_Edge] = []
        inputs_of, outputs_of = [], []
        for k, (part, owner) in enumerate(self.chain):
            inputs = self._deliver(part.reads, k, owner, holders, edges)
            outputs = part(inputs) if self._local(owner) else {n: None for n in part.sends}
            inputs_of.append(inputs)
            outputs_of.append(outputs)
            for name, t in outputs.items():
                holders[name] = (k, t)
        loss = None
        if with_loss:
            loss_inputs = self._deliver((self.output_key, self.target_key), len(self.chain), self.loss_owner, holders, edges)
            if self._local(self.loss_owner):
                loss = self.loss_fn(loss_inputs[self.output_key], loss_inputs[self.target_key])
        return holders[self.output_key][1], loss, edges, inputs_of, outputs_of

    def _deliver(self, names, consumer, receiver, holders, edges):
        by_producer: dict[int, list[str]] = {}
        for name in names:
            by_producer.setdefault(holders[name][0], []).append(name)
        delivered = {}
        for producer, group in by_producer.items():
            sender = self._owner(producer)
            crossed = sender is not receiver
            local_s, local_r = self._local(sender), self._local(receiver)
            sent = {n: holders[n][1] for n in group} if local_s else {n: None for n in group}
            received = {n: None for n in group}
            if not crossed:
                if local_r:
                    received = {n: (t.detach().requires_grad_(t.requires_grad) if t.is_floating_point() else t)
                                for n, t in sent.items()}
            else:
                kind = "label" if group == [self.target_key] else "activation"
                link = "labels" if kind == "label" else f"{self._part_name(producer)}->{self._part_name(consumer)}"
                if local_s:
                    transform = self.send_transforms.get(self._part_name(producer))
                    if transform is not None:
                        sent = transform(sent)
                    out = self.channel.send(sender.name, receiver.name, kind, sent, link=link)
                    if local_r:
                        received = out
                elif local_r:
                    received = self.channel.receive(sender.name, receiver.name, kind, link, list(group))
            for n in group:
                edges.append(_Edge(n, producer, consumer, sent[n], received[n], crossed))
                delivered[n] = received[n]
        return delivered

    @torch.no_grad()
    def forward(self, x):
        phase, self.channel.phase = self.channel.phase, "eval"
        try:
            return self._run_party(x, None, False)[0]
        finally:
            self.channel.phase = phase

    __call__ = forward

    @torch.no_grad()
    def predict(self, x):
        """Inference whose output ends at the data owner: the output's owner sends it there
        (a control message, not counted as split traffic). ``None`` on other sites."""
        out = self.forward(x)
        owner, data = self.loss_owner, self.data_owner
        if owner is data or self._local(owner) == self._local(data):
            return out if self._local(data) else None
        if self._local(owner):
            self.channel.send_tensors(data.name, {"output": out})
            return None
        return self.channel.recv_tensors(owner.name, ["output"])["output"]

    # ---- training -----------------------------------------------------------------------
    def train_step(self, x, y, step: bool = True):
        local = [p for p in self.parties if self._local(p)]
        for party in local:
            party.zero_grad()
        output, loss = self.forward_backward(x, y)
        if step:
            for party in local:
                party.step()
        self.channel.step += 1
        return (float(loss) if loss is not None else None), output

    def forward_backward(self, x, y):
        output, loss, edges, inputs_of, outputs_of = self._run_party(x, y, True)
        pending: list[dict[int, list]] = [dict() for _ in range(len(self.chain) + 1)]
        if loss is not None:
            pending[len(self.chain)][id(loss)] = [loss, None]
        for k in range(len(self.chain), -1, -1):
            owner = self.loss_owner if k == len(self.chain) else self.chain[k][1]
            if self._local(owner):
                tensors = [t for t, _ in pending[k].values()]
                grads = [g for _, g in pending[k].values()]
                if k < len(self.chain):
                    reg = self.regularizers.get(self.chain[k][0].name)
                    if reg is not None:
                        tensors.append(reg(inputs_of[k], outputs_of[k]))
                        grads.append(None)
                if tensors:
                    torch.autograd.backward(tensors, grads)
            self._return_gradients(k, edges, pending)
        detach = lambda t: t.detach() if t is not None else None  # noqa: E731
        return detach(output), detach(loss)

    def _return_gradients(self, consumer, edges, pending) -> None:
        by_producer: dict[int, list[_Edge]] = {}
        for e in edges:
            if e.consumer == consumer and e.producer >= 0:
                by_producer.setdefault(e.producer, []).append(e)
        consumer_owner = self.loss_owner if consumer == len(self.chain) else self.chain[consumer][1]
        for producer, group in by_producer.items():
            producer_owner = self._owner(producer)
            local_c, local_p = self._local(consumer_owner), self._local(producer_owner)
            if not group[0].crossed:
                if local_c:
                    group = [e for e in group if e.received.grad is not None]
                    grads = {e.name: e.received.grad for e in group}
                else:
                    continue
            else:
                link = f"{self._part_name(consumer)}->{self._part_name(producer)}"
                if local_c:
                    # The producer's site waits for one gradient per crossed activation, so one is
                    # always sent (zeros for an input the consumer did not differentiate through).
                    grads = {e.name: (e.received.grad if e.received.grad is not None else torch.zeros_like(e.received))
                             for e in group}
                    grads = self.channel.send(consumer_owner.name, producer_owner.name, "gradient", grads, link=link)
                elif local_p:
                    grads = self.channel.receive(consumer_owner.name, producer_owner.name, "gradient", link,
                                                 {e.name: (tuple(e.sent.shape), e.sent.dtype) for e in group})
                else:
                    continue
                if not local_p:
                    continue
            for e in group:
                slot = pending[producer].setdefault(id(e.sent), [e.sent, None])
                slot[1] = grads[e.name] if slot[1] is None else slot[1] + grads[e.name]
