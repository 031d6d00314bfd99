"""``medsplit train``: check a run, then train it where its parties are. Every placement runs the
same :class:`~medsplit.train.runner.Runner`; this module is the in-process placement (every party
in this process, :class:`LocalCoordinator`) and the dispatch to the others through
:data:`medsplit.transport.PLACEMENTS` (gloo party processes, FLARE's simulator)."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from medsplit.atomic import write_atomic
from medsplit.config import Config, ConfigError, validate
from medsplit.models import build_model
from medsplit.split import Channel
from medsplit.split.codecs import codecs_for
from medsplit.train import run_folder
from medsplit.train.by_group import evaluate_by_group
from medsplit.train.checkpoint import load_checkpoint
from medsplit.train.console import RunEstimate, announce_data
from medsplit.train.device import resolve_device
from medsplit.train.protocols import protocol_class
from medsplit.train.runner import Coordinator, Runner, evaluate_split
from medsplit.train.schedule import client_indices
from medsplit.tasks import TASKS, TaskSettings, make_task
from medsplit.transport import placement
from medsplit.yaml_file import load_yaml

__all__ = ["LocalCoordinator", "check_cut", "evaluate_split", "train"]


def check_cut(cfg: Config) -> None:
    """Reject an illegal ``split.cut`` from the model's stage table built on the meta device (no
    memory, no weights read), before any image is decoded."""
    if not protocol_class(cfg.split.protocol).split:  # the unsplit baselines have no cut
        return
    settings, task = TaskSettings.from_config(cfg), TASKS[cfg.task]
    kwargs = task.model_kwargs(settings, task.num_outputs(settings))
    with torch.device("meta"):
        table = build_model(cfg.model.name, **kwargs)
    try:
        table.plan(cfg.split.cut)
    except ValueError as e:
        raise ConfigError(f"config key 'split.cut': {e}") from None


def train(cfg: Config, resume: Path | None = None, stop_after_epoch: int | None = None, quiet: bool = False,
          overwrite: bool = False, allow_change: tuple[str, ...] = ()) -> Path:
    """Train ``cfg`` (or continue the run in ``resume``); returns the run directory.

    Everything that can be checked without data (config ranges, cut, run folder, resume
    compatibility) is checked before any image is decoded, and nothing is written before the
    data has loaded: a rejected run leaves no folder behind and never touches another run's files.

    Args:
        cfg: the resolved config.
        resume: a run folder whose checkpoint to continue; ``cfg`` must equal the config the
            checkpoint was trained under, except for keys named in ``allow_change``.
        stop_after_epoch: interrupt the run after that epoch's checkpoint (used by tests to show
            that resuming reaches the same result).
        quiet: no progress bars or summary lines.
        overwrite: start afresh in a run folder that already holds files (they are removed first).
        allow_change: keys (from :data:`medsplit.train.run_folder.RESUMABLE`) that may differ from
            the checkpoint's config on resume, e.g. ``("train.epochs",)``.
    """
    t0 = time.time()
    validate(cfg)  # a Config built in code gets the checks a loaded one had
    check_cut(cfg)
    run_dir = Path(resume) if resume else Path(cfg.output.runs_dir) / cfg.run_name()
    if cfg.split.transport != "inprocess":  # one process (or site) per party
        if not resume:
            run_folder.check_fresh(run_dir, overwrite)
            if overwrite:
                run_folder.clear(run_dir)
        return placement(cfg.split.transport)(cfg, run_dir, resume=resume is not None, quiet=quiet)
    ck = None
    if resume:
        if overwrite:
            raise ConfigError("--overwrite starts a run afresh and --resume continues one; pass only one")
        ck = load_checkpoint(run_dir)
        saved = ck.get("config") or _saved_config(run_dir)
        run_folder.check_resume(run_dir, saved, cfg, allow_change)
        if ck["epoch"] + 1 > cfg.train.epochs:
            raise ConfigError(f"cannot resume {run_dir} with train.epochs={cfg.train.epochs}: it has already trained {ck['epoch'] + 1} epochs")
    else:
        run_folder.check_fresh(run_dir, overwrite)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    coordinator = LocalCoordinator(cfg, run_dir, device, ck, fresh_start=not resume and overwrite, quiet=quiet)
    Runner(cfg, coordinator, run_dir, run_dir, device, t0, quiet=quiet).run(stop_after_epoch)
    return run_dir


class LocalCoordinator(Coordinator):
    """Every party in this process: nothing to exchange; this process holds all the data and reports."""

    tracks = True

    def __init__(self, cfg: Config, run_dir: Path, device, ck: dict | None, fresh_start: bool, quiet: bool):
        self.cfg, self.run_dir, self.device, self.ck, self.fresh_start, self.quiet = cfg, run_dir, device, ck, fresh_start, quiet
        self.task_settings = TaskSettings.from_config(cfg)  # what the task reads of the run, resolved once
        self.labels_may_cross = TASKS[cfg.task].labels_may_cross
        self.estimate = None  # the run's size and estimated time, printed once after its first batches

    def load_checkpoint(self) -> dict | None:
        return self.ck  # read (and checked against the config) before any data was loaded

    def agree_start_epoch(self, ck: dict | None) -> int:
        return ck["epoch"] + 1 if ck is not None else 0

    def load_data(self) -> None:
        self.task = make_task(self.task_settings, self.device)
        cfg = self.cfg
        self.all_clients = client_indices(self.task, cfg.split.clients, cfg.data.partition, cfg.data.alpha, cfg.train.seed)
        announce_data(self.task, self.all_clients, self.quiet)  # after the partition, so a setting that cannot work fails first
        pooled = protocol_class(self.cfg.split.protocol).training_rows(self.all_clients)  # centralised pools them
        self.training_rows = dict(enumerate(pooled))
        self.n_trainers = len(pooled)

    def build_table(self):
        return self.task.build_table()

    def loss_fn(self):
        return self.task.loss

    def make_channel(self) -> Channel:
        return Channel(serialise=self.cfg.split.serialise,
                       codecs=codecs_for(self.cfg.split.compress_activations, self.cfg.split.compress_gradients))

    def ready(self, runner: Runner) -> None:
        # Data, partition and cut are good: only now is anything written (an overwritten run is cleared
        # first, so its files and the new run's never mix).
        if self.fresh_start:
            run_folder.clear(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.run_dir / "config.yaml", self.cfg.to_yaml())
        start = self.ck["epoch"] + 1 if self.ck is not None else 0
        self.epochs = tqdm(total=self.cfg.train.epochs, initial=start, desc=self.cfg.run_name(), unit="epoch", disable=self.quiet)

    def share_batch_counts(self, epoch: int, own: dict[int, list]) -> list[list[torch.Tensor]]:
        return [own.get(k, []) for k in range(self.n_trainers)]  # none for a hospital that left

    def trains(self, k: int) -> bool:
        return True

    def train_inputs(self, k: int, idx: torch.Tensor, generator, epoch: int):
        batch = self.task.batch("train", idx, train=True, generator=generator)
        return batch.x, batch.y

    def evaluate(self, runner: Runner, split: str):
        return evaluate_split(runner.protocol.eval_model(), self.task, split, self.cfg.train.eval_batch_size, runner.autocast)

    def gather_losses(self, runner: Runner, losses: dict) -> dict:
        return losses

    def share_selection(self, runner: Runner, is_best: bool | None) -> bool:
        return bool(is_best)

    def say(self, text: str) -> None:
        if not self.quiet:
            tqdm.write(text)

    def epoch_done(self, epoch: int, val_loss: float, scores: dict, metric: str) -> None:
        self.epochs.update(1)
        self.epochs.set_postfix(val_loss=f"{val_loss:.4f}", **{metric: f"{scores.get(metric, float('nan')):.4f}"})

    def progress(self, epoch: int, total: int):
        source = str(self.task.data.summary().get("source", self.cfg.data.source)).split(" (")[0]
        self.estimate = self.estimate or RunEstimate(total, self.cfg.train.epochs - epoch, self.cfg.train.batch_size,
                                                     self.cfg.data.img_size, source, out=None if self.quiet else tqdm.write)
        return _TimedBar(tqdm(total=total, desc=f"epoch {epoch + 1}", unit="batch", leave=False, disable=self.quiet), self.estimate)

    def gather_reports(self, runner: Runner, final) -> dict:
        # per-site test metrics of a multi-site set
        by_group = evaluate_by_group(final, self.task, "test", self.cfg.train.eval_batch_size, runner.autocast)
        return {"byte_rows": runner.channel.byte_rows, "test_by_group": by_group}

    def finished(self, runner: Runner, record: dict) -> None:
        self.epochs.close()


class _TimedBar:
    """An epoch's progress bar that also feeds the run's time estimate."""

    def __init__(self, bar, estimate: RunEstimate):
        self.bar, self.estimate = bar, estimate

    def update(self, n: int) -> None:
        self.estimate.batch_done()
        self.bar.update(n)

    def set_postfix(self, **kwargs) -> None:
        self.bar.set_postfix(**kwargs)

    def close(self) -> None:
        self.bar.close()


def _saved_config(run_dir: Path) -> dict:
    """The config of a run whose checkpoint predates configs stored in checkpoints."""
    path = Path(run_dir) / "config.yaml"
    try:
        values = load_yaml(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read {path} ({e}); the checkpoint there stores no config to check the resume against") from e
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    return values
