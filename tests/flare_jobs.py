"""What the FLARE policy tests share (tests/flare/test_flare_hostile.py, test_flare_site_guard.py):
the two hospital sites, a tiny retinopathy job, hospital-a's policy and the red team's job that
meets that policy on paper only."""

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
