"""Experiment tracking (medsplit.tracking): TensorBoard gets hparams, test metrics with their 95%
intervals and example images; MLflow (output.mlflow) gets params, per-epoch metrics, the report
and the weights, checked against a local file store."""

from __future__ import annotations

import numpy as np
import pytest

from medsplit.config import load_config
from medsplit.tracking.readings import epoch_scalars, overlay_image, run_params, final_scalars, tracked_images
from medsplit.train.runner import track_run  # what a training run starts

HISTORY = [
    {"epoch": 1, "client": "client0", "train_loss": 0.9},
    {"epoch": 1, "client": "all", "lr": 0.001, "val_loss": 0.8, "val_dice": 0.5, "val_hd95": None, "seconds": 2.0},
    {"epoch": 2, "client": "client0", "train_loss": 0.7},
    {"epoch": 2, "client": "all", "lr": 0.001, "val_loss": 0.6, "val_dice": 0.6, "seconds": 2.0},
]
RESULT = {
    "task": "lungs", "selected_epoch": 2, "test_loss": 0.55,
    "test": {"dice": {"mean": 0.71, "std": 0.1}, "jaccard": {"mean": 0.6}, "hd95": {"mean": float("nan")}, "n": 14},
    "test_intervals": {"dice": {"estimate": 0.71, "low": 0.65, "high": 0.77}, "method": "bootstrap"},
}


def _examples(n=3, size=16):
    true = np.zeros((n, size, size), bool)
    true[:, 4:12, 4:12] = True
    pred = np.roll(true, 1, axis=2)
    return {"images": np.random.default_rng(0).random((n, size, size)), "pred": pred, "true": true,
            "titles": [f"best: case{i} Dice 0.9" for i in range(n)]}


def _cfg(tmp_path, *extra):
    return load_config(None, [
        "task=lungs", "data.source=synthetic", "data.synthetic_size=40", "data.img_size=32", "model.name=unet-classic",
        "model.base_channels=4", "train.epochs=2", "train.batch_size=8", "split.cut=1", "split.clients=1",
        f"output.runs_dir={tmp_path}/runs", f"output.reports_dir={tmp_path}/reports", f"data.cache_dir={tmp_path}/cache",
        *extra])


