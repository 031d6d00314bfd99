"""MLflow backend (``output.mlflow=URI``): one MLflow run per medsplit run, in the experiment
``medsplit-<task>``; the config as params, every epoch's metrics, the test metrics with their
intervals, example images, and the report, metrics.json and weights as artifacts.

Only MLflow's client is used (``mlflow-skinny`` is enough), so it runs beside a remote tracking
server as well as a local file store.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from medsplit.config import ConfigError
from medsplit.tracking import TrackedRun
from medsplit.tracking.readings import epoch_scalars, run_params, final_scalars, tracked_images

__all__ = ["MlflowTracker", "log_batches", "mlflow_client"]

#: Entries per ``log_batch`` call: MLflow takes at most 100 params (1,000 entries in all) in one.
_BATCH = 100


def mlflow_client(uri: str, key: str = "config key 'output.mlflow'"):
    """An MLflow client of ``uri``; ``key`` names the setting that asked for it in the error."""
    try:
        from mlflow.tracking import MlflowClient  # optional extra mlflow (pip install 'medsplit[mlflow]')
    except ImportError:
        raise ConfigError(f"{key} = {uri!r} needs MLflow, which is not installed: "
                          "pip install 'medsplit[mlflow]' (or leave it empty)") from None
    if uri.startswith("file:") or "://" not in uri:
        # MLflow 3 refuses its file store unless this is set; naming a file URI is asking for it.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=uri)


def log_batches(client, run_id: str, params: dict | None = None, metrics: dict | None = None, step: int = 0) -> None:
    """Log ``params`` (as text) and ``metrics`` (at ``step``) in calls of at most MLflow's batch size."""
    from mlflow.entities import Metric, Param  # optional extra mlflow (pip install 'medsplit[mlflow]')

    now = int(time.time() * 1000)
    entries = [Param(k, str(v)) for k, v in (params or {}).items()]
    entries += [Metric(k, v, now, step) for k, v in (metrics or {}).items()]
    for i in range(0, len(entries), _BATCH):
        chunk = entries[i:i + _BATCH]
        client.log_batch(run_id, params=[e for e in chunk if isinstance(e, Param)],
                         metrics=[e for e in chunk if isinstance(e, Metric)])


class MlflowTracker:
    """Log one run to the MLflow tracking server or store at ``uri``.

    Args:
        uri: the tracking URI (``output.mlflow``).
        run: the run (params, experiment and run name, where the report goes).
        run_dir: the run directory (weights and metrics.json are taken from it at the end).
    """

    def __init__(self, uri: str, run: TrackedRun, run_dir: Path) -> None:
        self.client = mlflow_client(uri)  # first: it names the extra when MLflow is missing
        self.run_dir = Path(run_dir)
        self.report = run.report
        name = f"medsplit-{run.task}"
        try:
            experiment = self.client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
            started = self.client.create_run(experiment_id, run_name=run.name,
                                             tags={"medsplit.task": run.task, "medsplit.run_dir": str(self.run_dir)})
        except Exception as e:  # MLflow raises its own exception types for an unreachable or refused store
            raise ConfigError(f"config key 'output.mlflow' = {uri!r}: MLflow cannot start a run there ({e})") from e
        self.run_id = started.info.run_id
        log_batches(self.client, self.run_id, params=run_params(run.params))
        self.finished = False

    def epoch(self, history: list[dict], epoch: int) -> None:
        log_batches(self.client, self.run_id, metrics=epoch_scalars(history, epoch), step=epoch)

    def finish(self, result: dict, images: dict | None) -> None:
        log_batches(self.client, self.run_id, metrics=final_scalars(result), step=int(result.get("selected_epoch") or 0))
        for name, image in tracked_images(images).items():
            self.client.log_image(self.run_id, image, artifact_file=f"images/{name}.png")
        for path, folder in ((self.report, "report"), (self.run_dir / "metrics.json", None),
                             (self.run_dir / "model.safetensors", "weights"), (self.run_dir / "config.yaml", None)):
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path), artifact_path=folder)
        self.client.set_terminated(self.run_id, "FINISHED")
        self.finished = True

    def close(self) -> None:
        # A run that ends without finish() (interrupted by stop_after_epoch, or an error) is left
        # unfinished in MLflow's terms, not marked as finished.
        if not self.finished:
            self.client.set_terminated(self.run_id, "KILLED")
            self.finished = True
