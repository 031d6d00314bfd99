"""The training run, written once for every placement: parties in one process, each party in its
own OS process (gloo), or at FLARE sites.

Read :meth:`Runner.run` top to bottom: load the data this process holds, build the model from
the run's seed, then per epoch set the learning rate, train the protocol's schedule, validate,
write the history, select the tested epoch and checkpoint; finally test the selected model once
and write the run record. Everything that depends on where the parties are goes through a
:class:`Coordinator` (how parties meet: batch counts, losses, the selected epoch, the final
accounting) and the Channel's transport. The in-process run is the case where every party is
local (:class:`medsplit.train.loop.LocalCoordinator`); the party processes of gloo and FLARE use
:class:`medsplit.train.party_run.ControlCoordinator`. :class:`RunHooks` lets a placement change
one step without copying the epoch (FLARE's hijack-detector probe rounds).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from medsplit.atomic import write_atomic
from medsplit.config.dropout_schedule import parse_dropout
from medsplit.tracking import TrackedRun, Tracker, start_tracking
from medsplit.train import run_folder
from medsplit.train.checkpoint import CHECKPOINT, save_checkpoint, save_weights
from medsplit.train.outputs import write_outputs
from medsplit.train.precision import autocast_for, compute_dtype
from medsplit.train.protocols import protocol_class
from medsplit.train.records import epoch_rows, json_default, run_record
from medsplit.train.roster import Roster
from medsplit.train.schedule import augmentation_generator, hospital_batches, learning_rate, make_optimizer_factory
from medsplit.transport.base import TransportError

__all__ = ["Coordinator", "RunHooks", "Runner", "checkpoint_payload", "evaluate_split", "reseed_epoch", "select_epoch",
           "track_run"]


@torch.no_grad()
def evaluate_split(model, task, split: str, batch_size: int, autocast) -> tuple[dict, float]:
    """Task metrics and mean loss of ``model`` on ``task``'s ``split`` (eval mode, restored after)."""
    model.eval()
    metrics = task.new_metrics()
    losses = []
    n = len(task.split(split))
    for idx in torch.arange(n).split(batch_size):
        batch = task.batch(split, idx, train=False, generator=None)
        with autocast():
            out = model(batch.x)
        losses.append(float(task.loss(out, batch.y)) * len(idx))
        task.update_metrics(metrics, out.float(), batch)
    model.train()
    return metrics.aggregate(), sum(losses) / n


def reseed_epoch(seed: int, epoch: int) -> None:
    """Reseed torch's global generator for ``epoch``. Every random draw of an epoch is a function of
    (seed, epoch, hospital): each hospital augments from its own generator, anything on the global
    generator (dropout, say) draws from this reseed, so a resumed run replays the epochs an
    uninterrupted one trains, and a hospital in its own process draws what it draws in one."""
    torch.manual_seed(seed * 104_729 + epoch + 1)


def select_epoch(best: dict, epoch: int, scores: dict, val_loss: float, metric: str) -> tuple[bool, dict]:
    """Whether ``epoch`` (counted from 0) is the best so far on validation ``metric`` (the negative
    validation loss where the task has no such metric), and the tested epoch after it."""
    score = scores.get(metric, -val_loss)
    if score is not None and score > best["score"]:
        return True, {"epoch": epoch + 1, "score": float(score)}
    return False, best


def checkpoint_payload(runner: Runner, epoch: int) -> dict:
    """What one party saves after ``epoch``: its parties' weights and optimiser state, its byte
    counts, the history and tested epoch so far (with the tested epoch's weights), the config."""
    return {"protocol": runner.protocol.state(), "bytes": runner.channel.byte_rows(None), "history": runner.history,
            "best": runner.best, "best_weights": runner.best_weights, "epoch": epoch, "roster": runner.roster.state(),
            "elapsed_s": time.time() - runner.t0, "config": runner.cfg.to_dict(),
            "config_sha256": run_folder.config_hash(runner.cfg.to_dict())}


