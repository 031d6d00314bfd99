"""One party (the server or a hospital) in its own process: how it meets the others through
control messages over its transport (gloo, or FLARE's), for the one
:class:`~medsplit.train.runner.Runner` every placement runs (see :mod:`medsplit.train.parties`
for who holds what and which control messages cross)."""

from __future__ import annotations

import contextlib
import os
import socket
import sys

import numpy as np
import torch

from medsplit.config import Config
from medsplit.split import Channel
from medsplit.split.byte_ledger import ByteLedger
from medsplit.split.channel import MessageError
from medsplit.transport.base import TransportError
from medsplit.split.codecs import codecs_for
from medsplit.tasks import TASKS, TaskSettings, make_task
from medsplit.train.checkpoint import load_checkpoint
from medsplit.train.fault_injection import fault_hook
from medsplit.train.party_membership import Membership
from medsplit.train.party_control import Control, handshake
from medsplit.train.party_plan import AGGREGATOR, SERVER
from medsplit.train.party_report import MirroredModel, transport_record, transport_summary
from medsplit.train.precision import compute_dtype
from medsplit.train.roster import is_outage
from medsplit.train.runner import Coordinator, Runner, evaluate_split
from medsplit.train.schedule import client_indices
from medsplit.train.server_view import batch_spec, server_loss, server_table

