"""Tracking of an attack run (``python -m medsplit attack``): every row's numbers as scalars, the
reconstructions as images (originals above each defence's reconstructions), and in MLflow the
profile as params and the report and its JSON as artifacts.

An attack run has no training config, so it is logged by one call once it has written its report,
not through :class:`~medsplit.tracking.Tracker`.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from medsplit.tracking.mlflow_tracker import log_batches, mlflow_client
from medsplit.tracking.readings import finite_number, run_params, tracked_images

__all__ = ["attack_images", "attack_scalars", "track_attack"]


def attack_scalars(rows: list[dict]) -> dict[str, float]:
    """``{"<attack>/<defence>/<strength>/seed<seed>/<quantity>": value}`` for every finite number of
    every row (booleans and text left out)."""
    out = {}
    for row in rows:
        run = f"{row['attack']}/{row['defence']}/{row.get('strength', 0)}/seed{row.get('seed', 0)}"
        for key, value in row.items():
            number = None if key in ("strength", "seed") else finite_number(value)
            if number is not None:
                out[f"{run}/{key}"] = number
    return out


def attack_images(results: dict) -> dict:
    """Name -> HxWx3 uint8: per attack setting, the held-out originals above its reconstructions."""
    out = {}
    originals = results["originals"].numpy()
    for key, extra in results["extras"].items():
        if extra.get("recon") is not None:
            grid = tracked_images({"originals": originals, "recon": {key: extra["recon"].numpy()}})
            out.update(grid)
    return out


def track_attack(results: dict, report: Path, tensorboard_dir: Path | None = None, mlflow_uri: str = "") -> None:
    """Log one finished attack run to TensorBoard (``tensorboard_dir``) and/or MLflow (``mlflow_uri``).

    Args:
        results: what :func:`medsplit.attacks.harness.evaluate` returned.
        report: the HTML report written from it (its ``.json`` beside it goes to MLflow too).
        tensorboard_dir: folder for the event files; ``None``: no TensorBoard.
        mlflow_uri: MLflow tracking URI; empty: no MLflow.
    """
    scalars, images = attack_scalars(results["rows"]), attack_images(results)
    if tensorboard_dir is not None:
        with SummaryWriter(str(tensorboard_dir)) as writer:
            writer.add_text("report", str(report))
            for tag, value in scalars.items():
                writer.add_scalar(tag, value, 0)
            for tag, image in images.items():
                writer.add_image(tag, image, 0, dataformats="HWC")
    if mlflow_uri:
        _to_mlflow(results, Path(report), mlflow_uri, scalars, images)


def _to_mlflow(results: dict, report: Path, uri: str, scalars: dict, images: dict) -> None:
    client = mlflow_client(uri, key="--mlflow")
    name = f"medsplit-attack-{results['task']}"
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    run_id = client.create_run(experiment_id, run_name=report.stem, tags={"medsplit.task": results["task"]}).info.run_id
    params = {"task": results["task"], "profile": results["profile"], "device": results["device"],
              **run_params(results.get("profile_config") or {}, "profile.")}
    log_batches(client, run_id, params=params, metrics=scalars)
    for tag, image in images.items():
        client.log_image(run_id, image, artifact_file=f"images/{tag}.png")
    for path in (report, report.with_suffix(".json")):
        if path.is_file():
            client.log_artifact(run_id, str(path), artifact_path="report")
    client.set_terminated(run_id, "FINISHED")
