"""What the FLARE policy tests share (tests/flare/test_flare_hostile.py, test_flare_site_guard.py):
the two hospital sites, a tiny retinopathy job, hospital-a's policy and the red team's job that
meets that policy on paper only; a simulator run in a child process whose every process is killed
afterwards (tests/flare/test_flare_dropout.py)."""

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from medsplit.config import load_config

SITES = ["hospital-a", "hospital-b"]
RETINO = ["task=retinopathy", "data.synthetic_size=96", "model.name=resnet18", "split.cut=2"]
POLICY = "site: hospital-a\nrequire:\n  hijack_detector: abort\n  laplace_min_scale: 0.5\n"
#: The red team's job: meets `hijack_detector: abort` and `laplace_min_scale: 0.5` on paper only.
ON_PAPER_ONLY = {"hijack_detector": True, "on_alarm": "abort", "probe_every": 10**9, "detector_threshold": -1e9,
                 "laplace_scale": 0.5, "laplace_sensitivity": 1e9}


def tiny_job_config(tmp_path, *extra):
    """A one-epoch relay of two hospitals on 96 synthetic fundus images at 32 px, writing under ``tmp_path``."""
    return load_config(None, RETINO + [
        "data.source=synthetic", "data.img_size=32", "data.augment=false", "train.epochs=1", "train.batch_size=16",
        "train.eval_batch_size=64", "train.threads=1", "output.tensorboard=false", "split.protocol=sequential",
        "split.clients=2", f"output.runs_dir={tmp_path}/runs", f"output.reports_dir={tmp_path}/reports",
        f"data.cache_dir={tmp_path}/cache", *extra])


def policy_file(tmp_path, text=POLICY) -> Path:
    """Hospital-a's policy as a file under ``tmp_path``."""
    path = tmp_path / "policy-a.yaml"
    path.write_text(text)
    return path


def flare_pids(*markers) -> list[int]:
    """Processes (FLARE's simulator, its site workers) whose command line names one of ``markers``."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if any(str(m).encode() in cmd for m in markers):
                found.append(int(d.name))
    return found


def run_simulator_bounded(cfg, sites, out: Path, workspace: Path, env: dict, timeout_s: float, wait_s: float) -> dict:
    """``run_simulator`` in a child process with ``env`` (the fault hook, say), waited for at most
    ``wait_s`` seconds; afterwards, also when it failed or hung, the child, FLARE's simulator and
    every site process it started are killed (they run in sessions of their own, so they are
    found by the folders on their command lines). Returns ``medsplit_result.json``."""
    out, workspace = Path(out).resolve(), Path(workspace).resolve()
    out.mkdir(parents=True, exist_ok=True)
    config = out.parent / f"{out.name}-config.yaml"
    config.write_text(cfg.to_yaml())
    script = ("import sys; from medsplit.config import load_config; from medsplit.flare.simulate import run_simulator; "
              "run_simulator(load_config(sys.argv[1]), sys.argv[2].split(','), sys.argv[3], sys.argv[4], "
              "timeout_s=float(sys.argv[5]))")
    child = subprocess.Popen([sys.executable, "-c", script, str(config), ",".join(sites), str(out), str(workspace),
                              str(timeout_s)], env=dict(os.environ, OMP_NUM_THREADS="1", **env), start_new_session=True)
    try:
        child.wait(timeout=wait_s)
        return json.loads((out / "medsplit_result.json").read_text())
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        for pid in flare_pids(workspace, out):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not flare_pids(workspace, out), "FLARE processes left after the test"
