"""Experiment tracking of a training run: one small interface, any number of backends.

The training loop talks to a :class:`Tracker` only::

    tracker = start_tracking(cfg, run_dir)   # params (and the config) of the run
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
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medsplit.config import Config

__all__ = ["Tracker", "start_tracking"]


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


def start_tracking(cfg: Config, run_dir: Path) -> Tracker:
    """The tracker of one run, its backends started with the run's params.

    Args:
        cfg: the resolved config (``output.tensorboard``, ``output.mlflow``).
        run_dir: the run directory (TensorBoard writes in ``tb/`` there; MLflow takes the weights
            and metrics.json from it).
    """
    backends: list[Any] = []
    if cfg.output.tensorboard:
        # imports torch: a run without TensorBoard does without it
        from medsplit.tracking.tensorboard import TensorBoardTracker

        backends.append(TensorBoardTracker(cfg, Path(run_dir)))
    if cfg.output.mlflow:
        from medsplit.tracking.mlflow_tracker import MlflowTracker  # optional extra mlflow: only with output.mlflow set

        backends.append(MlflowTracker(cfg.output.mlflow, cfg, Path(run_dir)))
    return Tracker(backends)