def track_run(cfg, run_dir: Path) -> Tracker:
    """The run's TensorBoard and/or MLflow tracker (``output.tensorboard``, ``output.mlflow``),
    told what the run is."""
    run = TrackedRun(name=cfg.run_name(), task=cfg.task, epochs=cfg.train.epochs, params=cfg.to_dict(),
                     config_yaml=cfg.to_yaml(), report=Path(cfg.output.reports_dir) / f"{cfg.run_name()}.html")
    return start_tracking(run, run_dir, tensorboard=cfg.output.tensorboard, mlflow=cfg.output.mlflow)


class RunHooks:
    """What a placement may change inside an epoch without copying it (default: nothing)."""

    def started(self, runner: Runner) -> None:
        """The protocol exists (install defences on it here)."""

    def plan_batches(self, runner: Runner, epoch: int, own: dict[int, list[torch.Tensor]]) -> dict[int, list[torch.Tensor]]:
        """The batches this process's hospitals announce and train this epoch (extra rounds go here)."""
        return own

    def epoch(self, runner: Runner) -> contextlib.AbstractContextManager:
        """A context around the protocol's schedule of one epoch."""
        return contextlib.nullcontext()

    def train_step(self, runner: Runner, model, k: int, idx: torch.Tensor, draw) -> float | None:
        """One training step of hospital ``k``'s chain on ``draw()``'s batch; returns the loss to
        record (``None``: none)."""
        x, y = draw()
        with runner.autocast():
            loss, _ = model.train_step(x, y)
        return loss


class Coordinator:
    """How the parties of a run meet; one per process. A subclass says what its process holds and
    how it exchanges the run's metadata with the others (never tensors: those cross the Channel).

    Set by :meth:`load_data`: ``task`` (``None`` where no data is opened), ``training_rows``
    (hospital party -> its training rows, for the hospitals this process runs), ``all_clients``
    (every hospital's rows, for the run record) and ``n_trainers`` (hospital parties that train).
    """

    task = None
    training_rows: dict[int, np.ndarray] = {}
    all_clients: list = []
    n_trainers = 0
    labels_may_cross = True
    tracks = False  # experiment tracking (TensorBoard, MLflow: medsplit.tracking) of the history and test (in-process runs)

    # start-up
    def load_checkpoint(self) -> dict | None:
        """This process's checkpoint to resume from; ``None`` on a fresh start."""
        raise NotImplementedError

    def agree_start_epoch(self, ck: dict | None) -> int:
        """The epoch every party starts from (checked against the others')."""
        raise NotImplementedError

    def load_data(self) -> None:
        raise NotImplementedError

    def build_table(self):
        """The whole model's stage table, built after the run's seed was set."""
        raise NotImplementedError

    def loss_fn(self):
        raise NotImplementedError

    def make_channel(self):
        raise NotImplementedError

    def ready(self, runner: Runner) -> None:
        """The protocol exists; the run may write its folder."""

    # an epoch
    def share_batch_counts(self, epoch: int, own: dict[int, list]) -> list[list[torch.Tensor]]:
        """Every hospital's batches of ``epoch`` from this process's own (elsewhere: sizes only)."""
        raise NotImplementedError

    def trains(self, k: int) -> bool:
        """Whether this process runs hospital ``k``'s steps."""
        raise NotImplementedError

    def train_inputs(self, k: int, idx: torch.Tensor, generator, epoch: int):
        """``(x, y)`` of one training step of hospital ``k`` (shapes only where no data is held)."""
        raise NotImplementedError

    def evaluate(self, runner: Runner, split: str):
        """``(metrics, loss)`` of the evaluation model on ``split`` where it is evaluated; ``None`` elsewhere."""
        raise NotImplementedError

    def gather_losses(self, runner: Runner, losses: dict) -> dict | None:
        """Every party's training losses where the history is kept; ``None`` elsewhere."""
        raise NotImplementedError

    def share_selection(self, runner: Runner, is_best: bool | None) -> bool:
        """Whether this epoch is the tested one so far, as the party keeping the history decided."""
        raise NotImplementedError

    def epoch_done(self, epoch: int, val_loss: float, scores: dict, metric: str) -> None:
        """Console output after an epoch (where the history is kept)."""

    def progress(self, epoch: int, total: int):
        """A progress bar over the epoch's ``total`` steps (``update``, ``set_postfix``, ``close``)."""
        raise NotImplementedError

    def say(self, text: str) -> None:
        """One console line (a hospital left or came back)."""
        print(text, flush=True)

    def may_lose(self, k: int, error: Exception) -> bool:
        """Whether ``error`` in a step of hospital ``k`` means the hospital is gone (rather than a
        failure that ends the run). Only the server decides, and only for a link that stopped
        answering, never for a message that broke the rules (those stay errors)."""
        return False

    def share_roster(self, roster: Roster) -> None:
        """Bring the other processes to this one's view of who is present (see :class:`Roster`)."""

    # the end
    def gather_reports(self, runner: Runner, final) -> dict | None:
        """Where the run record is written: ``{"byte_rows": phase -> rows, "test_by_group": ...,
        "extra": more record keys}`` from every party's accounting; ``None`` elsewhere."""
        raise NotImplementedError

    def output_model(self, final) -> contextlib.AbstractContextManager:
        """The model the report's own forwards go through."""
        return contextlib.nullcontext(final)

    def finished(self, runner: Runner, record: dict) -> None:
        """The run record is written."""


