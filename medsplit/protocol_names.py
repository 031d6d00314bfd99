"""The ``split.protocol`` choices and the two facts the config needs of each (does it cut the
model; can its parties run as separate processes), without importing torch or the protocols.

The protocol classes in :mod:`medsplit.train.protocols` are the truth; this module reads what
:mod:`medsplit.config` needs from their source: the built-in ones from the table below
(``tests/train/test_protocols.py`` checks it against the classes), a protocol added as a new module
of ``medsplit/train/protocols/`` from its file (the class attributes it writes literally, the
rest from the built-in protocol it subclasses).
"""

from __future__ import annotations

import ast
import pkgutil
from dataclasses import dataclass
from pathlib import Path

PROTOCOLS_DIR = Path(__file__).resolve().parent / "train" / "protocols"


@dataclass(frozen=True)
class ProtocolFacts:
    split: bool = True  # the model is cut between hospital and server
    runs_as_processes: bool = False  # every party can run in its own process (gloo, FLARE)
    pooled: bool = False  # all hospitals' training rows pooled into one party
    baseline: bool = False  # an unsplit reference the split protocols are compared with


#: The built-in protocols in listing order (split ones first), with their facts; the base class's defaults under "".
BUILTIN = {
    "sequential": ProtocolFacts(split=True, runs_as_processes=True),
    "splitfed": ProtocolFacts(split=True, runs_as_processes=True),
    "splitfed-v1": ProtocolFacts(split=True, runs_as_processes=False),
    "centralised": ProtocolFacts(split=False, runs_as_processes=False, pooled=True, baseline=True),
    "fedavg": ProtocolFacts(split=False, runs_as_processes=False, baseline=True),
}
#: Built-in protocol class -> its name (what a protocol added as a module may subclass).
BUILTIN_CLASSES = {"SequentialRelay": "sequential", "SplitFed": "splitfed", "SplitFedV1": "splitfed-v1",
                   "Centralised": "centralised", "FedAvg": "fedavg"}


def protocol_names() -> tuple[str, ...]:
    """The ``split.protocol`` choices: one per module of ``medsplit/train/protocols/`` (a
    protocol's module is named after it, ``-`` written ``_``; ``register`` enforces this), so a
    new protocol is one new file; built-in ones first, then the others by name."""
    found = {m.name.replace("_", "-") for m in pkgutil.iter_modules([str(PROTOCOLS_DIR)]) if m.name != "base"}
    return tuple(n for n in BUILTIN if n in found) + tuple(sorted(found - set(BUILTIN)))


def protocol_facts(name: str) -> ProtocolFacts:
    """What the config needs to know of protocol ``name``."""
    if name in BUILTIN:
        return BUILTIN[name]
    path = PROTOCOLS_DIR / f"{name.replace('-', '_')}.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(_names(d) == "register" for d in node.decorator_list):
            inherited = next((BUILTIN[BUILTIN_CLASSES[_names(b)]] for b in node.bases if _names(b) in BUILTIN_CLASSES),
                             ProtocolFacts())
            written = {t.id: s.value.value for s in node.body if isinstance(s, ast.Assign)
                       for t in s.targets if isinstance(t, ast.Name) and isinstance(s.value, ast.Constant)}
            return ProtocolFacts(**{key: bool(written.get(key, getattr(inherited, key)))
                                    for key in ("split", "runs_as_processes", "pooled", "baseline")})
    raise ValueError(f"{path} has no class decorated with @register (split.protocol={name!r})")


def known_protocol_facts(name: str) -> ProtocolFacts | None:
    """:func:`protocol_facts` of ``name``, or ``None`` when no protocol of that name is installed
    (a run record from elsewhere)."""
    return protocol_facts(name) if name in protocol_names() else None


def _names(node: ast.expr) -> str:
    """``register`` / ``SequentialRelay`` for ``register``, ``base.register``, ``SequentialRelay``."""
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")
