"""Experiment tracking of a training run: one small interface, any number of backends.

The training loop talks to a :class:`Tracker` only::

    tracker = start_tracking(run, run_dir, tensorboard=True, mlflow="")  # the run's params
    tracker.epoch(history, epoch)            # that epoch's rows of the history, as scalars
    tracker.finish(result, images)           # test metrics with their 95% intervals, example images,
                                             # and (MLflow) the report, metrics.json and the weights

Backends, each switched on by its config key:

* ``output.tensorboard`` (default on): :class:`~medsplit.tracking.tensorboard.TensorBoardTracker`,
  event files in ``<run directory>/tb``.
* ``output.mlflow`` (default empty = off): :class:`~medsplit.tracking.mlflow_tracker.MlflowTracker`,
  to the tracking URI it names; needs the ``mlflow`` extra.

What is logged is computed once, in :mod:`medsplit.tracking.readings`, so the backends agree
on names: ``val_auc/all``, ``train_loss/client0``, ``test/auc``, ``test/auc_ci_low`` ...
What a tracker knows of the run is a :class:`TrackedRun` of plain values (the runner fills it in
from the config), so tracking never reads the config itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["TrackedRun", "Tracker", "start_tracking"]


@dataclass(frozen=True)
class TrackedRun:
    """What the trackers log of a run besides its history and results.

    Args:
        name: the run's name (the MLflow run's name).
        task: the task (the MLflow experiment is ``medsplit-<task>``).
        epochs: the run's epochs (the step its test metrics are logged at).
        params: the resolved config as nested ``{section: {key: value}}`` (``Config.to_dict()``),
            logged as flat params: a tracker records every setting, it decides nothing by them.
        config_yaml: the same config as YAML text (TensorBoard's text tab).
        report: the run's HTML report (an MLflow artifact once it exists).
    """

    name: str
    task: str
    epochs: int
    params: dict
    config_yaml: str
    report: Path


class Tracker:
    """Forwards each call to every enabled backend; with none it does nothing.

    Args:
        backends: objects with ``epoch(history, epoch)``, ``finish(result, images)`` and ``close()``.
    """

    def __init__(self, backends: list[Any]) -> None:
        self.backends = list(backends)

    def epoch(self, history: list[dict], epoch: int) -> None:
        """Log the rows of ``history`` whose ``epoch`` is ``epoch`` (1-based)."""
        for backend in self.backends:
            backend.epoch(history, epoch)

    def finish(self, result: dict, images: dict | None = None) -> None:
        """Log the finished run's test metrics (with ``result["test_intervals"]`` when present)
        and example images (``task.report_examples`` output or ``{name: HxWx3 uint8}``), then close."""
        for backend in self.backends:
            backend.finish(result, images)
        self.close()

    def close(self) -> None:
        """Flush and close every backend (a run that stops early calls only this)."""
        for backend in self.backends:
            backend.close()


def start_tracking(run: TrackedRun, run_dir: Path, tensorboard: bool, mlflow: str) -> Tracker:
    """The tracker of one run, its backends started with the run's params.

    Args:
        run: what is logged of the run.
        run_dir: the run directory (TensorBoard writes in ``tb/`` there; MLflow takes the weights
            and metrics.json from it).
        tensorboard: ``output.tensorboard``.
        mlflow: ``output.mlflow``, the tracking URI (empty: no MLflow).
    """
    backends: list[Any] = []
    if tensorboard:
        # imports torch: a run without TensorBoard does without it
        from medsplit.tracking.tensorboard import TensorBoardTracker

        backends.append(TensorBoardTracker(run, Path(run_dir)))
    if mlflow:
        from medsplit.tracking.mlflow_tracker import MlflowTracker  # optional extra mlflow: only with output.mlflow set

        backends.append(MlflowTracker(mlflow, run, Path(run_dir)))
    return Tracker(backends)