class ControlCoordinator(Membership, Coordinator):
    """Party ``name`` of ``names`` (rank 0 the server, rank k + 1 hospital k) meeting the others
    through control messages on ``transport``.

    The server holds no data: it learns each hospital's batch sizes and val/test sizes from control
    messages and runs shapes only (:func:`~medsplit.train.server_view.batch_spec`). The evaluating
    hospital (the protocol's evaluation model's) keeps the history, selects the tested epoch for
    everyone, gathers every party's accounting and writes the run record.

    Args:
        cfg: the run's config.
        name: this party's name; names: every party's name by rank.
        party_dir: this party's checkpoint folder.
        device: the torch device this party computes on.
        transport: this party's :class:`~medsplit.transport.Transport`.
        own_data: the hospital trains on all of its own folder's training rows.
        resume: continue from this party's last checkpoint.
        quiet: no console output beyond errors.
        restarted: this hospital restarted while the run goes on and rejoins it (its transport
            was admitted by the server; the server tells it where the run stands).
    """

    def __init__(self, cfg: Config, name: str, names: list[str], party_dir, device, transport, own_data: bool,
                 resume: bool, quiet: bool, restarted: bool = False):
        self.restarted = restarted
        self.cfg, self.name, self.names, self.party_dir, self.device = cfg, name, names, party_dir, device
        self.transport, self.own_data, self.resume, self.quiet = transport, own_data, resume, quiet
        self.rank = names.index(name)
        self.is_server = self.rank == 0
        self.k = self.rank - 1  # hospital index (-1 for the server)
        self.hospitals = names[1:]
        self.control = Control(transport, cfg)  # batch sizes bounded by train.batch_size, hospitals by split.clients
        # threads: CPU results can depend on torch's thread count, so every party's is recorded
        self.info = {"name": name, "rank": self.rank, "host": socket.gethostname(), "pid": os.getpid(),
                     "threads": torch.get_num_threads()}
        self.labels_may_cross = TASKS[cfg.task].labels_may_cross
        self.task_settings = TaskSettings.from_config(cfg)  # what the task reads of the run, resolved once
        self.n_trainers = cfg.split.clients
        self.steps = 0  # this party's own steps (fault injection counts them)
        self.rosters = 0  # roster messages this hospital took in this epoch (fault injection counts them)
        self.epoch = 0
        #: the server: each hospital's steps still to run this epoch (a roster it cannot deliver waits for the next)
        self.steps_ahead: dict[int, int] = {}
        #: the server: the losses each hospital reported at the end of its relay turn this epoch
        self.turn_losses: dict[int, list[float]] = {}

    def _reporter(self, runner: Runner) -> str:
        return self.hospitals[runner.protocol.eval_client_index()]

    def _peers(self) -> list[str]:
        """The other parties still in the run (a hospital that dropped out is not waited for)."""
        return [p for p in self.names if p != self.name and (p == SERVER or self.roster.present(self.hospitals.index(p)))]

    # ---- start-up ------------------------------------------------------------------------
    def load_checkpoint(self) -> dict | None:
        return load_checkpoint(self.party_dir) if self.resume else None

    def agree_start_epoch(self, ck: dict | None) -> int:
        """Check every hospital runs the same protocol version and config; agree on the epoch (a
        restarted hospital: its config was checked at its check-in; it joins where the run stands)."""
        if self.restarted:
            return self.rejoin_run()
        start_epoch, self.parties = handshake(self.control, self.cfg, self.name, self.info, self.hospitals,
                                              ck["epoch"] + 1 if ck else 0)
        return start_epoch

    def load_data(self) -> None:
        """A hospital's task and training rows; the server learns the hospitals' val/test sizes instead."""
        if self.is_server:
            self.sizes = {h: self.control.recv(h, "sizes")["sizes"] for h in self.hospitals}
            return
        self.task = make_task(self.task_settings, self.device)
        if self.own_data:
            rows = np.arange(len(self.task.split("train")))
            self.all_clients = [rows]
        else:
            cfg = self.cfg
            self.all_clients = client_indices(self.task, cfg.split.clients, cfg.data.partition, cfg.data.alpha, cfg.train.seed)
            rows = self.all_clients[self.k]
        self.training_rows = {self.k: rows}
        if not self.restarted:  # the server has them from its first start
            self.control.send(SERVER, sizes={"val": len(self.task.split("val")), "test": len(self.task.split("test"))})

    def build_table(self):
        return server_table(self.task_settings) if self.is_server else self.task.build_table()

    def ready(self, runner: Runner) -> None:
        self.runner, self.roster = runner, runner.roster
        self.roster.notice = self.say
        self.roster.turn_report = self.report_turn
        if hasattr(self.transport, "relink"):  # a transport whose links can be formed anew: restarts rejoin
            self.roster.admission = self.admit_rejoins
        if self.restarted:
            self.restore_roster()

    def loss_fn(self):
        return server_loss(self.task_settings) if self.is_server else self.task.loss

    def make_channel(self) -> Channel:
        cfg = self.cfg
        hosted = {SERVER, AGGREGATOR} if self.is_server else {self.name}
        return Channel(serialise=True, codecs=codecs_for(cfg.split.compress_activations, cfg.split.compress_gradients),
                       transport=self.transport, local=frozenset(hosted), device=str(self.device),
                       compute_dtype=compute_dtype(cfg.train.amp, cfg.train.cpu_amp, self.device))

    # ---- an epoch --------------------------------------------------------------------------
    def share_batch_counts(self, epoch: int, own: dict[int, list]) -> list[list[torch.Tensor]]:
        """Each hospital announces its batch sizes to the server (counts only); the server checks them."""
        K, limit = self.cfg.split.clients, self.cfg.train.batch_size
        self.steps = self.rosters = 0  # fault injection counts each epoch's steps and rosters from 0
        self.epoch = epoch
        if not self.is_server:
            self.control.send(SERVER, batches=[len(b) for b in own[self.k]])
            return [own[self.k] if k == self.k else [] for k in range(K)]
        batches = []
        self.turn_losses = {}
        for k, h in enumerate(self.hospitals):
            if not self.roster.present(k):
                batches.append([])  # dropped out: nothing to wait for
                continue
            try:
                sizes = self.control.recv(h, "batches")["batches"]
            except TransportError as e:  # gone since the last epoch (e.g. after its relay turn): it leaves now
                if not (self.roster.tolerant and is_outage(e)):
                    raise
                self._decide_departure(k, 0, e)
                batches.append([])
                continue
            if not isinstance(sizes, list) or not all(isinstance(n, int) and 1 <= n <= limit for n in sizes):
                raise MessageError(f"{h} announced batch sizes {str(sizes)[:200]} for epoch {epoch}; each must be an "
                                   f"integer in 1..{limit} (train.batch_size)")
            batches.append([torch.empty(n) for n in sizes])
        self.announced = {k: len(b) for k, b in enumerate(batches)}
        self.steps_ahead = dict(self.announced)
        return batches

    def trains(self, k: int) -> bool:
        return self.is_server or k == self.k

    def say(self, text: str) -> None:
        if not self.quiet:
            print(f"{self.name}: {text}", flush=True)

    def train_inputs(self, k: int, idx: torch.Tensor, generator, epoch: int):
        fault = fault_hook(self.name, epoch, self.steps)
        self.steps += 1
        if self.is_server:
            self.steps_ahead[k] = self.steps_ahead.get(k, 0) - 1
            return batch_spec(self.task_settings, len(idx))
        batch = self.task.batch("train", idx, train=True, generator=generator)
        return (batch.x * float("nan") if fault == "nan" else batch.x), batch.y

    def evaluate(self, runner: Runner, split: str):
        """The evaluating hospital's metrics on its own ``split``; the server runs its parts of the
        same forwards (shapes from the hospital's announced sizes); anyone else: ``None``."""
        model, evaluator = runner.protocol.eval_model(), self._reporter(runner)
        if self.is_server:
            n = int(self.sizes[evaluator][split])
            model.eval()
            for m in [len(c) for c in torch.arange(n).split(self.cfg.train.eval_batch_size)]:
                with runner.autocast():
                    model(batch_spec(self.task_settings, m)[0])
            model.train()
            return None
        if self.name != evaluator:
            return None
        return evaluate_split(model, self.task, split, self.cfg.train.eval_batch_size, runner.autocast)

    def gather_losses(self, runner: Runner, losses: dict) -> dict | None:
        """Every party's training losses at the evaluating hospital (``None`` elsewhere).

        Where the relay's hospitals reported their turns (:meth:`report_turn`), their losses are
        with the server already, which sends them on with its own: the evaluating hospital then
        waits on no hospital that may have died after handing on its weights."""
        reporter = self._reporter(runner)
        via_server = self.roster.tolerant and runner.protocol.reports_turns
        if self.name != reporter:
            if self.is_server and via_server:
                for k, v in self.turn_losses.items():
                    if self.hospitals[k] != reporter:  # the evaluating hospital has its own
                        losses[k].extend(v)
            if self.is_server or not via_server:
                self.control.send(reporter, losses={str(k): v for k, v in losses.items() if v})
            return None
        for peer in [SERVER] if via_server else self._peers():
            for k, v in self.control.recv(peer, "losses")["losses"].items():
                losses[int(k)].extend(float(x) for x in v)
        return losses

    def share_selection(self, runner: Runner, is_best: bool | None) -> bool:
        """The evaluating hospital tells everyone whether this epoch is the tested one so far."""
        reporter = self._reporter(runner)
        if self.name != reporter:
            return bool(self.control.recv(reporter, "best")["best"])
        for peer in self._peers():
            try:
                self.control.send(peer, best=bool(is_best))
            except TransportError as e:
                # a hospital gone since its last turn: not this hospital's decision, and the server's
                # next exchange with it (the next epoch's batch counts) decides for every process
                if not (peer != SERVER and self.roster.tolerant and is_outage(e) and self.epoch + 1 < self.cfg.train.epochs):
                    raise
                self.say(f"could not tell {peer} which epoch is tested ({str(e).splitlines()[0][:300]}); "
                         f"the server's next exchange with it decides whether it left")
        return bool(is_best)

    def epoch_done(self, epoch: int, val_loss: float, scores: dict, metric: str) -> None:
        if not self.quiet:
            print(f"epoch {epoch + 1}: val_loss={val_loss:.4f} " + " ".join(f"{k}={v:.4f}" for k, v in scores.items()), flush=True)

    def progress(self, epoch: int, total: int):
        return _NoProgress()

    # ---- the end ---------------------------------------------------------------------------
    def gather_reports(self, runner: Runner, final) -> dict | None:
        """Every party's accounting (bytes, links, control bytes, host/pid) at the evaluating hospital;
        the server then mirrors the forwards the report makes (segmentation examples)."""
        reporter = self._reporter(runner)
        channel = runner.channel
        # a hospital that dropped out cannot report what it sent: its receivers report it for it, up
        # to the epoch it came back from (a restarted process counts its own from then on)
        back = {f"client{d.hospital}": d.rejoined for d in self.roster.departures}  # its latest departure's
        counted = [r for r in channel.byte_rows(None)
                   if channel.hosts(r["sender"]) or (r["sender"] in back and channel.hosts(r["receiver"])
                                                     and (back[r["sender"]] is None or r["epoch"] + 1 < back[r["sender"]]))]
        mine = {"party": self.info, "bytes": counted,
                "links": self.transport.stats_rows(), "control_bytes_sent": self.control.bytes_sent,
                "data_loaded": self.task is not None,
                "data_modules": sorted(m for m in sys.modules if m.startswith("medsplit.data."))}
        if self.name != reporter:
            self.control.send(reporter, report=mine)
            if self.is_server:
                final.eval()
                while (n := int(self.control.recv(reporter, "forward")["forward"])) > 0:
                    with runner.autocast():
                        final(batch_spec(self.task_settings, n)[0])
            return None
        reports = [mine] + [self.control.recv(p, "report")["report"] for p in self._peers()]
        counted = ByteLedger()  # every party's own counts, in one ledger
        counted.load([row for r in reports for row in r["bytes"]])
        return {"byte_rows": counted.rows, "extra": {"transport": transport_record(self.cfg, reports)}}

    @contextlib.contextmanager
    def output_model(self, final):
        model = MirroredModel(final, self.control)
        try:
            yield model
        finally:
            model.done()

    def finished(self, runner: Runner, record: dict) -> None:
        if not self.quiet:
            print(transport_summary(record["transport"]), flush=True)


class _NoProgress:
    def update(self, n: int) -> None: ...
    def set_postfix(self, **kwargs) -> None: ...
    def close(self) -> None: ...