class Runner:
    """One process's share of a training run.

    Args:
        cfg: the run's config.
        coordinator: how this process meets the other parties (and what it holds).
        run_dir: the run folder (the reporting party writes ``metrics.json`` and the report there).
        checkpoint_dir: where this process keeps its checkpoint.
        device: the torch device this process computes on.
        started: the run's start time (``time.time()``).
        hooks: the placement's changes to a step (:class:`RunHooks`).
        quiet: no console output beyond errors.
    """

    def __init__(self, cfg, coordinator: Coordinator, run_dir: Path, checkpoint_dir: Path, device, started: float,
                 hooks: RunHooks | None = None, quiet: bool = False):
        self.cfg, self.coordinator, self.run_dir, self.checkpoint_dir = cfg, coordinator, Path(run_dir), Path(checkpoint_dir)
        self.device, self.t0, self.hooks, self.quiet = device, started, hooks or RunHooks(), quiet
        # The runner reads the config; what it calls gets explicit values (issue 26: the config is
        # read near the top, so a lower layer cannot depend on a setting its signature hides).
        self.autocast = autocast_for(compute_dtype(cfg.train.amp, cfg.train.cpu_amp, device), device)

    @property
    def task(self):
        return self.coordinator.task

    def run(self, stop_after_epoch: int | None = None) -> dict | None:
        """Train to the end (or until ``stop_after_epoch``); the reporting party returns the run record."""
        cfg, co = self.cfg, self.coordinator
        ck = co.load_checkpoint()
        start_epoch = co.agree_start_epoch(ck)
        co.load_data()
        torch.manual_seed(cfg.train.seed)  # one init, the same in every process and for every protocol
        table = co.build_table().to(self.device)
        if self.device.type == "cuda" and cfg.train.channels_last:
            table = table.to(memory_format=torch.channels_last)
        self.channel = co.make_channel()
        optimizer = make_optimizer_factory(cfg.train.optimizer, cfg.train.lr, cfg.train.weight_decay)
        self.protocol = protocol_class(cfg.split.protocol)(
            table, cfg.split.cut, cfg.split.clients, optimizer, co.loss_fn(), self.channel,
            optimizer_handover=cfg.split.optimizer_handover, labels_may_cross=co.labels_may_cross,
            microbatches=cfg.split.microbatches)
        self.roster = Roster(self.protocol.n_party_clients(), cfg.split.min_hospitals, self.protocol.history_keeper(),
                             parse_dropout(cfg.split.dropout, cfg.split.clients))
        self.roster.exchange = co.share_roster
        self.protocol.roster = self.roster
        co.ready(self)
        self.history, self.best, self.best_weights = [], {"epoch": -1, "score": -float("inf")}, None
        if ck is not None:
            self._restore(ck)
        self.hooks.started(self)
        tracker = track_run(cfg, self.run_dir) if co.tracks else Tracker([])  # TensorBoard and/or MLflow

        for epoch in range(start_epoch, cfg.train.epochs):
            t_epoch = time.time()
            self.channel.at(epoch=epoch)
            lr = learning_rate(cfg.train.lr, cfg.train.schedule, epoch, cfg.train.epochs)
            for party in self.protocol.local_parties:
                for group in party.optimizer.param_groups if party.optimizer else []:
                    group["lr"] = lr
            for k in self.roster.rejoin_at(epoch):  # the split.dropout schedule brings it back
                self.protocol.rejoin(k)
                co.say(f"client{k} rejoined at epoch {epoch + 1} with the current weights; "
                       f"{len(self.roster.members())} of {self.roster.n} hospitals take part")
            losses = self._train_epoch(epoch)
            self.roster.sync()  # who evaluates, and whose losses the history waits for
            val = co.evaluate(self, "val")  # at the evaluating hospital; None elsewhere
            all_losses = co.gather_losses(self, losses)  # every party's, where the history is kept
            is_best = None
            if all_losses is not None:
                val_metrics, val_loss = val
                scores = self.task.summarise(val_metrics)
                self.history += epoch_rows(self.protocol, epoch, all_losses, co.n_trainers, lr, val_loss, scores,
                                           time.time() - t_epoch, self.roster)
                is_best, self.best = select_epoch(self.best, epoch, scores, val_loss, self.task.select_metric)
                tracker.epoch(self.history, epoch + 1)
                co.epoch_done(epoch, val_loss, scores, self.task.select_metric)
            if co.share_selection(self, is_best):
                self.best_weights = copy.deepcopy(self.protocol.eval_state_dict())
            save_checkpoint(self.checkpoint_dir, checkpoint_payload(self, epoch))
            if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < cfg.train.epochs:
                tracker.close()
                return None
        return self._finish(tracker)

    def _train_epoch(self, epoch: int) -> dict[int, list[float]]:
        """The protocol's schedule of one epoch; every training loss this process computed, per hospital."""
        cfg, co, channel = self.cfg, self.coordinator, self.channel
        roster = self.roster
        for k in roster.members():
            if roster.scheduled_to_leave(k, epoch, 0):  # after=0: takes no part in this epoch at all
                self._leave(k, epoch, 0, "split.dropout schedule")
        class_balanced = cfg.train.sampling == "class-balanced"
        own = {k: hospital_batches(self.task, rows, epoch, k, cfg.train.batch_size, cfg.train.seed, class_balanced)
               for k, rows in co.training_rows.items() if roster.present(k)}
        own = self.hooks.plan_batches(self, epoch, own)
        batches = co.share_batch_counts(epoch, own)
        generators = {k: augmentation_generator(cfg.train.seed, epoch, k, self.device) for k in own}
        reseed_epoch(cfg.train.seed, epoch)
        # self.losses: a multi-process placement reports a relay turn's losses when the turn ends
        self.losses = losses = {k: [] for k in range(len(batches))}
        bar = co.progress(epoch, sum(len(b) for b in batches))
        done = dict.fromkeys(range(len(batches)), 0)  # each hospital's batches so far this epoch

        def leave(k: int, why: str) -> None:
            self._leave(k, epoch, done[k], why)
            losses[k].clear()  # the batches it trained are in the server's weights; its own losses left with it

        def step(model, k, idx):
            if not roster.present(k) or not co.trains(k):
                channel.next_step()  # gone, or another process's hospital: nothing of this step runs here
                return
            done[k] += 1
            try:
                loss = self.hooks.train_step(self, model, k, idx, lambda: co.train_inputs(k, idx, generators.get(k), epoch))
            except TransportError as e:
                if not (roster.tolerant and co.may_lose(k, e)):
                    raise
                done[k] -= 1  # this batch did not train
                channel.next_step()
                leave(k, str(e).splitlines()[0][:300])
                return
            # A NaN across processes is a step whose loss another party computed; in one process a
            # NaN is the loss itself and is kept.
            if loss is not None and not (channel.distributed and math.isnan(loss)):
                losses[k].append(loss)
            if roster.scheduled_to_leave(k, epoch, done[k], last=done[k] == len(batches[k])):
                leave(k, "split.dropout schedule")
            bar.update(1)
            bar.set_postfix(client=k, loss=f"{loss:.4f}" if loss is not None else "-")

        with self.hooks.epoch(self):
            self.protocol.run_epoch(batches, step)
        bar.close()
        return losses

    def _leave(self, k: int, epoch: int, after: int, why: str) -> None:
        """Hospital ``k`` leaves ``epoch`` after ``after`` of its batches (said on the console)."""
        dep = self.roster.leave(k, epoch, after, why)
        self.coordinator.say(f"client{k} dropped out in epoch {epoch + 1} after {dep.after} of its batches ({why}); "
                             f"{len(self.roster.members())} of {self.roster.n} hospitals go on")

    def _restore(self, ck: dict) -> None:
        self.protocol.load_state(ck["protocol"])
        self.channel.load_byte_rows(ck["bytes"])
        self.history, self.best = ck["history"], dict(ck["best"])
        self.roster.load_state(ck.get("roster"))
        # checkpoints of in-process runs before 2026-12-07 kept the tested epoch's weights in "best"
        self.best_weights = ck["best_weights"] if "best_weights" in ck else self.best.pop("weights", None)
        self.t0 -= ck["elapsed_s"]

    def _finish(self, tracker) -> dict | None:
        """Test the selected model once (nothing before touched the test split) and write the run record."""
        cfg, co = self.cfg, self.coordinator
        # The test's bytes belong to the last epoch, also when a resumed run trains no epoch before testing.
        self.channel.at(epoch=cfg.train.epochs - 1)
        final = self.protocol.eval_model()
        if self.best_weights:
            for part, owner in final.chain:
                if self.channel.hosts(owner.name):
                    part.load_state_dict({k: self.best_weights[k] for k in part.state_dict()})
        test = co.evaluate(self, "test")
        accounting = co.gather_reports(self, final)  # the reporting party gets every party's byte counts
        record = None
        if accounting is not None:
            save_weights(self.run_dir, self.protocol.eval_state_dict())
            record = run_record(self, test, accounting["byte_rows"], accounting.get("test_by_group"))
            record.update(accounting.get("extra", {}))
            write_atomic(self.run_dir / "metrics.json", json.dumps(record, indent=2, default=json_default))
            with co.output_model(final) as model:
                write_outputs(self.run_dir, Path(cfg.output.reports_dir), record, self.task, model, seed=cfg.train.seed,
                              config_yaml=cfg.to_yaml(), keep_checkpoint=cfg.output.keep_checkpoint, quiet=self.quiet)
            # after the report: MLflow stores it
            tracker.finish(record, self.task.report_examples(final, test[0]) if tracker.backends else None)
            co.finished(self, record)
        if not cfg.output.keep_checkpoint:
            # Finished: the weights are in model.safetensors; the checkpoint (this process's weights and
            # optimiser state) would only let the run continue, which output.keep_checkpoint asks for.
            (self.checkpoint_dir / CHECKPOINT).unlink(missing_ok=True)
        return record

