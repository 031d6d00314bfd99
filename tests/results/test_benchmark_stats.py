"""The benchmarks' statistics: the interval a "costs at most 1 point" claim rests on (codec study), the
bootstrap intervals a results study keeps per run."""

import importlib.util
import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    """A benchmark script (not a package module) loaded by path."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


codec_accuracy = _load("codec_accuracy")


def test_paired_interval_is_the_student_t_interval_of_the_mean():
    # mean 2, sample std 1, n 3: half-width t(0.975, 2) / sqrt(3) = 4.3027 / 1.7321
    lo, hi = codec_accuracy.paired_ci95([1.0, 2.0, 3.0])
    assert (lo, hi) == pytest.approx((2 - 2.4841, 2 + 2.4841), abs=1e-4)
    assert codec_accuracy.paired_ci95([0.5]) is None


def test_verdict_rests_on_the_interval_not_the_mean():
    ok = codec_accuracy.verdict("int8", 3.99, (-0.4, 0.3))
    assert "meets >= 3.9x" in ok and "ruled out" in ok and "not ruled out" not in ok
    # A mean of -0.5 is inside the target, but an interval reaching -3 does not show it.
    wide = codec_accuracy.verdict("int8", 3.99, (-3.0, 2.0))
    assert "not ruled out" in wide
    assert "loses more than" in codec_accuracy.verdict("int8", 3.99, (-5.0, -2.0))
    assert "misses" in codec_accuracy.verdict("fp16", 2.0, (-0.1, 0.1))
    assert "no interval" in codec_accuracy.verdict("int8", 3.99, None)


def test_a_lungs_run_is_scored_by_its_mean_dice():
    """Lungs runs store Dice as a per-image summary; the study used to subtract two of those dicts."""
    record = {"task": "lungs", "test": {"dice": {"mean": 0.91, "std": 0.02}, "jaccard": {"mean": 0.84}},
              "wall_time_s": 60.0, "selected_epoch": 4, "device": "cpu", "config": {"train": {"epochs": 2}},
              "bytes": [{"phase": "train", "kind": "activation", "bytes": 300}, {"phase": "train", "kind": "gradient", "bytes": 100},
                        {"phase": "train", "kind": "weights", "bytes": 999}]}
    row = codec_accuracy.run_row("int8", 0, Path("runs/x"), record, "dice")
    assert row["dice"] == 0.91
    assert row["bytes_per_epoch"] == 200  # activations + gradients over 2 epochs; weight hand-offs are not the cut's


def test_a_study_refuses_a_run_folder_of_another_config_naming_the_remedy(tmp_path):
    from medsplit.config import load_config
    from medsplit.sweep.study_file import plan_run

    config = str(BENCHMARKS.parent / "configs" / "retinopathy.yaml")
    base = ["data.source=synthetic", "train.epochs=1"]
    ok = plan_run(config, base, "sequential", 0, "study-seed0", str(tmp_path), threads=1)
    assert ok.run_dir == tmp_path / "study-seed0" and ok.cfg.train.seed == 0 and ok.cfg.train.threads == 1
    ok.run_dir.mkdir()
    (ok.run_dir / "config.yaml").write_text(load_config(config, [*base, "train.epochs=7"]).to_yaml())
    with pytest.raises(RuntimeError, match=r"differs in .*train\.epochs.*pass another --runs-dir"):
        plan_run(config, base, "sequential", 0, "study-seed0", str(tmp_path), threads=1)


def test_results_study_keeps_each_runs_bootstrap_interval():
    study = _load("results_protocols")
    metrics = {"test_intervals": {"auc": {"estimate": 0.8, "low": 0.74, "high": 0.85, "undefined": 0},
                                  "level": 0.95, "n_patients": 382, "method": "percentile bootstrap over patients"}}
    got = study.run_intervals(metrics)
    assert got == {"auc": {"low": 0.74, "high": 0.85, "level": 0.95, "n_patients": 382}}
    assert study.run_intervals({"test": {}}) == {}
    runs = [{"protocol": "centralised", "seed": 1, "scores": {"auc": 0.8}, "intervals": got},
            {"protocol": "fedavg", "seed": 0, "scores": {"auc": 0.7}, "intervals": {}}]
    assert study.interval_lines(runs, "auc") == "- centralised seed 1: auc 0.800 (95% CI 0.740-0.850, 382 test patients)"


def test_results_study_keeps_the_validation_scores_of_the_selected_epoch():
    study = _load("results_protocols")
    history = [{"epoch": 1, "client": "client0", "train_loss": 0.9},
               {"epoch": 1, "val_loss": 1.0, "val_auc": 0.60, "val_accuracy": 0.40},
               {"epoch": 2, "val_loss": 0.9, "val_auc": 0.70, "val_accuracy": 0.50},
               {"epoch": 3, "val_loss": 0.95, "val_auc": 0.65, "val_accuracy": 0.55}]
    metrics = {"task": "retinopathy", "test": {"auc": 0.71, "accuracy": 0.52}, "history": history, "selected_epoch": 2}
    assert study.run_validation(metrics) == {"auc": 0.70, "accuracy": 0.50}
    runs = [{"protocol": "sequential", "seed": s, "scores": {"auc": 0.7}, "validation": {"auc": v}, "wall_time_s": 1.0}
            for s, v in ((0, 0.70), (1, 0.80))]
    (row,) = study.summarise(runs, ["sequential"])
    assert row["validation_mean"] == {"auc": pytest.approx(0.75)}
    assert "validation" not in study.table([row]).splitlines()[0]  # the table shows test metrics only


def test_signal_probe_features_are_disc_shares_per_channel_and_level():
    import torch

    probe = _load("eyepacs_signal_probe")
    images = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    images[0, :, 4:12, 4:12] = 255  # image 0: a white disc; image 1: all surround
    f = probe.features(images, filtered=False)
    assert f.shape == (2, 24)
    assert (f[0] == 1).all() and (f[1] == 0).all()  # the disc is above every level; no disc, no share


def test_results_study_summarises_a_study_cut_short_without_training(tmp_path):
    import json

    study = _load("results_protocols")
    run = tmp_path / "runs" / "results-cut-centralised-seed0"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({
        "task": "retinopathy", "test": {"auc": 0.71, "accuracy": 0.52}, "wall_time_s": 60.0, "selected_epoch": 3,
        "device": "cpu", "data": {}, "test_intervals": {"auc": {"low": 0.66, "high": 0.76}, "n_patients": 400}}))
    argv = ["--config", str(BENCHMARKS.parent / "configs" / "results-retinamnist.yaml"), "--tag", "cut",
            "--protocols", "centralised,fedavg", "--seeds", "0", "--runs-dir", str(tmp_path / "runs"),
            "--results-dir", str(tmp_path / "results"), "--finished-only"]
    assert study.main(argv) == 1  # one of two planned runs: the study is not complete
    record = json.loads((tmp_path / "results" / "results-cut.json").read_text())
    assert record["finished"] == "1 of 2 planned runs"
    assert "summarised_only" in record  # its wall_time_s is the summary's, not the study's
    assert [r["protocol"] for r in record["runs"]] == ["centralised"]
    assert record["runs"][0]["intervals"]["auc"]["low"] == 0.66
    assert not (tmp_path / "runs" / "results-cut-fedavg-seed0").exists()  # nothing was trained
    assert "| centralised | 1 | 0.710 (one seed) | 0.520 (one seed) |" in record["table_markdown"]  # no "+- 0.000"


def test_cpu_bf16_benchmark_times_both_precisions_and_saves_them(tmp_path):
    cpu_bf16 = _load("cpu_bf16")
    out = tmp_path / "cpu-bf16.json"
    assert cpu_bf16.main(["--steps", "1", "--warmup", "0", "--models", "unet-smp", "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    (row,) = saved["rows"]
    assert row["model"] == "unet-smp" and row["fp32_s_per_step"] > 0 and row["bf16_s_per_step"] > 0
    assert row["speedup"] == row["fp32_s_per_step"] / row["bf16_s_per_step"]
    assert isinstance(saved["native_bf16"], bool)


def test_reproduce_check_compares_only_what_both_records_hold_and_fails_on_a_changed_digit(tmp_path, capsys):
    check = _load("reproduce_check")

    def run(protocol, seed, auc):
        return {"protocol": protocol, "seed": seed, "scores": {"auc": auc}, "selected_epoch": 3, "wall_time_s": seed}

    committed = {"runs": [run("sequential", 0, 0.7267517736504148), run("sequential", 1, 0.72)]}
    rerun = {"runs": [{**run("sequential", 0, 0.7267517736504148), "wall_time_s": 99.0}]}  # seed 0 only, slower
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(committed))
    b.write_text(json.dumps(rerun))
    assert check.main([str(a), str(b), "--out", str(tmp_path / "c.json")]) == 0
    saved = json.loads((tmp_path / "c.json").read_text())
    assert saved["compared"] == 2 and saved["agree"] == 2  # the AUC and the selected epoch; never the clock
    rerun["runs"][0]["scores"]["auc"] = 0.7267517736504149  # one digit in the 16th place
    b.write_text(json.dumps(rerun))
    assert check.main([str(a), str(b)]) == 1
    assert "DIFFERS  sequential/seed0/test auc" in capsys.readouterr().out
    assert check.main([str(a), str(b), "--tolerance", "1e-12"]) == 0

    long = {"histories": {"fsha/none/0/0": [{"iteration": i, "mse": 0.1 / (i + 1), "ssim": 0.1, "seconds": i}
                                            for i in (0, 250, 500, 10000)]}}
    short = {"histories": {"fsha/none/0/0": [{**p, "seconds": 5} for p in long["histories"]["fsha/none/0/0"][:3]]}}
    assert check.compare(long, short)["compared"] == 6  # mse and ssim at the three shared iterations
    a.write_text(json.dumps(long))
    b.write_text(json.dumps(committed))
    assert check.main([str(a), str(b)]) == 2  # nothing shared
