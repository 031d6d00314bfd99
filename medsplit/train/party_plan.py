"""Who the parties of a multi-process run are and what they must agree on: party names by rank,
the protocol version, the config hash (every setting but the per-party ones) and the error that
names a party at fault."""

from __future__ import annotations

import hashlib
import json

from medsplit.config import Config

PROTOCOL_VERSION = 1
SERVER = "server"
AGGREGATOR = "aggregator"  # SplitFed's averaging runs in the server's process
# Keys a hospital may set differently from the server: where its own data and outputs live.
PER_PARTY_KEYS = {("data", "source"), ("data", "root"), ("data", "cache_dir"), ("split", "address"), ("split", "secret_file"),
                  ("train", "device"), ("train", "threads"), ("output", "runs_dir"), ("output", "reports_dir"),
                  ("output", "tensorboard")}


class PartyError(RuntimeError):
    """A multi-process run cannot go on; the message names the party at fault."""


def party_names(clients: int) -> list[str]:
    """Party names by rank: the server is rank 0, hospital k is rank k + 1.

    Args:
        clients: the number of hospitals (``split.clients``).
    """
    return [SERVER] + [f"client{k}" for k in range(clients)]


def config_hash(cfg: Config) -> str:
    """Hash of everything that must agree between parties (all but :data:`PER_PARTY_KEYS`).

    Args:
        cfg: the run's config.
    """
    values = cfg.to_dict()
    for section, key in PER_PARTY_KEYS:
        values.get(section, {}).pop(key, None)
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]
