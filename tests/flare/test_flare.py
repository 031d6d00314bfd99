"""FLARE deployment: through FLARE's simulator every site runs only its own parts and the run equals
the in-process run bit for bit; the bytes handed to FLARE are the Channel's plus the control
messages; provisioning writes mutual-TLS kits; the job folder is FLARE's; a hospital's own policy
refuses a job; a missing nvflare says how to install it. Tests that need nvflare skip without it."""

import builtins
import json
import re

import pytest
import torch

from medsplit.config import load_config
from medsplit.train.loop import train

torch.set_num_threads(1)

SITES = ["hospital-a", "hospital-b"]
RETINO = ["task=retinopathy", "data.synthetic_size=96", "model.name=resnet18", "split.cut=2"]
LUNGS = ["task=lungs", "data.synthetic_size=40", "model.name=unet-classic", "model.base_channels=4", "split.cut=1"]


def _cfg(tmp_path, task_overrides, protocol, *extra):
    return load_config(None, task_overrides + [
        "data.source=synthetic", "data.img_size=32", "data.augment=false", "train.epochs=2", "train.batch_size=16",
        "train.eval_batch_size=64", "train.threads=1", "output.tensorboard=false", f"split.protocol={protocol}",
        "split.clients=2",
        f"output.runs_dir={tmp_path}/runs", f"output.reports_dir={tmp_path}/reports", f"data.cache_dir={tmp_path}/cache", *extra])


def _in_process(cfg) -> dict:
    return json.loads((train(cfg, quiet=True) / "metrics.json").read_text())


def _same_run(ref: dict, got: dict) -> None:
    assert got["test"] == {k: v for k, v in ref["test"].items() if k != "per_image"}
    assert got["test_loss"] == ref["test_loss"]
    assert got["selected_epoch"] == ref["selected_epoch"]
    pick = lambda m: [(r["epoch"], r["client"], r.get("train_loss"), r.get("val_loss")) for r in m["history"]]  # noqa: E731
    assert pick(got) == pick(ref)
    assert got["bytes"] == ref["bytes"]


def test_job_refuses_whole_model_baselines_and_mismatched_sites(tmp_path):
    from medsplit.flare.job import job_description

    with pytest.raises(ValueError, match="split.protocol='fedavg'.*in-process only"):
        job_description(_cfg(tmp_path, RETINO, "fedavg"), SITES)
    with pytest.raises(ValueError, match=r"3 hospital site\(s\).*split.clients=2"):
        job_description(_cfg(tmp_path, RETINO, "sequential"), SITES + ["hospital-c"])
    with pytest.raises(ValueError, match="site name"):
        job_description(_cfg(tmp_path, RETINO, "sequential"), ["hospital a", "b"])


