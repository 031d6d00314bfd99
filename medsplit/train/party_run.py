"""The run of one party (server or hospital) of a multi-process run: the same schedule as
:func:`medsplit.train.loop.train`, executing only what the party owns (see
:mod:`medsplit.train.parties` for who holds what and which control messages cross)."""

from __future__ import annotations

import copy
import math
import os
import signal
import socket
import sys
import time

import numpy as np
import torch

from medsplit.split import Channel
from medsplit.split.channel import MessageError
from medsplit.split.codecs import codecs_for
from medsplit.train.checkpoint import load_checkpoint, save_checkpoint
from medsplit.train.party_control import Control, handshake
from medsplit.train.party_plan import AGGREGATOR, SERVER
from medsplit.train.party_report import write_party_report
from medsplit.train.precision import autocast_for, compute_dtype
from medsplit.train.protocols import PROTOCOLS
from medsplit.train.server_view import batch_spec, server_loss, server_table

FAULT_ENV = "MEDSPLIT_FAULT"  # tests: "client1:epoch=1:step=2" kills that party there (SIGKILL)


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


class PartyRun:
    """The state of one party's run; :meth:`run` runs it to the end.

    Args:
        cfg: the run's config.
        name: this party's name (``server`` or ``client<k>``).
        rank: 0 for the server, k + 1 for hospital k.
        names: every party's name by rank (:func:`~medsplit.train.party_plan.party_names`).
        run_dir: the run folder (the evaluating hospital writes the run's outputs there).
        party_dir: this party's checkpoint folder.
        device: the torch device this party computes on.
        transport: this party's :class:`~medsplit.transport.Transport`.
        own_data: the hospital trains on all of its own folder's training rows.
        resume: continue from this party's last checkpoint.
        quiet: no console output beyond errors.
        started: the run's start time (``time.time()``).
    """

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
        start_epoch, self.parties = handshake(self.control, self.cfg, self.name, self.info, self.hospitals, start_epoch)
        return start_epoch

    def _load_data(self):
        """A hospital's task and training rows; the server has neither."""
        from medsplit.train.schedule import client_indices
        from medsplit.train.tasks import make_task

        task = make_task(self.cfg, self.device)
        if self.own_data:
            return task, np.arange(len(task.split("train"))), None
        parts = client_indices(self.cfg, task)
        return task, parts[self.k], parts

    # ---- the run ---------------------------------------------------------------------
    def run(self) -> dict | None:
        from medsplit.train.schedule import learning_rate, make_optimizer_factory

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
                               transport=self.transport, local=frozenset(hosted), device=str(self.device),
                               compute_dtype=compute_dtype(cfg.train, self.device))
        from medsplit.train.tasks import TASKS

        labels_may_cross = TASKS[cfg.task].labels_may_cross
        self.protocol = PROTOCOLS[cfg.split.protocol](table, cfg.split.cut, cfg.split.clients, make_optimizer_factory(cfg),
                                                      loss_fn, self.channel, optimizer_handover=cfg.split.optimizer_handover,
                                                      labels_may_cross=labels_may_cross)
        self.autocast = autocast_for(cfg.train, self.device)
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
        from medsplit.train.schedule import augmentation_generator, hospital_batches

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
            own = hospital_batches(cfg, self.task, self.indices, epoch, self.k)
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
        return write_party_report(self, final, test, reports)
