"""The crossing policy: which tensors may cross which link, as which kind.

A :class:`CrossingPlan` starts open (anything may cross). Once a link is declared, the plan is
closed: a send on an undeclared link, of another kind, or of a tensor not declared for the link
stops with a :class:`CrossingError` before anything leaves the sender. A forbidden link refuses
everything, declared or not (labels of a task whose targets stay at the hospital). The
:class:`~medsplit.split.channel.Channel` consults its plan on every send; the split model and the
protocols declare what their schedules move.
"""

from __future__ import annotations

from typing import Iterable

from medsplit.split.transfer import check_kind


class CrossingError(ValueError):
    """A tensor was about to cross a link its plan does not declare for it (never sent)."""


class CrossingPlan:
    """The links tensors may cross, the kind each carries and the tensor names it allows."""

    def __init__(self) -> None:
        # link -> (kind, tensor names or None for any); None while nothing is declared (open plan)
        self._declared: dict[str, tuple[str, frozenset[str] | None]] | None = None
        self._forbidden: dict[str, str] = {}  # link -> why nothing may cross it

    def declare(self, link: str, kind: str, names: Iterable[str] | None) -> None:
        """Tensors ``names`` (``None``: any) may cross ``link`` as ``kind``. Declaring a link again
        adds names; a link carries one kind only."""
        check_kind(kind)
        if self._declared is None:
            self._declared = {}
        old = self._declared.get(link)
        if old is not None and old[0] != kind:
            raise CrossingError(f"link {link!r} declared for both {old[0]} and {kind} transfers")
        if names is None or (old is not None and old[1] is None):
            self._declared[link] = (kind, None)
        else:
            self._declared[link] = (kind, frozenset(names) | (old[1] if old else frozenset()))

    def forbid(self, link: str, why: str) -> None:
        """Nothing may cross ``link``; ``why`` is given in the error of any send that tries."""
        self._forbidden[link] = why

    def check(self, sender: str, receiver: str, kind: str, names: Iterable[str], link: str) -> None:
        """Raise :class:`CrossingError` unless tensors ``names`` may go from ``sender`` to
        ``receiver`` over ``link`` as ``kind``."""
        if link in self._forbidden:
            raise CrossingError(f"{sender} -> {receiver}: nothing may cross link {link!r} ({self._forbidden[link]}); "
                                f"tried to send {kind} {sorted(names)}")
        if self._declared is None:
            return
        declared = self._declared.get(link)
        if declared is None:
            raise CrossingError(f"{sender} -> {receiver}: link {link!r} is not in the plan of what may cross "
                                f"(declared links: {sorted(self._declared)}); tried to send {kind} {sorted(names)}")
        if declared[0] != kind:
            raise CrossingError(f"{sender} -> {receiver}: link {link!r} carries {declared[0]} transfers, not {kind}")
        if declared[1] is not None:
            extra = sorted(set(names) - declared[1])
            if extra:
                raise CrossingError(f"{sender} -> {receiver}: tensor(s) {extra} may not cross link {link!r} as {kind}; "
                                    f"the plan allows {sorted(declared[1])}")
