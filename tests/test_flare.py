"""FLARE deployment: every site runs only its own parts (same results as one process, bit for bit),
bytes counted equal bytes handed to the transport, provisioning writes mutual-TLS kits, the job
folder is FLARE's, a hospital's policy refuses a job, and a missing nvflare says how to install it.

The thread-transport tests need no FLARE; the others skip without the optional extra."""

import builtins
import json
import threading
from pathlib import Path

import pytest
import torch

from medsplit.config import load_config
from medsplit.flare.seam import QueueHub, QueueTransport
from medsplit.flare.site_run import SERVER_PARTIES, assemble, run_site
from medsplit.train.loop import train

torch.set_num_threads(1)

SITES = ["hospital-a", "hospital-b"]
SITE_OF = {"server": "server", "aggregator": "server", "client0": "hospital-a", "client1": "hospital-b"}
RETINO = ["task=retinopathy", "data.synthetic_size=96", "model.name=resnet18", "split.cut=2"]
LUNGS = ["task=lungs", "data.synthetic_size=40", "model.name=unet-classic", "model.base_channels=4", "split.cut=1"]


def _cfg(tmp_path, task_overrides, protocol):
    # augmentation off: in one process all hospitals draw from one generator in schedule order,
    # which separate sites cannot reproduce without each other's images (see site_run's docstring)
    return load_config(None, task_overrides + [
        "data.source=synthetic", "data.img_size=32", "data.augment=false", "train.epochs=2", "train.batch_size=16",
        "train.eval_batch_size=64", "output.tensorboard=false", f"split.protocol={protocol}", "split.clients=2",
        f"output.runs_dir={tmp_path}/runs", f"output.reports_dir={tmp_path}/reports", f"data.cache_dir={tmp_path}/cache"])


def _in_process(cfg) -> dict:
    return json.loads((train(cfg, quiet=True) / "metrics.json").read_text())


def _run_sites_in_threads(cfg) -> tuple[list[dict], dict]:
    hub = QueueHub()
    transports = {s: QueueTransport(hub, s, timeout=60) for s in ("server", *SITES)}
    results, errors = {}, {}

    def go(site, local):
        try:
            results[site] = run_site(cfg, local, SITE_OF, transports[site])
        except Exception as e:  # reported below; the other threads time out on their own
            errors[site] = e

    threads = [threading.Thread(target=go, args=("server", SERVER_PARTIES), daemon=True)]
    threads += [threading.Thread(target=go, args=(s, frozenset({f"client{k}"})), daemon=True) for k, s in enumerate(SITES)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    return [results[s] for s in ("server", *SITES)], transports


def _same_run(ref: dict, got: dict) -> None:
    assert got["test"] == {k: v for k, v in ref["test"].items() if k != "per_image"}
    assert got["test_loss"] == ref["test_loss"]
    assert got["selected_epoch"] == ref["selected_epoch"]
    pick = lambda m: [(r["epoch"], r["client"], r.get("train_loss"), r.get("val_loss")) for r in m["history"]]  # noqa: E731
    assert pick(got) == pick(ref)
    assert got["bytes"] == ref["bytes"] and got["bytes_eval"] == ref["bytes_eval"]


@pytest.mark.slow
@pytest.mark.parametrize("task,protocol", [("retinopathy", "sequential"), ("retinopathy", "splitfed"),
                                           ("lungs", "sequential"), ("lungs", "splitfed")])
def test_sites_in_separate_threads_equal_the_in_process_run_exactly(tmp_path, task, protocol):
    cfg = _cfg(tmp_path, RETINO if task == "retinopathy" else LUNGS, protocol)
    ref = _in_process(cfg)
    results, transports = _run_sites_in_threads(cfg)
    got = assemble(cfg, results, 0.0)
    _same_run(ref, got)
    # every payload handed to a transport is a counted split message or a counted control message
    for r in results:
        counted = sum(row["bytes"] for row in r["bytes"]) + r["control_bytes"]
        assert transports[r["site"]].sent_bytes == counted
    # the server never loaded a dataset: its result has no data summary and it computed no metric
    assert "data" not in results[0] and "client_summary" not in results[0]


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

@pytest.fixture
def nvflare():
    return pytest.importorskip("nvflare")


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
def test_flare_simulator_equals_in_process_and_counts_what_it_hands_flare(tmp_path, nvflare):
    from medsplit.flare.simulate import run_simulator

    cfg = _cfg(tmp_path, RETINO, "sequential")
    ref = _in_process(cfg)
    status = run_simulator(cfg, SITES, tmp_path / "out", tmp_path / "ws", timeout_s=60)
    assert status["status"] == "ok", status
    got = json.loads((tmp_path / "out" / "metrics.json").read_text())
    _same_run(ref, got)
    assert (tmp_path / "out" / f"{cfg.run_name()}.html").exists()
    # what FLARE was handed = the split bytes the channel counted + the control messages
    handed = sum(t["handed_bytes"] for t in got["transport_bytes"].values())
    counted = sum(r["bytes"] for r in got["bytes"] + got["bytes_eval"]) + sum(got["control_bytes"].values())
    assert handed == counted


@pytest.mark.slow
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
