"""Sweep reports carry each run's 95% test-set interval and use it when comparing points."""

import json
from pathlib import Path

import pytest

from medsplit.sweep import compare_to, run_sweep

from test_sweep import BASE_YAML  # the same tiny sweep config

AUC = {1: 0.80, 3: 0.78, 5: 0.60, None: 0.79}  # cut -> test AUC (None: centralised / fedavg)


def fake_train(cfg, resume=None, quiet=False) -> Path:
    """Writes what the training loop writes, with a test interval of +-0.05 around the AUC."""
    run_dir = Path(cfg.output.runs_dir) / cfg.run_name()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    split = cfg.split.protocol not in ("centralised", "fedavg")
    auc = AUC[cfg.split.cut if split else None]
    record = {
        "task": cfg.task, "protocol": cfg.split.protocol, "cut": cfg.split.cut if split else None,
        "clients": cfg.split.clients, "device": "cpu (fake)", "wall_time_s": 2.0, "selected_epoch": 1,
        "test": {"auc": auc, "accuracy": 0.7},
        "test_intervals": {"auc": {"estimate": auc, "low": auc - 0.05, "high": auc + 0.05}},
        "bytes": [], "data": {"source": "synthetic", "synthetic": True}, "config": cfg.to_dict(),
    }
    (run_dir / "metrics.json").write_text(json.dumps(record))
    return run_dir


def test_sweep_tables_show_intervals_and_judge_differences_by_them(tmp_path):
    base = tmp_path / "sweep.yaml"
    base.write_text(BASE_YAML.replace("REPORTS", str(tmp_path / "reports")))
    html = run_sweep(base, axis="cut", values=[1, 3, 5], seeds=[0], protocols=["sequential"], partitions=["iid"],
                     baselines=True, out_dir=tmp_path / "sweep", overrides=[], train_fn=fake_train)
    summary = json.loads(html.with_suffix(".json").read_text())
    point = next(p for p in summary["points"] if p["value"] == 1)
    assert (point["metric_low"], point["metric_high"]) == pytest.approx((0.75, 0.85))
    groups = {(g["protocol"], g["value"]): g for g in summary["groups"]}
    assert groups[("sequential", 1)]["ci_halfwidth"] == pytest.approx(0.05)
    best = groups[("sequential", 1)]
    # 0.02 apart with +-0.05 each: the test set cannot tell them apart; 0.20 apart: it can.
    assert compare_to(groups[("sequential", 3)], best) == "-0.020 (within test-set CI)"
    assert compare_to(groups[("sequential", 5)], best) == "-0.200 (beyond test-set CI)"
    assert summary["headline"]["centralised vs best split"] == "-0.010 (within test-set CI)"
    page = html.read_text()
    assert "0.750\u20130.850" in page and "test-set CI \u00b1" in page and "within test-set CI" in page
    assert "beyond test-set CI" in page
