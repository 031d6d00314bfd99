"""Every report kind in headless Chromium at 1400 px (issue 29, item 6): a run report of a
classifier (degenerate, flagged), of a segmentation with one epoch, and an attack report pass the
browser checks (nothing scrolls sideways, every image decodes, nothing is fetched).

Skips without Chromium (Debian: apt-get install chromium)."""

from __future__ import annotations

import pytest

from medsplit.report import write_run_report
from medsplit.report.attack_report import write_attack_report
from medsplit.report.browser_check import check_report, find_chromium

pytestmark = [pytest.mark.skipif(find_chromium() is None, reason="chromium not installed (apt-get install chromium)"),
              pytest.mark.timeout(600), pytest.mark.slow]


def test_run_and_attack_reports_read_at_1400_px(tmp_path):
    from test_report import segmentation_record
    from test_report_attack_words import attack_results
    from test_report_readability import binary_test

    degenerate = {"task": "retinopathy", "protocol": "sequential", "cut": 3, "config": {"model": {"name": "resnet34"}},
                  "test": binary_test([False] * 90, [0] * 80 + [1] * 10),
                  "history": [{"epoch": 1, "client": "all", "val_loss": 0.6, "val_auc": 0.61}], "selected_epoch": 1}
    one_epoch = segmentation_record()
    one_epoch["history"] = [r for r in one_epoch["history"] if r["epoch"] == 1]
    one_epoch["selected_epoch"] = 1
    pages = [write_run_report(degenerate, tmp_path / "degenerate.html"),
             write_run_report(one_epoch, tmp_path / "segmentation.html"),
             write_attack_report(attack_results("lungs"), tmp_path), write_attack_report(attack_results("retinopathy"), tmp_path)]
    for page in pages:
        check = check_report(page, tmp_path / "shots")
        assert check.ok, (page.name, check.problems)
