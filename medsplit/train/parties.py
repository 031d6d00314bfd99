"""One party of a multi-process run: the server, or one hospital, in its own OS process.

Every process runs the same schedule as :func:`medsplit.train.loop.train` (SPMD): the same
seed, the same protocol, the same epochs, steps and evaluations, executing only what its party
owns. The Channel turns every crossing between processes into a real send and receive over a
:class:`~medsplit.transport.Transport`, so a run with the parties in separate processes gives
exactly the numbers of the in-process run (same data, same seed, CPU).

Who holds what:

* rank 0, the server: the server part(s), their optimiser, and the aggregator of SplitFed. It
  never opens an image folder: it learns batch sizes from the hospitals' control messages and
  runs the client parts only on the ``meta`` device (shapes, to check what it receives).
* rank k+1, hospital ``client{k}``: its client part(s), its optimiser and its own data (its
  partition of the configured data set, or with ``join --data`` its own folder, all of it).

Control messages (protocol metadata, never tensors; counted separately from the Channel's
payload bytes): the start-up handshake (protocol version, config hash, rank, host, pid, resume
epoch), each hospital's batch sizes per epoch and its val/test sizes (counts only), the per-step
training losses sent to the evaluating hospital, the evaluating hospital's "best epoch" flag,
and, at the end, each party's byte counts, link timings and host/pid for the report.

Evaluation runs at the evaluating hospital (the protocol's evaluation model: the last hospital
of the relay, hospital 0 of SplitFed) on its own val/test split: activations go to the server as
in training and the model output comes back to the hospital (``output`` link, counted as eval
activation bytes), which holds the labels and computes the metrics. That hospital writes the
run's report.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch

from medsplit.config import Config
from medsplit.train.device import resolve_device
from medsplit.train.launch import launch_local
from medsplit.train.party_plan import AGGREGATOR, PER_PARTY_KEYS, config_hash, party_names
from medsplit.train.party_run import ControlCoordinator
from medsplit.train.runner import Runner
from medsplit.transport import TRANSPORTS, register_placement
from medsplit.transport.auth import read_secret


def config_key_hashes(cfg: Config) -> dict[str, str]:
    """A short hash of every shared config key's value (``{"train.lr": "3f2a..."}``): what a party
    announces at check-in so the server can name the keys that differ without either side sending
    a value (a path or a site's setting stays where it is)."""
    out = {}
    for section, values in cfg.to_dict().items():
        items = values.items() if isinstance(values, dict) else [(None, values)]
        for key, value in items:
            if (section, key) in PER_PARTY_KEYS:
                continue
            dotted = f"{section}.{key}" if key is not None else section
            out[dotted] = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return out


def run_party(cfg: Config, rank: int, run_dir: Path, address: str | None = None, own_data: bool = False,
              resume: bool = False, quiet: bool = True, rejoin: bool = False) -> dict | None:
    """Run party ``rank`` of ``cfg`` to the end; the evaluating hospital returns the run record.

    Args:
        cfg: the run's config (every party must have the same one, up to :data:`PER_PARTY_KEYS`).
        rank: 0 for the server, k + 1 for hospital k.
        run_dir: the run folder; each party keeps its checkpoint in ``run_dir/parties/<name>``.
        address: ``HOST:PORT`` of the server's rendezvous (default ``split.address``).
        own_data: the hospital trains on all of its own folder's training rows (``join --data``)
            instead of its partition of the configured data set.
        resume: continue from this party's last checkpoint.
        quiet: no console output beyond errors.
        rejoin: this hospital restarted while the run goes on: it checks in again and the server
            admits it at an epoch's start (waiting up to ten times ``split.timeout_s``).
    """
    names = party_names(cfg.split.clients)
    if not 0 <= rank < len(names):
        raise ValueError(f"--rank {rank} is out of range: {cfg.split.clients} hospital(s) take ranks 1..{cfg.split.clients}, the server 0")
    name = names[rank]
    run_dir = Path(run_dir)
    party_dir = run_dir / "parties" / name
    party_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    started = time.time()
    ranks = {n: r for r, n in enumerate(names)} | {AGGREGATOR: 0}
    secret = read_secret(cfg.split.secret_file) if cfg.split.secret_file else None
    transport = TRANSPORTS["gloo"](name, ranks, address or cfg.split.address, cfg.split.timeout_s,
                                   checkin={"config_hash": config_hash(cfg), "config_keys": config_key_hashes(cfg)}, secret=secret,
                                   rejoin_wait_s=10 * cfg.split.timeout_s if rejoin else None)
    try:
        coordinator = ControlCoordinator(cfg, name, names, party_dir, device, transport, own_data, resume, quiet,
                                         restarted=rejoin)
        return Runner(cfg, coordinator, run_dir, party_dir, device, started, quiet=quiet).run()
    finally:
        transport.close()


def start_party_processes(cfg: Config, run_dir: Path, resume: bool = False, quiet: bool = False) -> Path:
    """``split.transport=gloo`` for ``medsplit train``: every party as a local process (see
    :func:`~medsplit.train.launch.launch_local`); returns the run folder."""
    launch_local(cfg, run_dir, resume=resume, quiet=quiet)
    return Path(run_dir)


register_placement("gloo", start_party_processes)
