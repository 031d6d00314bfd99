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

import contextlib
import copy
import hashlib
import json
import math
import os
import signal
import socket
import sys
import time
from pathlib import Path

import numpy as np
import torch

from medsplit.config import Config
from medsplit.split import Channel, wire
from medsplit.split.channel import MessageError
from medsplit.split.codecs import codecs_for
from medsplit.train.checkpoint import load_checkpoint, save_checkpoint, save_weights
from medsplit.train.protocols import PROTOCOLS

PROTOCOL_VERSION = 1
SERVER = "server"
AGGREGATOR = "aggregator"  # SplitFed's averaging runs in the server's process
CONTROL_MAX_BYTES = 1 << 24
# Keys a hospital may set differently from the server: where its own data and outputs live.
PER_PARTY_KEYS = {("data", "source"), ("data", "root"), ("data", "cache_dir"), ("split", "address"),
                  ("train", "device"), ("train", "threads"), ("output", "runs_dir"), ("output", "reports_dir"),
                  ("output", "tensorboard")}
FAULT_ENV = "MEDSPLIT_FAULT"  # tests: "client1:epoch=1:step=2" kills that party there (SIGKILL)


class PartyError(RuntimeError):
    """A multi-process run cannot go on; the message names the party at fault."""


def party_names(clients: int) -> list[str]:
    """Party names by rank: the server is rank 0, hospital k is rank k + 1."""
    return [SERVER] + [f"client{k}" for k in range(clients)]


def config_hash(cfg: Config) -> str:
    """Hash of everything that must agree between parties (all but :data:`PER_PARTY_KEYS`)."""
    values = cfg.to_dict()
    for section, key in PER_PARTY_KEYS:
        values.get(section, {}).pop(key, None)
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


class Control:
    """Protocol metadata between parties: JSON in the wire format's header, no tensors.

    Args:
        transport: the transport the Channel also uses (messages stay in order per pair).
    """

    def __init__(self, transport):
        self.transport = transport
        self.bytes_sent = 0
        self.bytes_received = 0

    def send(self, peer: str, **message) -> None:
        payload = wire.encode({}, meta=message)
        self.transport.send(peer, payload)
        self.bytes_sent += len(payload)

    def recv(self, peer: str, expect: str) -> dict:
        payload = self.transport.recv(peer, CONTROL_MAX_BYTES)
        self.bytes_received += len(payload)
        try:
            tensors, meta = wire.decode(payload)
        except Exception as e:  # noqa: BLE001 - any malformed control message is the peer's fault
            raise MessageError(f"malformed control message from {peer} (expected {expect!r}): {e}") from e
        if tensors or not isinstance(meta, dict) or expect not in meta:
            raise MessageError(f"unexpected control message from {peer}: expected {expect!r}, got keys "
                               f"{sorted(meta) if isinstance(meta, dict) else type(meta).__name__}"
                               + (f" and tensors {sorted(tensors)}" if tensors else ""))
        return meta