def test_missing_nvflare_names_the_extra_to_install(monkeypatch):
    from medsplit.flare import FlareNotInstalled, require_nvflare

    real_import = builtins.__import__

    def no_nvflare(name, *args, **kwargs):
        if name == "nvflare" or name.startswith("nvflare."):
            raise ImportError("No module named 'nvflare'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_nvflare)
    with pytest.raises(FlareNotInstalled, match=r'pip install -e "\.\[flare\]"'):
        require_nvflare()


# ---- with NVIDIA FLARE ----------------------------------------------------------------------

@pytest.mark.flare
def test_provision_writes_mutual_tls_kits_for_every_site(tmp_path, nvflare):
    from medsplit.flare.provision import SAMPLE_POLICY, kit_files, provision

    kits = provision(["server", "hospital-a", "hospital-b"], tmp_path / "prov")
    assert (tmp_path / "prov" / "project.yml").exists()
    for f in kit_files(kits, "localhost", server=True) + kit_files(kits, "hospital-a") + kit_files(kits, "hospital-b"):
        assert f.exists() and f.stat().st_size > 0, f
    client = json.loads((kits / "hospital-a" / "startup" / "fed_client.json").read_text())
    assert client["client"]["connection_security"] == "mtls"
    assert client["servers"][0]["service"]["target"] == "localhost:8102"
    assert "BEGIN CERTIFICATE" in (kits / "hospital-b" / "startup" / "client.crt").read_text()
    assert (kits / "hospital-a" / SAMPLE_POLICY).exists()  # a sample, not an active policy
    assert not (kits / "hospital-a" / "local" / "medsplit_policy.yaml").exists()
    admin = next(p for p in kits.iterdir() if p.name.startswith("admin"))
    assert (admin / "startup" / "client.key").exists()


@pytest.mark.flare
def test_job_folder_is_a_flare_collab_job(tmp_path, nvflare):
    from medsplit.flare.job import write_job_folder

    cfg = _cfg(tmp_path, RETINO, "sequential")
    folder = write_job_folder(cfg, SITES, tmp_path / "jobs", defences={"laplace_scale": 0.5})
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["min_clients"] == 2
    server = json.loads(next(folder.rglob("config_fed_server.json")).read_text())
    text = json.dumps(server)
    assert "medsplit.flare.sites.MedsplitServer" in text and "CollabController" in text
    assert '"laplace_scale": 0.5' in text and '"own_data": true' in text
    assert "medsplit_policy" not in text  # no site policy travels with a job


@pytest.mark.slow
@pytest.mark.flare
@pytest.mark.parametrize("task,protocol", [("retinopathy", "sequential"), ("lungs", "splitfed")])
def test_flare_simulator_equals_in_process_and_counts_what_it_hands_flare(tmp_path, nvflare, task, protocol):
    from medsplit.flare.simulate import run_simulator

    cfg = _cfg(tmp_path, RETINO if task == "retinopathy" else LUNGS, protocol)
    ref = _in_process(cfg)
    status = run_simulator(cfg, SITES, tmp_path / "out", tmp_path / "ws", timeout_s=60)
    assert status["status"] == "ok", status
    got = json.loads((tmp_path / "out" / "metrics.json").read_text())
    _same_run(ref, got)
    assert (tmp_path / "out" / f"{cfg.run_name()}.html").exists()
    info = got["transport"]
    assert info["name"] == "flare" and info["nvflare"] == nvflare.__version__
    # what the parties handed FLARE = the split bytes the Channel counted + the control messages
    counted = sum(r["bytes"] for r in got["bytes"] + got["bytes_eval"])
    assert info["payload_bytes_sent"] == counted + info["control_bytes_sent"]
    # the server never opened an image folder; each hospital did (its own partition)
    loaded = {p["name"]: p["data_loaded"] for p in info["parties"]}
    assert loaded == {"server": False, "client0": True, "client1": True}
    # image-level rows stay at the evaluating hospital: the server's report has none
    assert "per_image" not in got["test"]


@pytest.mark.slow
@pytest.mark.flare
def test_flare_hospital_refuses_a_job_its_policy_forbids(tmp_path, nvflare):
    from medsplit.flare.simulate import run_simulator

    policy = tmp_path / "policy-a.yaml"
    policy.write_text("site: hospital-a\nrequire:\n  laplace_min_scale: 0.5\n")
    cfg = _cfg(tmp_path, RETINO, "sequential")
    status = run_simulator(cfg, SITES, tmp_path / "out", tmp_path / "ws", policies={"hospital-a": policy},
                           defences={"laplace_scale": 0.1}, timeout_s=30)
    assert status["status"] == "failed"
    message = status["errors"]["hospital-a"]
    assert "site hospital-a refuses job" in message and "medsplit_policy.yaml" in message
    assert "require.laplace_min_scale=0.5: the job has Laplace scale b=0.1" in message
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.slow
@pytest.mark.flare
def test_flare_hospital_killed_mid_run_is_named_and_resume_finishes_the_same_run(tmp_path, nvflare, monkeypatch):
    from medsplit.flare.simulate import run_simulator

    cfg = _cfg(tmp_path, RETINO, "sequential", "train.epochs=3")
    ref = _in_process(cfg)
    # hospital-b's process is SIGKILLed at its second step of epoch 2 (issue 12's fault hook)
    monkeypatch.setenv("MEDSPLIT_FAULT", "client1:epoch=1:step=1")
    status = run_simulator(cfg, SITES, tmp_path / "out", tmp_path / "ws", timeout_s=20)
    assert status["status"] == "failed"
    # hospital-b is named, whichever wait ended first: a receive from it or a send to it (FLARE's
    # deliver call) that ran out or found FLARE cannot reach it, or the server waiting for its site
    errors = json.dumps(status["errors"])
    assert re.search(r"is hospital-b still running\?|to site hospital-b \(client1\) failed|"
                     r"site hospital-b stopped answering: FLARE cannot reach it|"
                     r"hospital-b\W+did not finish .*site process gone", errors), errors
    monkeypatch.delenv("MEDSPLIT_FAULT")
    status = run_simulator(cfg, SITES, tmp_path / "out", tmp_path / "ws", timeout_s=60, resume=True)
    assert status["status"] == "ok", status
    _same_run(ref, json.loads((tmp_path / "out" / "metrics.json").read_text()))


@pytest.mark.slow
@pytest.mark.flare
def test_flare_hijack_detector_probes_hospitals_and_an_alarm_stops_the_job_naming_the_site(tmp_path, nvflare):
    from medsplit.flare.simulate import run_simulator

    cfg = _cfg(tmp_path, RETINO, "sequential", "train.batch_size=8")  # 4 steps per hospital and epoch
    honest = {"hijack_detector": True, "on_alarm": "abort", "probe_every": 2}
    status = run_simulator(cfg, SITES, tmp_path / "ok", tmp_path / "ws", defences=honest, timeout_s=60)
    assert status["status"] == "ok", status
    detectors = json.loads((tmp_path / "ok" / "metrics.json").read_text())["transport"]["detectors"]
    # every hospital probed the (honest) server 4 times over 8 steps, and no alarm was raised
    assert {s: (d["probes"], d["flagged"]) for s, d in detectors.items()} == {s: (4, False) for s in SITES}
    # a threshold no honest server can pass stands in for a hijacking one: the alarm fires after
    # min_probes (3) probes, the hospital refuses to send, and the job ends naming it
    alarmed = dict(honest, detector_threshold=1e9)
    status = run_simulator(cfg, SITES, tmp_path / "alarm", tmp_path / "ws", defences=alarmed, timeout_s=30)
    assert status["status"] == "failed"
    errors = json.dumps(status["errors"])
    assert "HijackAbort" in errors and "site hospital-a: the hijack detector raised the alarm at step 6" in errors
