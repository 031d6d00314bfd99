"""What a run tells the person who started it: why its data is synthetic, and how big and how
long it is (with how to shorten a long one) after its first batches."""

from __future__ import annotations

from types import SimpleNamespace

from medsplit.config import load_config
from medsplit.train.console import LONG_RUN_S, RunEstimate, announce_data, estimate_line, format_duration, synthetic_banner
from medsplit.tasks.settings import TaskSettings


def test_banner_says_whether_synthetic_data_was_chosen_or_nothing_was_found(tmp_path):
    chosen = synthetic_banner("synthetic", tmp_path)
    assert "as chosen (data.source=synthetic" in chosen and "no real images were found" not in chosen
    missing = synthetic_banner("auto", tmp_path / "data")
    assert f"no real images were found under {tmp_path / 'data'}" in missing and "make data" in missing
    for banner in (chosen, missing):
        assert "say nothing about patients" in banner


def test_announce_data_prints_the_reason_of_the_run_config(capsys, tmp_path):
    settings = TaskSettings.from_config(load_config(None, ["data.source=synthetic"]))
    data = SimpleNamespace(synthetic=True, summary=lambda: {"source": "synthetic fundus generator", "splits": {}})
    announce_data(SimpleNamespace(settings=settings, data=data), [[0, 1], [2]])
    out = capsys.readouterr().out
    assert "as chosen" in out and "training images per client: 2/1" in out
    auto = TaskSettings.from_config(load_config(None, ["data.source=auto", "data.root=/nowhere"]))
    announce_data(SimpleNamespace(settings=auto, data=data), [[0, 1], [2]])
    out = capsys.readouterr().out
    assert "no real images were found under /nowhere (data.source=auto)" in out


def test_estimate_times_the_batches_after_a_warm_up_and_prints_once():
    times = iter([10.0, 12.0])  # batch 1 ends at 10 s (warm-up, not timed); batch 3 at 12 s: 1 s per batch
    printed = []
    estimate = RunEstimate(batches_per_epoch=50, epochs_left=4, batch_size=16, img_size=64, data="eyepacs256",
                           out=printed.append, sample=2, clock=lambda: next(times))
    for _ in range(10):
        estimate.batch_done()
    assert len(printed) == 1
    assert printed[0].startswith("size: 4 epochs x 50 batches of 16 images at 64 px (eyepacs256); ~1.00 s per batch: "
                                 "about 3 min 20 s of training steps")
    assert "shorten" not in printed[0]


def test_a_long_run_says_how_to_shorten_it():
    line = estimate_line(2.0, batches_per_epoch=200, epochs_left=20, batch_size=16, img_size=64, data="eyepacs256")
    assert 2.0 * 200 * 20 > LONG_RUN_S and "about 2 h 13 min" in line
    assert "EPOCHS=" in line and "SIZE=" in line and "DATA=synthetic" in line and "--resume" in line


def test_quiet_runs_print_nothing():
    estimate = RunEstimate(10, 1, 8, 32, "synthetic", out=None)
    for _ in range(10):
        estimate.batch_done()
    assert estimate.line is None
    assert format_duration(59.6) == "1 min 00 s" and format_duration(3600) == "1 h 00 min"
