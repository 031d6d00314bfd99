"""The Channel: the only way tensors move between parties.

Every tensor that crosses a cut goes through :meth:`Channel.send`, in one process
too. That gives three guarantees the benchmark relies on:

* the receiver gets a fresh leaf tensor, so an in-process run cannot cheat through
  a shared autograd graph;
* every byte is counted, per epoch, per link and per kind, as the exact size of the
  wire-format message (:mod:`medsplit.split.wire`), in its :class:`~medsplit.split.byte_ledger.ByteLedger`;
* observers (attacks, detectors, tests) see exactly what the receiving party sees.

Before anything is sent, the channel's :class:`~medsplit.split.crossings.CrossingPlan` says whether
it may cross that link at all. The bytes, observers and errors name where the run is (epoch, step,
phase); the runner and the split model set that through :meth:`Channel.at`,
:meth:`Channel.next_step` and :meth:`Channel.evaluating`, never by assigning the fields.

With a :class:`~medsplit.transport.Transport` and the set of parties this process hosts
(``local``), the same ``send`` call is made by every process of a multi-process run (they all
walk the same schedule): where the sender is local and the receiver remote it encodes and ships
the message; where the receiver is local and the sender remote it receives, validates (names,
shapes, dtypes and size against what the receiver expects, finite values) and decodes; where
both are local it behaves as in one process; elsewhere it only returns placeholders of the right
shapes. Every process counts the messages it sends or receives.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable

import torch

from medsplit.split import wire
from medsplit.split.byte_ledger import ByteLedger
from medsplit.split.crossings import CrossingPlan
from medsplit.split.transfer import KINDS, Transfer, check_kind
from medsplit.transport.base import TransportError

if TYPE_CHECKING:  # only for the annotation: any object with encode/decode will do
    from medsplit.split.codecs import Codec
    from medsplit.transport.base import Transport

# What a receiver accepts on top of the uncompressed size of what it expects: codecs add small
# side tensors (scales, indices), and the JSON header grows with names.
_SLACK_BYTES = 1 << 20
# Where a receiver cannot know the size ahead (weights it does not hold): the hard upper bound.
DEFAULT_MAX_MESSAGE_BYTES = 1 << 31

# An ``expect`` callable: checks received tensors, returns an error message or None.
Expectation = Callable[[dict[str, torch.Tensor]], "str | None"]


class NonFiniteError(FloatingPointError):
    """A party sent NaN or Inf; raised with the sender, tensor, epoch and step named."""


class MessageError(ValueError):
    """A received message is not what the receiver expects (names, shapes, dtypes, size)."""


@dataclass
class Channel:
    """Moves named tensors between parties and counts the bytes.

    Args:
        serialise: actually encode and decode every message (what a cross-process
            transport does). Off by default: the in-process channel detaches instead
            and counts ``wire.encoded_size`` bytes, which is provably the same number.
        check_finite: stop the run with a :class:`NonFiniteError` naming the sender
            when a message carries NaN or Inf. Checked on what the receiver gets (after the
            codec: fp16 turns a finite 1e6 into inf).
        codecs: optional lossy codec per transfer kind (``{"activation": Int8Codec()}``,
            see :mod:`medsplit.split.codecs`); the compressed payload is what is counted
            (and serialised), the receiver and observers get the decoded tensors.
        transport: moves encoded messages to parties in other processes (``None``: every
            party is in this process).
        local: names of the parties this process hosts (``None``: all of them).
        device: where received tensors are placed in a multi-process run.
        max_message_bytes: the largest message a receiver accepts when it cannot compute
            the size of what it expects.
        compute_dtype: the lower-precision float dtype the parties compute in under autocast
            (``torch.bfloat16``), or ``None``. A process that does not compute a part infers its
            outputs on the meta device, where autocast does not apply, so it expects float32;
            a float32 slot then also accepts this dtype (smaller, so the size limit still holds).
    """

    serialise: bool = False
    check_finite: bool = True
    # Where the run is (what the ledger, observers and errors name); read them freely, set them
    # through at(), next_step() and evaluating() so every change of position is one named call.
    epoch: int = 0
    step: int = 0
    phase: str = "train"  # "train" or "eval"
    observers: list[Callable[[Transfer], None]] = field(default_factory=list)
    codecs: dict[str, "Codec"] = field(default_factory=dict)
    transport: "Transport | None" = None
    local: frozenset[str] | None = None
    device: str = "cpu"
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    compute_dtype: torch.dtype | None = None
    crossings: CrossingPlan = field(default_factory=CrossingPlan)
    ledger: ByteLedger = field(default_factory=ByteLedger)
    _overlapping: bool = False  # sends return before delivery (see overlapping())

    def __post_init__(self) -> None:
        # A misspelt kind ("activations") would otherwise compress nothing, silently.
        unknown = sorted(set(self.codecs) - set(KINDS))
        if unknown:
            raise ValueError(f"codecs given for unknown transfer kind(s) {unknown}; valid kinds are {KINDS}")
        if self.local is not None:
            self.local = frozenset(self.local)
            if self.transport is None:
                raise ValueError("a Channel that hosts only some parties (local=...) needs a transport to reach the others")

    # ---- who is where ----------------------------------------------------------------
    @property
    def distributed(self) -> bool:
        """True when some parties live in other processes."""
        return self.local is not None

    def hosts(self, party: str) -> bool:
        """Whether ``party`` runs in this process."""
        return self.local is None or party in self.local

    # ---- where the run is --------------------------------------------------------------
    def at(self, *, epoch: int | None = None, step: int | None = None) -> None:
        """The run has reached ``epoch`` and/or ``step``: later sends are counted in that epoch, and
        observers and errors name both."""
        if epoch is not None:
            self.epoch = epoch
        if step is not None:
            self.step = step

    def next_step(self) -> None:
        """One training step is over, here or (in a multi-process run) in another process: every
        process counts every step of the schedule, so all name the same step."""
        self.step += 1

    @contextlib.contextmanager
    def evaluating(self):
        """Within this block sends belong to phase ``"eval"`` (counted apart from training); the
        phase before is restored on leaving, also when the block raises."""
        before, self.phase = self.phase, "eval"
        try:
            yield
        finally:
            self.phase = before

    # ---- what may cross (see medsplit.split.crossings) ----------------------------------
    def declare(self, link: str, kind: str, names: Iterable[str] | None) -> None:
        """Declare that tensors ``names`` (``None``: any) may cross ``link`` as ``kind``. Once
        anything is declared, a send on an undeclared link, or of an undeclared tensor, stops
        with a :class:`~medsplit.split.crossings.CrossingError` before anything is sent."""
        self.crossings.declare(link, kind, names)

    def forbid(self, link: str, why: str) -> None:
        """Nothing may cross ``link`` (e.g. labels for a task whose targets stay at the hospital)."""
        self.crossings.forbid(link, why)

    # ---- moving tensors ----------------------------------------------------------------
    @contextlib.contextmanager
    def overlapping(self):
        """Within this block a send to another process returns once it is posted, not delivered
        (:meth:`Transport.start_send`), so the sender computes on while the link carries it (a
        pipelined step's micro-batches); on leaving, every posted send is waited for, so an error
        still surfaces in the step that caused it. Receives and the numbers are unchanged."""
        if self._overlapping:  # nested: the outer block waits
            yield
            return
        self._overlapping = True
        try:
            yield
        finally:
            self._overlapping = False
        if self.transport is not None:
            try:
                self.transport.wait_sends()
            except TransportError as e:
                raise TransportError(f"{self.transport.name}: a send of epoch {self.epoch}, step {self.step} "
                                     f"(phase {self.phase}) failed: {e}") from e

    def tap(self, observer: Callable[[Transfer], None]) -> Callable[[], None]:
        """Register ``observer``; returns a function that removes it."""
        self.observers.append(observer)
        return lambda: self.observers.remove(observer)

    def send(self, sender: str, receiver: str, kind: str, tensors: dict[str, torch.Tensor], link: str = "",
             expect: Expectation | None = None, use_codec: bool = True) -> dict[str, torch.Tensor]:
        """Move ``tensors`` from ``sender`` to ``receiver``; returns what the receiver gets.

        Args:
            sender, receiver: party names.
            kind: one of :data:`KINDS` (what the bytes are counted as).
            tensors: what is sent. Where the sender is in another process, the receiver's
                expectation instead: tensors (meta ones will do) with the names, shapes and
                dtypes it must receive.
            link: which cut (or "weights", "labels") the message crosses.
            expect: where the receiver cannot state shapes in advance (optimiser state), a
                check of the received tensors that returns an error message or ``None``.
            use_codec: apply the kind's codec (off for the evaluation output, which is the
                result, not a cut activation).
        """
        check_kind(kind)
        link = link or f"{sender}->{receiver}"
        self.crossings.check(sender, receiver, kind, tensors.keys(), link)
        here_sender, here_receiver = self.hosts(sender), self.hosts(receiver)
        codec = self.codecs.get(kind) if use_codec else None
        if here_sender and not here_receiver:
            self._ship(sender, receiver, kind, tensors, link, codec)
            return _placeholders(tensors)
        if here_receiver and not here_sender:
            received, nbytes = self._take(sender, receiver, kind, tensors, link, codec, expect)
        elif here_receiver:
            received, nbytes = self._pass(tensors, codec)
        else:  # neither end is here: another process pair moves it
            return _placeholders(tensors)
        self._check_finite(sender, receiver, kind, received, link)
        if kind == "activation":
            # The receiver differentiates with respect to what it received.
            received = {n: (t.requires_grad_(True) if t.is_floating_point() else t) for n, t in received.items()}
        self.ledger.add(self.phase, self.epoch, sender, receiver, kind, link, nbytes)
        if self.observers:
            event = Transfer(sender, receiver, kind, link, received, nbytes, self.epoch, self.step, self.phase)
            for observer in list(self.observers):
                observer(event)
        return received

    def _where(self, sender: str, receiver: str, link: str) -> str:
        return (f"from {sender} to {receiver} on link {link!r} (epoch {self.epoch}, step {self.step}, "
                f"phase {self.phase})")

    def _pass(self, tensors: dict[str, torch.Tensor], codec) -> tuple[dict[str, torch.Tensor], int]:
        """Both parties in this process: what they would exchange, without a transport."""
        if codec is not None:
            with torch.no_grad():  # the sender keeps its graph on the original tensors
                outgoing = codec.encode(tensors)
        else:
            outgoing = tensors
        if self.serialise:
            payload = wire.encode(outgoing)
            nbytes = len(payload)
            device = next(iter(tensors.values())).device if tensors else "cpu"
            received, _ = wire.decode(payload, device=device)
        else:
            nbytes = wire.encoded_size(outgoing)
            received = {name: t.detach() for name, t in outgoing.items()}
        if codec is not None:  # the receiver sees the lossy reconstruction, never the original
            received = codec.decode(received)
        return received, nbytes

    def _ship(self, sender: str, receiver: str, kind: str, tensors: dict[str, torch.Tensor], link: str, codec) -> None:
        if codec is not None:
            with torch.no_grad():
                tensors = codec.encode(tensors)
        payload = wire.encode(tensors)
        try:
            if self._overlapping:
                self.transport.start_send(receiver, payload)
            else:
                self.transport.send(receiver, payload)
        except TransportError as e:  # name the link and step too, not only the peer
            raise type(e)(f"{sender}: sending {kind} {self._where(sender, receiver, link)}: {e}") from e
        self.ledger.add(self.phase, self.epoch, sender, receiver, kind, link, len(payload))

    def _take(self, sender: str, receiver: str, kind: str, expected: dict[str, torch.Tensor], link: str, codec,
              expect: Expectation | None) -> tuple[dict[str, torch.Tensor], int]:
        """Receive from another process and check the message against what is expected."""
        where = self._where(sender, receiver, link)
        limit = self.max_message_bytes if expect is not None else wire.encoded_size(expected) + _SLACK_BYTES
        try:
            payload = self.transport.recv(sender, limit)
        except TransportError as e:  # name the link and step too, not only the peer (keeping the error's
            raise type(e)(f"{receiver}: receiving {kind} {where}: {e}") from e  # class: a FrameError stays one)
        try:
            received, _ = wire.decode(payload, device=self.device)
        except ValueError as e:  # WireFormatError and the decoder's other value errors
            raise MessageError(f"malformed {kind} message {where}: {e}") from e
        except Exception as e:  # a hostile header may raise anything; it is still the sender's fault
            raise MessageError(f"malformed {kind} message {where}: {type(e).__name__}: {e}") from e
        if codec is not None:
            try:
                received = codec.decode(received)
            except Exception as e:  # noqa: BLE001
                raise MessageError(f"{kind} message {where} does not decode with the {type(codec).__name__}: {e}") from e
        problem = expect(received) if expect is not None else _mismatch(received, expected, self.compute_dtype)
        if problem:
            raise MessageError(f"unexpected {kind} message {where}: {problem}")
        return received, len(payload)

    def _check_finite(self, sender: str, receiver: str, kind: str, received: dict[str, torch.Tensor], link: str) -> None:
        if not self.check_finite:
            return
        for name, t in received.items():
            if t.is_floating_point() and t.device.type != "meta" and not bool(torch.isfinite(t).all()):
                raise NonFiniteError(
                    f"{sender} sent a non-finite {kind} {name!r} to {receiver} "
                    f"(epoch {self.epoch}, step {self.step}, phase {self.phase}, link {link!r})"
                )

    # ---- counts (see medsplit.split.byte_ledger) ----------------------------------------
    def byte_rows(self, phase: str | None = "train") -> list[dict]:
        """Counted bytes as JSON-able rows, one per (epoch, sender, receiver, kind, link)."""
        return self.ledger.rows(phase)

    def total_bytes(self, phase: str | None = "train") -> int:
        return self.ledger.total(phase)

    def load_byte_rows(self, rows: list[dict]) -> None:
        """Restore counters saved in a checkpoint (resume keeps the totals honest)."""
        self.ledger.load(rows)


def _placeholders(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What a process that is not the receiver carries on with: shapes and dtypes, no data."""
    return {n: torch.empty(t.shape, dtype=t.dtype, device="meta") for n, t in tensors.items()}


def _mismatch(received: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
              compute_dtype: torch.dtype | None = None) -> str | None:
    """Why ``received`` is not what ``expected`` describes (names, shapes, dtypes), or None. A float32
    slot also takes ``compute_dtype`` (see :class:`Channel`)."""
    if sorted(received) != sorted(expected):
        return f"tensor names {sorted(received)} (expected {sorted(expected)})"
    for name, want in expected.items():
        got = received[name]
        if tuple(got.shape) != tuple(want.shape):
            return f"tensor {name!r} has shape {tuple(got.shape)} (expected {tuple(want.shape)})"
        if got.dtype != want.dtype and not (want.dtype == torch.float32 and got.dtype == compute_dtype):
            return f"tensor {name!r} has dtype {got.dtype} (expected {want.dtype})"
    return None
