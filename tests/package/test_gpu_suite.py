"""The GPU suite's --dry-run runs every step (throughput, an EyePACS epoch, FSHA, parties as processes) for a few
iterations on CPU, on a tiny re-encoded data folder, and leaves the committed results alone."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], timeout: int, env: dict) -> subprocess.CompletedProcess:
    # its own process group, so a timeout or a failing assertion leaves no child behind
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, None)


@pytest.mark.slow
def test_dry_run_runs_every_step_on_cpu(shared_data, tmp_path):
    results = REPO / "benchmarks" / "results"
    before = {p: p.stat().st_mtime_ns for p in results.rglob("*")} if results.exists() else {}
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = _run(["bash", "benchmarks/gpu_suite.sh", "--dry-run", "--out", str(tmp_path / "suite")], 900, env)
    assert done.returncode == 0, done.stdout[-3000:]
    record = json.loads((tmp_path / "suite" / "gpu_suite.json").read_text())
    assert record["dry_run"] is True
    assert [s["step"] for s in record["steps"]] == ["throughput-resnet34", "throughput-unet", "eyepacs-epoch", "fsha-lungs",
                                                        "parties-gloo"]
    assert all(s["rc"] == 0 for s in record["steps"])
    names = record["results"]
    assert any("throughput-resnet34" in n for n in names) and any("throughput-unet-smp" in n for n in names)
    assert "runs/eyepacs-epoch/metrics.json" in names and len(record["eyepacs_epoch_seconds"]) == 1
    assert any(n.startswith("fsha/") for n in names)
    assert len(record["parties_epoch_seconds"]) == 1
    assert [p["name"] for p in record["parties"]] == ["server", "client0", "client1"]
    # the dry run wrote nothing into the committed results
    after = {p: p.stat().st_mtime_ns for p in results.rglob("*")} if results.exists() else {}
    assert after == before


def test_device_data_is_sized_for_the_carry_and_says_so(shared_data, tmp_path):
    from importlib import util

    spec = util.spec_from_file_location("build_device_data", REPO / "benchmarks" / "build_device_data.py")
    mod = util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    info = mod.build(shared_data, tmp_path / "dd", images=10, quality=85)
    rows = (tmp_path / "dd" / "retinopathy" / "eyepacs256" / "labels.csv").read_text().splitlines()
    assert len(rows) - 1 == info["eyepacs_images"] >= 10
    assert (tmp_path / "dd" / "lungs" / "covid-cxr-v7" / "masks").is_dir()
    # a limit below the build's size fails with the remedy named
    assert mod.main(["--source", str(shared_data), "--out", str(tmp_path / "dd2"), "--images", "10", "--max-mib", "1"]) == 1


def test_unknown_option_is_refused():
    done = _run(["bash", "benchmarks/gpu_suite.sh", "--fast"], 30, dict(os.environ))
    assert done.returncode == 2 and "unknown option --fast" in done.stdout
