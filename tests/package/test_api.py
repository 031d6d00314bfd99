"""The public Python API (issue 29 item 1): ``medsplit.train / evaluate / attack / load_config``,
re-exported lazily so ``import medsplit`` stays fast, and a real tiny run through it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import medsplit
from medsplit.config import Config, ConfigError

ROOT = Path(__file__).resolve().parents[2]


def tiny(tmp_path) -> dict:
    return {"task": "retinopathy", "data": {"source": "synthetic", "synthetic_size": 96, "img_size": 32,
                                             "cache_dir": str(tmp_path / "cache")},
            "model__name": "resnet18", "train__epochs": 1, "train__batch_size": 16, "train__threads": 1,
            "output": {"tensorboard": False, "runs_dir": str(tmp_path / "runs"), "reports_dir": str(tmp_path / "reports")}}


def test_import_medsplit_imports_neither_torch_nor_the_api():
    code = ("import sys, medsplit\n"
            "print(sorted(m for m in ('torch', 'medsplit.api', 'medsplit.config') if m in sys.modules), "
            "callable(medsplit.train), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    # nothing heavy at import; the API loads on first use, still without torch
    assert out.stdout.split() == ["[]", "True", "False"], out.stdout + out.stderr


def test_the_api_is_listed():
    assert {"train", "evaluate", "attack", "load_config", "RunResult"} <= set(medsplit.__all__) & set(dir(medsplit))
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        medsplit.trian


def test_load_config_takes_settings_three_ways_and_a_shipped_name():
    by_name = medsplit.load_config("retinopathy")
    assert by_name == medsplit.load_config(ROOT / "configs" / "retinopathy.yaml")
    a = medsplit.load_config("retinopathy", split__cut=5, train={"epochs": 2})
    b = medsplit.load_config("retinopathy", **{"split.cut": 5, "train.epochs": 2})
    assert a == b and (a.split.cut, a.train.epochs) == (5, 2)
    assert a.data == by_name.data  # untouched keys keep the file's values
    c = medsplit.load_config(a, split__clients=3)
    assert c.split.clients == 3 and c.split.cut == 5 and a.split.clients != 3  # a copy, a left alone
    assert isinstance(medsplit.load_config(), Config)


def test_load_config_checks_settings_like_a_file():
    with pytest.raises(ConfigError, match="did you mean 'split.cut'"):
        medsplit.load_config(split__cuts=3)
    with pytest.raises(ConfigError, match="'split.cut' must be int"):
        medsplit.load_config(split__cut="three")
    with pytest.raises(ConfigError, match="did you mean 'retinopathy'"):
        medsplit.load_config("retinopaty")


def test_train_and_evaluate_keep_their_names_beside_the_modules_of_the_same_name():
    """``medsplit.train`` is also the subpackage ``medsplit.train``: importing it must not replace
    the function, and the function hands out the subpackage's modules."""
    import medsplit.evaluate as evaluate_module  # noqa: F401 - binds the module, were it not kept out
    import medsplit.train.loop as loop

    assert medsplit.train.loop is loop and medsplit.train.__name__ == "train"
    assert callable(medsplit.train) and callable(medsplit.evaluate)
    assert medsplit.evaluate.compare_to_internal is evaluate_module.compare_to_internal
    assert medsplit.train.__doc__.startswith("Train one configuration")


def test_run_result_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a finished medsplit run"):
        medsplit.RunResult.load(tmp_path)


@pytest.mark.slow
def test_a_tiny_run_through_the_api_then_external_validation(shared_data, tmp_path):
    run = medsplit.train(quiet=True, **tiny(tmp_path))
    assert isinstance(run, medsplit.RunResult)
    saved = json.loads((run.run_dir / "metrics.json").read_text())
    assert run.metrics == saved["test"] and 0.0 <= run.metrics["auc"] <= 1.0
    assert run.intervals["auc"] == saved["test_intervals"]["auc"]
    assert [r["epoch"] for r in run.history if r["client"] == "all"] == [1]
    assert run.selected_epoch == 1 and run.config.model.name == "resnet18"
    assert set(run.paths) == {"run_dir", "config", "metrics", "weights", "report", "report_json"}
    assert run.paths["report"].suffix == ".html" and run.paths["report"].is_file()
    assert _same_run(run, medsplit.RunResult.load(run.run_dir))

    npz = shared_data / "retinopathy" / "retinamnist" / "retinamnist.npz"
    result = medsplit.evaluate(run, npz, report=tmp_path / "ext.md")
    written = run.run_dir / "external" / "retinamnist.json"
    assert json.loads(written.read_text())["n"] == result["n"] > 0
    assert result["comparison"]["internal"] == pytest.approx(run.metrics["auc"])
    assert (tmp_path / "ext.md").read_text().startswith("# External validation of")
    assert callable(medsplit.train)  # training imported medsplit.train.*: the function is still there


def _same_run(a, b) -> bool:
    """Two RunResults of the same folder hold the same numbers and paths."""
    return (a.run_dir, a.metrics, a.history, a.paths, a.config) == (b.run_dir, b.metrics, b.history, b.paths, b.config)


@pytest.mark.slow
def test_attack_through_the_api_writes_its_report(shared_data, tmp_path):
    html = medsplit.attack("lungs", profile="tiny", attacks=["fsha"], defences=["none"], device="cpu",
                           data_root=shared_data, out=tmp_path, fsha__iterations=3, img_size=16)
    assert html.suffix == ".html" and html.is_file()
    summary = json.loads(html.with_suffix(".json").read_text())
    assert summary["profile_config"]["fsha"]["iterations"] == 3 and summary["profile_config"]["img_size"] == 16


def test_attack_refuses_an_unknown_attack_before_training(tmp_path):
    with pytest.raises(ValueError, match="unknown attack"):
        medsplit.attack("lungs", profile="tiny", attacks=["nope"], device="cpu", data_root=tmp_path, out=tmp_path)
