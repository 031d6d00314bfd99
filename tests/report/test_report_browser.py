"""Reports in headless Chromium: the checker passes a good page and catches a bad one.

Skips without Chromium; `make check-reports` (medsplit.report.browser_check) is the check
run on real reports.
"""

import pytest

from medsplit.report import Report, figures
from medsplit.report.browser_check import check_report, find_chromium

pytestmark = [pytest.mark.skipif(find_chromium() is None, reason="chromium not installed (apt-get install chromium)"),
              pytest.mark.timeout(300), pytest.mark.slow]  # two Chromium starts


def test_a_report_passes_and_a_broken_page_is_caught(tmp_path):
    good = Report("good")
    good.section("Numbers").table([{"run": "retinopathy-sequential-cut3-iid-seed0-" * 3, "auc": 0.9}])
    good.figure(figures.line_plot([1, 2], {"a": [1, 2]}, "x", "y"))
    check = check_report(good.write(tmp_path / "good.html"), tmp_path / "shots")
    assert check.ok, check.problems
    assert check.images == 1 and check.screenshot.read_bytes()[:4] == b"\x89PNG"
    from PIL import Image

    assert Image.open(check.screenshot).size[0] == 1400

    bad = Report("bad")
    bad.section("Wide").html('<div style="width:3000px">wide</div><img src="https://example.invalid/x.png" alt="remote">')
    check = check_report(bad.write(tmp_path / "bad.html"), None)
    text = " ".join(check.problems)
    assert "scrolls sideways" in text and "remote resources" in text and "did not load" in text
