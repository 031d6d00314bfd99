"""Following a run's config through the code (issue 26): a tiny in-process run, traced by
``benchmarks/config_path.py``, meets the config in few files (the config package, the loop, the
runner, the task settings) and never climbs back up into a layer above the caller."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_run_reads_its_config_near_the_top(tmp_path):
    out = tmp_path / "config_path.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "config_path.py"), "--out", str(out)], env=env,
                   check=True, timeout=600, capture_output=True)
    result = json.loads(out.read_text())
    files = sorted({f for p in result["processes"].values() for f in p["path"]})
    below = [f for f in files if f.startswith(("medsplit/tasks/", "medsplit/tracking/")) and f != "medsplit/tasks/settings.py"
             or f in ("medsplit/train/schedule.py", "medsplit/train/precision.py", "medsplit/train/outputs.py")]
    assert below == [], f"the run's config reaches {below}: hand them explicit values"
    assert result["files_all_processes"] <= 7, files  # 11 before issue 26's config-path change
    assert result["climbs_all_processes"] == 0, result["processes"]
