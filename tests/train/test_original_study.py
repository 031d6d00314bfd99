"""The original study's numbers: each row agrees with the printout it was read from, and the
sweep report names the study's metric instead of passing it off as ours."""

import re

import pytest

from medsplit.original_study import ORIGINAL_STUDY
from medsplit.report.html import Report
from medsplit.report.sweep_report import original_study_section

# Axis values the study's notebooks ran (README: cuts 2, 3, 5, 7; clients 1, 2, 3, 4, 6; U-Net cut 1).
STUDY_VALUES = {("retinopathy", "cut"): {2, 3, 5, 7}, ("retinopathy", "clients"): {1, 2, 3, 4, 6},
                ("lungs", "cut"): {1}}


def _render(task: str, axis: str, metric_name: str, groups: list[dict]) -> str:
    report = Report("t")
    original_study_section(report, task, axis, metric_name, groups)
    return report.render()


@pytest.mark.parametrize("key", sorted(ORIGINAL_STUDY))
def test_every_row_matches_its_printout(key):
    rows = ORIGINAL_STUDY[key]
    assert rows and {r["value"] for r in rows} <= STUDY_VALUES[key]
    for r in rows:
        assert {"value", "metric", "metric_name", "protocol", "source", "printed", "epochs"} <= set(r)
        assert r["protocol"] == "sequential" and r["source"].split(",")[0].endswith(".ipynb")
        if key[0] == "retinopathy":
            # Printed percent per client, pooled as they go; the metric is the all-clients entry.
            entries = [float(x) for x in r["printed"].strip("[]").split(",")]
            assert len(entries) == (r["value"] if key[1] == "clients" else 2)
            assert r["metric"] == pytest.approx(entries[-1] / 100) and r["metric_name"].startswith("accuracy")
        else:
            assert r["metric"] == float(re.search(r"val_jaccard: ([0-9.]+)", r["printed"]).group(1))
            assert r["metric_name"].startswith("Jaccard")


def test_report_names_the_studys_metric_beside_ours():
    groups = [{"protocol": "sequential", "partition": "iid", "value": 3, "metric": 0.777}]
    page = _render("retinopathy", "cut", "AUC", groups)
    assert "Different metrics" in page and "accuracy (train-set resample)" in page
    assert "AUC (medsplit, iid, mean)" in page and "0.7770" in page and "0.6945" in page
    assert "[69.4, 69.45]" in page and "Cut_Graph_ResNet_S.ipynb" in page
    assert "PLACEHOLDER" not in page and "TO FILL" not in page
    lungs = _render("lungs", "cut", "Dice", [])
    assert "Jaccard (validation)" in lungs and "0.9314" in lungs and "not Dice" in lungs


def test_same_metric_shows_no_warning(monkeypatch):
    monkeypatch.setitem(ORIGINAL_STUDY, ("lungs", "clients"),
                        [{"value": 2, "metric": 0.9, "protocol": "sequential", "source": "x"}])
    page = _render("lungs", "clients", "Dice", [])
    assert "Different metrics" not in page and "0.9000" in page


def test_sweep_without_study_numbers_says_so():
    assert ("lungs", "clients") not in ORIGINAL_STUDY  # the study ran its U-Net with one client only
    page = _render("lungs", "clients", "Dice", [{"protocol": "sequential", "partition": "iid", "value": 2,
                                                  "metric": 0.9}])
    assert "published no number" in page and "<table" not in page.split("published no number")[1]
