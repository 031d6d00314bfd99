"""Who trains what: the protocols, one module each, and their registry.

All run on the same data, partitions, seeds, batches and metrics; they differ only in which
party owns which part and how weights are shared. A protocol is one module in this package:
a :class:`Protocol` subclass decorated with :func:`register` (every module here is imported
below, so adding the file is enough).
"""

from __future__ import annotations

import importlib
import pkgutil

from medsplit.config import ConfigError
from medsplit.train.protocols.base import (
    HANDOVERS,
    REGISTRY,
    Protocol,
    StepFn,
    optimizer_state_check,
    register,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

from medsplit.train.protocols.centralised import Centralised
from medsplit.train.protocols.fedavg import FedAvg
from medsplit.train.protocols.sequential import SequentialRelay
from medsplit.train.protocols.splitfed import SplitFed
from medsplit.train.protocols.splitfed_v1 import SplitFedV1

#: name -> protocol class, in listing order (split protocols first, then the baselines).
PROTOCOLS: dict[str, type[Protocol]] = dict(sorted(REGISTRY.items(), key=lambda item: (item[1].order, item[0])))
#: the ``split.protocol`` choices, in the order CLIs and help list them.
PROTOCOL_NAMES: tuple[str, ...] = tuple(PROTOCOLS)


def protocol_class(name: str) -> type[Protocol]:
    """The protocol called ``name``; an unknown name is an error listing the choices."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ConfigError(f"unknown protocol {name!r} (config key 'split.protocol'); valid choices are {list(PROTOCOL_NAMES)}") from None


__all__ = [
    "HANDOVERS",
    "PROTOCOLS",
    "PROTOCOL_NAMES",
    "Centralised",
    "FedAvg",
    "Protocol",
    "SequentialRelay",
    "SplitFed",
    "SplitFedV1",
    "StepFn",
    "optimizer_state_check",
    "protocol_class",
    "register",
]