def batch_spec(cfg: Config, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shapes (meta tensors) of a batch of ``n`` images and targets: all the server knows of it."""
    from medsplit.train.tasks import TASKS

    return TASKS[cfg.task].batch_spec(cfg, n)


def server_loss(cfg: Config):
    """The task's loss without its data (the server computes it when it holds the last part)."""
    from medsplit.train.tasks import TASKS

    return TASKS[cfg.task].loss_function(cfg)


def server_table(cfg: Config):
    """The model the server builds (same seed, same init as every hospital), without data."""
    from medsplit.train.tasks import TASKS, task_model

    return task_model(cfg, TASKS[cfg.task].num_outputs(cfg))


def _fault_hook(name: str, epoch: int, step: int) -> str | None:
    """Test-only fault injection: ``MEDSPLIT_FAULT=client1:epoch=1:step=2`` kills that party
    there (``:mode=hang`` makes it stop answering instead, ``:mode=nan`` makes it send NaN)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return None
    who, *rest = spec.split(":")
    where = dict(item.split("=") for item in rest)
    if who == name and int(where.get("epoch", 0)) == epoch and int(where.get("step", 0)) == step:
        mode = where.get("mode", "kill")
        if mode == "hang":
            time.sleep(10_000)  # stops answering without closing its sockets
        elif mode == "nan":
            return "nan"
        else:
            os.kill(os.getpid(), signal.SIGKILL)
    return None


def run_party(cfg: Config, rank: int, run_dir: Path, address: str | None = None, own_data: bool = False,
              resume: bool = False, quiet: bool = True) -> dict | None:
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
    """
    from medsplit.train.loop import resolve_device
    from medsplit.transport.gloo import GlooTransport

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
    transport = GlooTransport(name, ranks, address or cfg.split.address, cfg.split.timeout_s)
    try:
        runner = _PartyRun(cfg, name, rank, names, run_dir, party_dir, device, transport, own_data, resume, quiet, started)
        return runner.run()
    finally:
        transport.close()


class _PartyRun:
    """The state of one party's run (see :func:`run_party`)."""

    def __init__(self, cfg, name, rank, names, run_dir, party_dir, device, transport, own_data, resume, quiet, started):
        self.cfg, self.name, self.rank, self.names = cfg, name, rank, names
        self.run_dir, self.party_dir, self.device = run_dir, party_dir, device
        self.transport, self.own_data, self.resume, self.quiet, self.t0 = transport, own_data, resume, quiet, started
        self.is_server = rank == 0
        self.k = rank - 1  # hospital index (-1 for the server)
        self.hospitals = names[1:]
        self.control = Control(transport)
        self.info = {"name": name, "rank": rank, "host": socket.gethostname(), "pid": os.getpid()}

    # ---- start-up --------------------------------------------------------------------
    def _handshake(self, start_epoch: int) -> int:
        """Check every hospital runs the same protocol version and config; agree on the epoch."""
        mine = {"version": PROTOCOL_VERSION, "config_hash": config_hash(self.cfg), "start_epoch": start_epoch, **self.info}
        if not self.is_server:
            self.control.send(SERVER, hello=mine)
            answer = self.control.recv(SERVER, "welcome")["welcome"]
            if not answer["ok"]:
                raise PartyError(f"{self.name}: the server refused this run: {answer['reason']}")
            self.parties = answer["parties"]
            return int(answer["start_epoch"])
        hellos = {h: self.control.recv(h, "hello")["hello"] for h in self.hospitals}
        problems = []
        for h, hello in hellos.items():
            if hello.get("version") != PROTOCOL_VERSION:
                problems.append(f"{h} (rank {hello.get('rank')}, {hello.get('host')}) speaks protocol version "
                                f"{hello.get('version')}, the server {PROTOCOL_VERSION}")
            elif hello.get("config_hash") != mine["config_hash"]:
                problems.append(f"{h} (rank {hello.get('rank')}, {hello.get('host')}) has config hash "
                                f"{hello.get('config_hash')}, the server {mine['config_hash']}: the configs differ "
                                "in a setting every party must share (only data paths, device and outputs may differ)")
        epochs = {h: hello.get("start_epoch") for h, hello in hellos.items()} | {self.name: start_epoch}
        if not problems and len(set(epochs.values())) > 1:
            problems.append(f"the parties' last checkpoints are from different epochs {epochs}; resume needs all of them")
        self.parties = [mine] + [hellos[h] for h in self.hospitals]
        reason = "; ".join(problems)
        for h in self.hospitals:
            self.control.send(h, welcome={"ok": not problems, "reason": reason, "start_epoch": start_epoch, "parties": self.parties})
        if problems:
            raise PartyError(f"server: refused the run: {reason}")
        return start_epoch

    def _load_data(self):
        """A hospital's task and training rows; the server has neither."""
        from medsplit.train.loop import client_indices
        from medsplit.train.tasks import make_task

        task = make_task(self.cfg, self.device)
        if self.own_data:
            return task, np.arange(len(task.split("train"))), None
        parts = client_indices(self.cfg, task)
        return task, parts[self.k], parts

    # ---- the run ---------------------------------------------------------------------
    def run(self) -> dict | None:
        from medsplit.train.loop import learning_rate, make_optimizer_factory

        cfg = self.cfg
        ck = load_checkpoint(self.party_dir) if self.resume else None
        start_epoch = self._handshake(ck["epoch"] + 1 if ck else 0)
        self.task = None
        if self.is_server:
            self.sizes = {h: self.control.recv(h, "sizes")["sizes"] for h in self.hospitals}
            torch.manual_seed(cfg.train.seed)  # the same init as every hospital
            table = server_table(cfg).to(self.device)
            loss_fn = server_loss(cfg)
        else:
            self.task, self.indices, self.all_parts = self._load_data()
            sizes = {"val": len(self.task.split("val")), "test": len(self.task.split("test"))}
            self.control.send(SERVER, sizes=sizes)
            torch.manual_seed(cfg.train.seed)
            table = self.task.build_table().to(self.device)
            loss_fn = self.task.loss
        hosted = {SERVER, AGGREGATOR} if self.is_server else {self.name}
        self.channel = Channel(serialise=True, codecs=codecs_for(cfg.split.compress_activations, cfg.split.compress_gradients),
                               transport=self.transport, local=frozenset(hosted), device=str(self.device))
        from medsplit.train.tasks import TASKS

        labels_may_cross = TASKS[cfg.task].labels_may_cross
        self.protocol = PROTOCOLS[cfg.split.protocol](table, cfg.split.cut, cfg.split.clients, make_optimizer_factory(cfg),
                                                      loss_fn, self.channel, optimizer_handover=cfg.split.optimizer_handover,
                                                      labels_may_cross=labels_may_cross)
        use_amp = cfg.train.amp and self.device.type == "cuda"
        self.autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else contextlib.nullcontext
        self.history, self.best, self.best_weights = [], {"epoch": -1, "score": -float("inf")}, None
        if ck:
            self.protocol.load_state(ck["protocol"])
            self.channel.load_byte_rows(ck["bytes"])
            self.history, self.best, self.best_weights = ck["history"], ck["best"], ck["best_weights"]
            self.t0 -= ck["elapsed_s"]
        self.eval_k = None
        for epoch in range(start_epoch, cfg.train.epochs):
            t_epoch = time.time()
            self.channel.epoch = epoch
            lr = learning_rate(cfg, epoch)
            for party in self.protocol.local_parties:
                for group in party.optimizer.param_groups if party.optimizer else []:
                    group["lr"] = lr
            losses = self._train_epoch(epoch)
            self.eval_k = self.protocol.eval_client_index()
            val = self._evaluate("val")
            self._end_epoch(epoch, lr, losses, val, time.time() - t_epoch)
            save_checkpoint(self.party_dir, {"protocol": self.protocol.state(), "bytes": self.channel.byte_rows(None),
                                             "history": self.history, "best": self.best, "best_weights": self.best_weights,
                                             "epoch": epoch, "elapsed_s": time.time() - self.t0})
        if self.eval_k is None:
            self.eval_k = self.protocol.eval_client_index()
        return self._finish()

    def _train_epoch(self, epoch: int) -> dict[int, list[float]]:
        from medsplit.train.loop import augmentation_generator, epoch_batches

        cfg = self.cfg
        K = cfg.split.clients
        if self.is_server:
            batches = []
            for h in self.hospitals:
                sizes = self.control.recv(h, "batches")["batches"]
                limit = cfg.train.batch_size
                if not isinstance(sizes, list) or not all(isinstance(n, int) and 1 <= n <= limit for n in sizes):
                    raise MessageError(f"{h} announced batch sizes {str(sizes)[:200]} for epoch {epoch}; each must be an "
                                       f"integer in 1..{limit} (train.batch_size)")
                batches.append([torch.empty(n) for n in sizes])
        else:
            own = epoch_batches(self.indices, cfg.train.batch_size, cfg.train.seed, epoch, self.k)
            self.control.send(SERVER, batches=[len(b) for b in own])
            batches = [own if k == self.k else [] for k in range(K)]
        # The same draws as the in-process loop: this hospital's own augmentation generator and
        # the epoch's reseed of torch's global generator (see medsplit.train.loop.train).
        aug_gen = None if self.is_server else augmentation_generator(cfg, epoch, self.k, self.device)
        torch.manual_seed(cfg.train.seed * 104_729 + epoch + 1)
        losses: dict[int, list[float]] = {k: [] for k in range(K)}
        counter = {"steps": 0}

        def step(model, k, idx):
            if not self.is_server and k != self.k:
                self.channel.step += 1  # another hospital's step: nothing of it runs here
                return
            fault = _fault_hook(self.name, epoch, counter["steps"])
            counter["steps"] += 1
            if self.is_server:
                x, y = batch_spec(cfg, len(idx))
            else:
                batch = self.task.batch("train", idx, train=True, generator=aug_gen)
                x, y = batch.x, batch.y
                if fault == "nan":
                    x = x * float("nan")
            with self.autocast():
                loss, _ = model.train_step(x, y)
            if not math.isnan(loss):
                losses[k].append(loss)

        self.protocol.run_epoch(batches, step)
        return losses

    def _evaluate(self, split: str):
        """Evaluation of the protocol's evaluation model on the evaluating hospital's ``split``."""
        from medsplit.train.loop import evaluate_split

        model = self.protocol.eval_model()
        evaluator = self.hospitals[self.eval_k]
        if self.is_server:
            n = int(self.sizes[evaluator][split])
            model.eval()
            for m in [len(c) for c in torch.arange(n).split(self.cfg.train.eval_batch_size)]:
                with self.autocast():
                    model(batch_spec(self.cfg, m)[0])
            model.train()
            return None
        if self.name != evaluator:
            return None
        return evaluate_split(model, self.task, split, self.cfg.train.eval_batch_size, self.autocast)

    def _end_epoch(self, epoch: int, lr: float, losses, val, seconds: float) -> None:
        """Gather training losses at the evaluating hospital; it picks the best epoch for everyone."""
        reporter = self.hospitals[self.eval_k]
        if self.name != reporter:
            self.control.send(reporter, losses={str(k): v for k, v in losses.items() if v})
            is_best = bool(self.control.recv(reporter, "best")["best"])
        else:
            for peer in self.names:
                if peer != self.name:
                    for k, v in self.control.recv(peer, "losses")["losses"].items():
                        losses[int(k)].extend(float(x) for x in v)
            val_metrics, val_loss = val
            scores = self.task.summarise(val_metrics)
            K = self.cfg.split.clients
            for k, ls in losses.items():
                client = f"client{k}" if K > 1 else "client0"
                self.history.append({"epoch": epoch + 1, "client": client, "train_loss": float(np.mean(ls)) if ls else None})
            self.history.append({"epoch": epoch + 1, "client": "all", "lr": lr, "val_loss": val_loss,
                                 **{f"val_{k}": v for k, v in scores.items()}, "seconds": seconds})
            score = scores.get(self.task.select_metric, -val_loss)
            is_best = score is not None and score > self.best["score"]
            if is_best:
                self.best = {"epoch": epoch + 1, "score": float(score)}
            for peer in self.names:
                if peer != self.name:
                    self.control.send(peer, best=is_best)
            if not self.quiet:
                print(f"epoch {epoch + 1}: val_loss={val_loss:.4f} " + " ".join(f"{k}={v:.4f}" for k, v in scores.items()), flush=True)
        if is_best:
            self.best_weights = copy.deepcopy(self.protocol.eval_state_dict())

    def _finish(self) -> dict | None:
        """Test the selected model, gather every party's accounting, write the report."""
        final = self.protocol.eval_model()
        if self.best_weights:
            for part, owner in final.chain:
                if self.channel.hosts(owner.name):
                    part.load_state_dict({k: self.best_weights[k] for k in part.state_dict()})
        test = self._evaluate("test")
        reporter = self.hospitals[self.eval_k]
        mine = {"party": self.info, "bytes": [r for r in self.channel.byte_rows(None) if self.channel.hosts(r["sender"])],
                "links": self.transport.stats_rows(), "control_bytes_sent": self.control.bytes_sent,
                "data_loaded": self.task is not None,
                "data_modules": sorted(m for m in sys.modules if m.startswith("medsplit.data."))}
        if self.name != reporter:
            self.control.send(reporter, report=mine)
            if self.is_server:  # mirror the forwards the report makes (segmentation examples)
                final.eval()
                while (n := int(self.control.recv(reporter, "forward")["forward"])) > 0:
                    with self.autocast():
                        final(batch_spec(self.cfg, n)[0])
            return None
        reports = [mine] + [self.control.recv(p, "report")["report"] for p in self.names if p != self.name]
        return self._write_report(final, test, reports)

    def _write_report(self, final, test, reports: list[dict]) -> dict:
        from medsplit.train.loop import _data_summary, _json_default, device_label
        from medsplit.train.outputs import write_outputs

        cfg = self.cfg
        test_metrics, test_loss = test
        counted = Channel()
        counted.load_byte_rows([row for r in reports for row in r["bytes"]])
        links = [row for r in reports for row in r["links"]]
        by_rank = sorted(reports, key=lambda r: r["party"]["rank"])
        selected_state = {}
        for part, owner in final.chain:
            if self.channel.hosts(owner.name):
                selected_state.update(part.state_dict())
        save_weights(self.run_dir, selected_state)  # the evaluating hospital's parts; the server keeps its own
        clients = self.all_parts if self.all_parts is not None else [self.indices]
        result = {
            "task": cfg.task, "run": cfg.run_name(), "protocol": cfg.split.protocol, "cut": cfg.split.cut,
            "clients": cfg.split.clients, "device": device_label(self.device), "wall_time_s": time.time() - self.t0,
            "selected_epoch": self.best["epoch"], "test": test_metrics, "test_loss": test_loss, "history": self.history,
            "bytes": counted.byte_rows("train"), "bytes_eval": counted.byte_rows("eval"),
            "data": _data_summary(self.task, clients, clients), "normalisation": self.task.normalisation(),
            "config": cfg.to_dict(),
            "transport": {
                "name": cfg.split.transport, "protocol_version": PROTOCOL_VERSION, "config_hash": config_hash(cfg),
                "parties": [dict(r["party"], data_loaded=r["data_loaded"], data_modules=r["data_modules"]) for r in by_rank],
                "link_seconds": {f"{row['party']}->{row['peer']}" if row["direction"] == "send" else f"{row['peer']}->{row['party']}":
                                 row["seconds"] for row in links},
                "links": links,
                "payload_bytes_sent": sum(row["payload_bytes"] for row in links if row["direction"] == "send"),
                "framing_bytes_sent": sum(row["framing_bytes"] for row in links if row["direction"] == "send"),
                "control_bytes_sent": sum(r["control_bytes_sent"] for r in reports),
            },
        }
        _atomic_write(self.run_dir / "metrics.json", json.dumps(result, indent=2, default=_json_default))
        model = _MirroredModel(final, self.control)
        try:
            write_outputs(cfg, self.run_dir, result, self.task, model, quiet=self.quiet)
        finally:
            model.done()
        if not self.quiet:
            print(transport_summary(result["transport"]), flush=True)
        return result


class _MirroredModel:
    """The evaluation model as the report uses it: each forward is announced to the server first,
    which runs its part of the same forward (segmentation examples)."""

    def __init__(self, model, control: Control):
        self.model, self.control = model, control

    def eval(self):
        self.model.eval()
        return self

    def train(self, mode: bool = True):
        self.model.train(mode)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.control.send(SERVER, forward=int(len(x)))
        return self.model(x)

    def done(self) -> None:
        self.control.send(SERVER, forward=0)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def transport_summary(info: dict) -> str:
    """Console lines: the transport, one line per party, the measured wall time per link."""
    lines = [f"transport: {info['name']} (protocol version {info['protocol_version']}, config {info['config_hash']})"]
    for p in info["parties"]:
        lines.append(f"  rank {p['rank']}: {p['name']:<8} host {p['host']} pid {p['pid']}"
                     + ("" if p["data_loaded"] else "  (no data opened)"))
    seen = {}
    for row in info["links"]:
        if row["direction"] == "send":  # one direction per link: the sender's measurement
            seen[f"{row['party']}->{row['peer']}"] = row
    for link, row in sorted(seen.items()):
        lines.append(f"  link {link:<20} {row['messages']:>6} messages {row['payload_bytes'] / 1e6:>10.2f} MB "
                     f"{row['seconds']:>8.2f} s in send")
    lines.append(f"  payload {info['payload_bytes_sent'] / 1e6:.2f} MB + framing {info['framing_bytes_sent']} B; "
                 f"control messages {info['control_bytes_sent']} B")
    return "\n".join(lines)