def _tensorboard_events(tb_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tb_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    return events


def test_readings_name_every_number_once():
    assert epoch_scalars(HISTORY, 1) == {"train_loss/client0": 0.9, "lr/all": 0.001, "val_loss/all": 0.8,
                                         "val_dice/all": 0.5, "seconds/all": 2.0}  # None is left out
    scalars = final_scalars(RESULT)
    assert scalars == {"test/dice": 0.71, "test/jaccard": 0.6, "test/n": 14.0, "test/loss": 0.55,
                       "test/dice_ci_low": 0.65, "test/dice_ci_high": 0.77}  # NaN HD95 left out
    params = run_params({"split": {"cut": 1, "protocol": "sequential"}, "data": {"root": None, "sites": ["a", "b"]}})
    assert params == {"split.cut": 1, "split.protocol": "sequential", "data.root": "None", "data.sites": "['a', 'b']"}


def test_overlay_draws_both_outlines_in_the_report_colours():
    image = overlay_image(np.zeros((16, 16)), *[_examples(1)[k][0] for k in ("pred", "true")])
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8
    colours = {tuple(c) for c in image.reshape(-1, 3)}
    assert (0, 200, 0) in colours and (230, 30, 30) in colours  # true green, predicted red
    names = list(tracked_images(_examples()))
    assert names[0] == "test/00_best_case0_Dice_0.9"  # a name MLflow accepts as a file name
    grid = tracked_images({"originals": np.zeros((2, 1, 8, 8)), "recon": {"none/0/0": np.ones((2, 1, 8, 8))}})
    assert grid["reconstruction/none/0/0"].shape == (8 + 2 + 8, 8 + 2 + 8, 3)


def test_tensorboard_gets_hparams_test_metrics_with_intervals_and_images(tmp_path):
    cfg = _cfg(tmp_path)
    tracker = track_run(cfg, tmp_path / "run")
    tracker.epoch(HISTORY, 1)
    tracker.epoch(HISTORY, 2)
    tracker.finish(RESULT, _examples())
    events = _tensorboard_events(tmp_path / "run" / "tb")
    tags = events.Tags()
    assert [e.value for e in events.Scalars("val_dice/all")] == pytest.approx([0.5, 0.6])
    assert events.Scalars("test/dice_ci_low")[0].value == pytest.approx(0.65)
    assert len(tags["images"]) == 3
    plugins = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(plugins)
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(plugins["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["split.cut"].number_value == 1
    assert start.hparams["model.name"].string_value == "unet-classic"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(plugins["_hparams_/experiment"]).experiment
    assert "test/dice" in {m.name.tag for m in experiment.metric_infos}


def test_nothing_is_tracked_when_both_are_off(tmp_path):
    tracker = track_run(_cfg(tmp_path, "output.tensorboard=false"), tmp_path / "run")
    tracker.epoch(HISTORY, 1)
    tracker.finish(RESULT, _examples())
    assert tracker.backends == [] and not (tmp_path / "run").exists()


def test_mlflow_without_mlflow_installed_names_the_key_and_the_extra(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    from medsplit.config import ConfigError

    with pytest.raises(ConfigError, match=r"output.mlflow.*pip install 'medsplit\[mlflow\]'"):
        track_run(_cfg(tmp_path, "output.tensorboard=false", f"output.mlflow=file://{tmp_path}/mlruns"), tmp_path / "run")


def _mlflow_run(store):
    mlflow = pytest.importorskip("mlflow")
    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("medsplit-lungs")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def test_mlflow_logs_params_epochs_test_metrics_and_artifacts_to_a_file_store(tmp_path):
    pytest.importorskip("mlflow")
    store = f"file://{tmp_path}/mlruns"
    cfg = _cfg(tmp_path, "output.tensorboard=false", f"output.mlflow={store}")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "model.safetensors").write_bytes(b"weights")
    (run_dir / "metrics.json").write_text("{}")
    report = tmp_path / "reports" / f"{cfg.run_name()}.html"
    report.parent.mkdir()
    report.write_text("<html></html>")
    tracker = track_run(cfg, run_dir)
    tracker.epoch(HISTORY, 1)
    tracker.epoch(HISTORY, 2)
    tracker.finish(RESULT, _examples(2))
    client, run = _mlflow_run(store)
    assert run.info.status == "FINISHED" and run.info.run_name == cfg.run_name()
    assert run.data.params["split.cut"] == "1" and run.data.params["model.name"] == "unet-classic"
    assert [m.value for m in client.get_metric_history(run.info.run_id, "val_dice/all")] == pytest.approx([0.5, 0.6])
    assert run.data.metrics["test/dice_ci_high"] == pytest.approx(0.77)
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "report", "weights", "images"} <= files
    assert [f.path for f in client.list_artifacts(run.info.run_id, "weights")] == ["weights/model.safetensors"]
    assert [f.path for f in client.list_artifacts(run.info.run_id, "report")] == [f"report/{report.name}"]


@pytest.mark.slow
def test_a_training_run_tracks_to_tensorboard_and_mlflow(tmp_path):
    """End to end through train(): the old loop wrote per-epoch scalars only (no hparams, no images,
    no intervals) and knew no MLflow."""
    from medsplit.train.loop import train

    pytest.importorskip("mlflow")
    store = f"file://{tmp_path}/mlruns"
    cfg = _cfg(tmp_path, "train.epochs=1", f"output.mlflow={store}")
    run_dir = train(cfg, quiet=True)
    events = _tensorboard_events(run_dir / "tb")
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
    assert {"test/dice", "test/dice_ci_low", "test/dice_ci_high", "val_dice/all"} <= set(events.Tags()["scalars"])
    assert len(events.Tags()["images"]) == 6  # best, median and worst test images, two each
    client, run = _mlflow_run(store)
    assert run.info.status == "FINISHED"
    assert "test/dice" in run.data.metrics and "val_dice/all" in run.data.metrics
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "report", "weights", "images", "config.yaml"} <= files


def _attack_results():
    import torch

    rows = [{"attack": "inversion", "defence": "none", "strength": 0, "seed": 0, "ssim": 0.3, "mse": 0.02, "flagged": True},
            {"attack": "fsha", "defence": "nopeek", "strength": 1.0, "seed": 0, "ssim": 0.2, "mse": float("nan")}]
    extras = {"inversion/none/0/0": {"recon": torch.rand(3, 1, 8, 8)}, "fsha/nopeek/1.0/0": {"recon": torch.rand(3, 1, 8, 8)}}
    return {"task": "lungs", "profile": "tiny", "device": "cpu", "rows": rows, "extras": extras,
            "originals": torch.rand(3, 1, 8, 8), "profile_config": {"name": "tiny", "fsha": {"iterations": 12}}}


def test_an_attack_run_logs_its_numbers_and_reconstructions(tmp_path):
    from medsplit.tracking.attack import attack_scalars, track_attack

    results = _attack_results()
    assert attack_scalars(results["rows"]) == {"inversion/none/0/seed0/ssim": 0.3, "inversion/none/0/seed0/mse": 0.02,
                                               "fsha/nopeek/1.0/seed0/ssim": 0.2}  # no bool, no NaN
    report = tmp_path / "attack-lungs-tiny.html"
    report.write_text("<html></html>")
    report.with_suffix(".json").write_text("{}")
    mlflow = pytest.importorskip("mlflow")
    store = f"file://{tmp_path}/mlruns"
    track_attack(results, report, tensorboard_dir=tmp_path / "tb", mlflow_uri=store)
    events = _tensorboard_events(tmp_path / "tb")
    assert sorted(events.Tags()["images"]) == ["reconstruction/fsha/nopeek/1.0/0", "reconstruction/inversion/none/0/0"]
    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    run = client.search_runs([client.get_experiment_by_name("medsplit-attack-lungs").experiment_id])[0]
    assert run.data.metrics["inversion/none/0/seed0/ssim"] == pytest.approx(0.3)
    assert run.data.params["profile.fsha.iterations"] == "12"
    assert {f.path for f in client.list_artifacts(run.info.run_id, "report")} == {
        "report/attack-lungs-tiny.html", "report/attack-lungs-tiny.json"}


def test_the_attack_command_and_api_track_when_asked(tmp_path, monkeypatch):
    """``medsplit attack --tensorboard --mlflow URI`` (and ``medsplit.attack(tensorboard=, mlflow=)``) reach
    the attack tracker: before, nothing called it."""
    import medsplit.report.attack_report as attack_report
    from medsplit.attacks import harness
    from medsplit.cli import build_parser

    args = build_parser().parse_args(["attack", "--tensorboard", "--mlflow", "file:///tmp/x"])
    assert args.tensorboard is True and args.mlflow == "file:///tmp/x"

    def fake_report(results, out):
        out.mkdir(parents=True, exist_ok=True)
        (out / "attack-lungs-tiny.json").write_text("{}")
        return (out / "attack-lungs-tiny.html").resolve()

    monkeypatch.setattr(harness, "evaluate", lambda *a, **k: _attack_results())
    monkeypatch.setattr(attack_report, "write_attack_report", fake_report)
    html = harness.run_attack("lungs", profile="tiny", attacks=["inversion"], device="cpu", out=tmp_path, tensorboard=True)
    events = _tensorboard_events(tmp_path / "tb" / html.stem)
    assert "reconstruction/inversion/none/0/0" in events.Tags()["images"]
