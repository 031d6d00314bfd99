"""The run index and run names: what a run was is readable from its row and its name.

``reports/index.html`` shows data, image size, epochs, protocol, cut, clients, the selected
epoch and a formatted wall time per run; run names carry a short hash of the config so two
different runs do not share a folder; a clash says how to rerun through make.
"""

from __future__ import annotations

import json

import pytest

from medsplit.config import load_config
from medsplit.report.index import run_columns, write_index
from medsplit.train import run_folder
from medsplit.train.run_folder import RunFolderError

RUN = {"task": "retinopathy", "protocol": "splitfed", "cut": 3, "clients": 2, "device": "cpu (x86_64, 1 threads)",
       "wall_time_s": 21.9, "selected_epoch": 7, "test": {"auc": 0.8123, "accuracy": 0.7},
       "test_intervals": {"auc": {"low": 0.75, "high": 0.86}, "n_resamples": 2000, "n_patients": 100},
       "data": {"source": "eyepacs256", "synthetic": False},
       "config": {"data": {"img_size": 128, "source": "eyepacs"}, "train": {"epochs": 30}}}


def test_index_row_names_data_size_epochs_selected_epoch_and_a_readable_wall_time():
    row = run_columns(RUN)
    assert row["data"] == "eyepacs256" and row["image size"] == "128 px" and row["epochs"] == 30
    assert row["protocol"] == "splitfed" and row["cut"] == 3 and row["clients"] == 2 and row["selected epoch"] == 7
    assert row["wall time"] == "22 s" and row["AUC"] == pytest.approx(0.8123)
    assert run_columns({**RUN, "wall_time_s": 3725.0})["wall time"] == "1 h 02 min"
    synthetic = run_columns({**RUN, "data": {"source": "synthetic fundus generator", "synthetic": True}})
    assert synthetic["data"] == "SYNTHETIC"


def test_index_page_shows_the_new_columns_and_no_raw_seconds(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "run-a.json").write_text(json.dumps(RUN))
    (reports / "run-a.html").write_text("<html></html>")
    page = write_index(reports).read_text()
    for header in ("data", "image size", "epochs", "selected epoch", "wall time"):
        assert f"<th>{header}</th>" in page
    assert "128 px" in page and "22 s" in page and "21.9000" not in page


def test_run_names_differ_when_a_trained_setting_differs_and_not_for_a_resumable_one():
    base = load_config("configs/retinopathy.yaml")
    name = base.run_name()
    assert name.startswith("retinopathy-sequential-cut3-clients2-seed0-64px-") and len(name.rsplit("-", 1)[1]) == 6
    assert load_config("configs/retinopathy.yaml", ["train.lr=0.01"]).run_name() != name
    assert load_config("configs/retinopathy.yaml", ["data.img_size=32"]).run_name() != name
    assert load_config("configs/retinopathy.yaml", ["train.batch_size=8"]).run_name() != name
    # --resume --allow-change may change these, and each party may set its own data and device
    for same in ("train.epochs=2", "train.device=cpu", "train.threads=1", "data.root=/elsewhere", "output.tensorboard=false"):
        assert load_config("configs/retinopathy.yaml", [same]).run_name() == name, same
    assert load_config("configs/retinopathy.yaml", ["output.name=mine"]).run_name() == "mine"


def test_a_clash_says_how_to_rerun_through_make(tmp_path):
    run = tmp_path / "runs" / "taken"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("task: retinopathy\n")
    with pytest.raises(RunFolderError) as error:
        run_folder.check_fresh(run, overwrite=False)
    message = str(error.value)
    assert "NAME=" in message and "ARGS=--overwrite" in message and f"--resume {run}" in message
