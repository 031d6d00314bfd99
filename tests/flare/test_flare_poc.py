"""FLARE's POC mode with the consortium's identity (issue 30, finding 8): the POC project is the
provisioned one (project, organisation, admin with role ``lead``) plus the single project admin
FLARE's POC tooling requires, which is never used; every kit gets the provisioned ``local/`` files
(admin rights, class allow-list, the hospital's job guard, its policy); the job the admin submits
ships no code. Tests that need nvflare skip without it."""

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from medsplit.config import load_config

torch.set_num_threads(1)

SITES = ["hospital-a", "hospital-b"]
IDENTITY = {"admin": "lead@eyes.example", "project": "retina-poc", "org": "Eye Consortium"}
POLICY = "site: hospital-a\nrequire:\n  hijack_detector: abort\n"


def test_poc_project_is_the_consortiums_with_the_one_project_admin_flare_needs():
    from medsplit.flare.poc import POC_PROJECT_ADMIN, poc_project_file

    spec = poc_project_file(SITES, fed_port=18102, **IDENTITY)
    assert spec["name"] == "retina-poc"
    admins = [p for p in spec["participants"] if p["type"] == "admin"]
    assert {"name": "lead@eyes.example", "type": "admin", "org": "Eye_Consortium", "role": "lead"} in admins
    # FLARE 2.9's POC tooling refuses a project without exactly one project admin
    assert [p["name"] for p in admins if p["role"] == "project_admin"] == [POC_PROJECT_ADMIN]
    server = next(p for p in spec["participants"] if p["type"] == "server")
    assert server["name"] == "localhost" and server["org"] == "Eye_Consortium"
    assert (server["fed_learn_port"], server["admin_port"]) == (18102, 18103)
    with pytest.raises(ValueError, match="placeholder project admin"):
        poc_project_file(SITES, admin=POC_PROJECT_ADMIN)


def test_poc_cli_says_it_is_a_demo_and_reads_site_policies(tmp_path, capsys):
    import argparse

    from medsplit.flare.cli import _site_policies, add_flare_parser

    parser = argparse.ArgumentParser(prog="medsplit")
    add_flare_parser(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit):
        parser.parse_args(["flare", "poc", "--help"])
    assert "single-machine demo of a deployment, not a deployment" in " ".join(capsys.readouterr().out.split())
    args = parser.parse_args(["flare", "poc", "c.yaml", "--out", "o", "--admin", "a@b.example", "--org", "O",
                              "--project", "p", "--port", "18200", "--policy", "hospital-a=x.yaml"])
    assert (args.admin, args.org, args.project, args.port, args.policy) == ("a@b.example", "O", "p", 18200, ["hospital-a=x.yaml"])
    (tmp_path / "a.yaml").write_text(POLICY)
    assert _site_policies([f"hospital-a={tmp_path / 'a.yaml'}"]) == {"hospital-a": tmp_path / "a.yaml"}
    with pytest.raises(ValueError, match="write SITE=FILE"):
        _site_policies(["hospital-a"])
    with pytest.raises(FileNotFoundError, match="missing.yaml does not exist"):
        _site_policies([f"hospital-a={tmp_path / 'missing.yaml'}"])


class _JobWithCode:
    """What FLARE's Collab export writes: an app with its config and the code under app/custom."""

    name = "job-with-code"

    def export_job(self, into: str) -> None:
        app = Path(into) / self.name / "app"
        (app / "config").mkdir(parents=True)
        (app / "config" / "config_fed_client.json").write_text("{}")
        (app / "custom" / "medsplit").mkdir(parents=True)
        (app / "custom" / "medsplit" / "__init__.py").write_text("")
        (Path(into) / self.name / "meta.json").write_text("{}")


def test_the_poc_job_folder_ships_no_code(tmp_path):
    from medsplit.flare.poc import export_code_free_job

    folder = export_code_free_job(_JobWithCode(), tmp_path)
    assert (folder / "app" / "config" / "config_fed_client.json").exists()
    assert not list(folder.rglob("custom"))


@pytest.mark.flare
def test_poc_kits_get_the_provisioned_local_files_the_policy_and_their_own_run_folder(tmp_path, nvflare, monkeypatch):
    import yaml
    from nvflare.tool.poc.poc_commands import get_prod_dir, prepare_poc_provision

    from medsplit.flare.poc import install_site_local, poc_project_file

    ws = tmp_path / "poc"
    ws.mkdir()
    monkeypatch.setenv("NVFLARE_POC_WORKSPACE", str(ws))
    spec = poc_project_file(SITES, fed_port=18102, **IDENTITY)
    (tmp_path / "project.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    prepare_poc_provision(clients=SITES, number_of_clients=2, workspace=str(ws), docker_image=None,
                          project_conf_path=str(tmp_path / "project.yml"), examples_dir=None)
    prod = Path(get_prod_dir(str(ws), "retina-poc"))
    (tmp_path / "policy-a.yaml").write_text(POLICY)
    install_site_local(prod, spec, tmp_path / "sites", {"hospital-a": tmp_path / "policy-a.yaml"})
    assert (prod / "lead@eyes.example" / "startup").is_dir()  # the consortium's admin has a kit
    for site in ("localhost", *SITES):
        rights = json.loads((prod / site / "local" / "authorization.json").read_text())["permissions"]["lead"]
        assert rights["submit_job"] == "any" and rights["byoc"] == "none", site
        assert "class_allow_list" in json.loads((prod / site / "local" / "resources.json").read_text())
        own = tmp_path / "sites" / ("server" if site == "localhost" else site)
        assert (prod / site / "medsplit").resolve() == own.resolve(), site
    for site in SITES:  # each hospital's job guard, from its own local/ configuration
        guard = json.loads((prod / site / "local" / "medsplit__j_resources.json").read_text())
        assert guard["components"][0]["path"] == "medsplit.flare.site_guard.MedsplitJobGuard"
    assert (prod / "hospital-a" / "local" / "medsplit_policy.yaml").read_text() == POLICY
    assert not (prod / "hospital-b" / "local" / "medsplit_policy.yaml").exists()
    with pytest.raises(ValueError, match=r"policy files for \['hospital-z'\]"):
        install_site_local(prod, spec, tmp_path / "sites2", {"hospital-z": tmp_path / "policy-a.yaml"})


def test_processes_that_outlive_the_poc_stop_are_waited_for_then_killed_by_id(tmp_path):
    import sys

    from medsplit.flare.poc import end_leftover_processes

    ws = tmp_path / "poc-workspace"
    quick = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)", str(ws / "site-a")])
    stuck = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", str(ws / "site-b")])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", str(tmp_path / "elsewhere")])
    try:
        killed = end_leftover_processes(ws, grace_s=8.0)
        assert list(killed) == [stuck.pid] and str(ws / "site-b") in killed[stuck.pid]
        assert stuck.wait(timeout=10) == -signal.SIGKILL
        assert quick.wait(timeout=10) == 0  # ended by itself within the grace period
        assert other.poll() is None  # a process that does not name the POC workspace is left alone
    finally:
        for proc in (quick, stuck, other):
            proc.kill()
            proc.wait()


def _kill_processes_under(folder: Path) -> list[int]:
    """Kill (by id) every process whose command line names ``folder``: FLARE's POC sites, should
    the POC not have stopped them. Returns the ids it killed."""
    found = subprocess.run(["pgrep", "-f", str(folder)], capture_output=True, text=True).stdout.split()
    killed = []
    for pid in map(int, found):
        if pid != os.getpid():
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
    return killed


@pytest.mark.slow
@pytest.mark.flare
def test_poc_job_is_submitted_by_the_consortium_admin_as_lead_without_code_and_trains(tmp_path, nvflare):
    from medsplit.flare.poc import run_poc

    cfg = load_config(None, [
        "task=retinopathy", "data.synthetic_size=96", "model.name=resnet18", "split.cut=2", "data.source=synthetic",
        "data.img_size=32", "data.augment=false", "train.epochs=1", "train.batch_size=16", "train.eval_batch_size=64",
        "train.threads=1", "output.tensorboard=false", "split.protocol=sequential", "split.clients=2",
        f"output.runs_dir={tmp_path}/runs", f"output.reports_dir={tmp_path}/reports", f"data.cache_dir={tmp_path}/cache"])
    (tmp_path / "policy-a.yaml").write_text(POLICY)
    out = tmp_path / "out"
    try:
        result = run_poc(cfg, SITES, out, defences={"hijack_detector": True, "on_alarm": "abort", "probe_every": 10},
                         policies={"hospital-a": tmp_path / "policy-a.yaml"}, timeout_s=120, job_timeout_s=900,
                         port=18102, **IDENTITY)
    finally:
        leftover = _kill_processes_under(out)
    assert result["status"] == "ok", result
    # FLARE's own record of the submission: the consortium's admin, as lead, and no code in the job
    assert result["submitter"] == {"name": "lead@eyes.example", "org": "Eye_Consortium", "role": "lead", "byoc": False}
    assert result["tls"] == {"hospital-a": "mtls", "hospital-b": "mtls"}
    metrics = json.loads((out / "metrics.json").read_text())
    # hospital-a's policy (from its POC kit, where the guard read it) is the one the report names
    assert metrics["transport"]["policies"]["hospital-a"].endswith("hospital-a/local/medsplit_policy.yaml")
    assert metrics["transport"]["policies"]["hospital-b"] is None
    # each site kept its runs in its own workspace, which is OUT/sites/<site>, and the POC folder is gone
    assert list((out / "sites" / "hospital-a").rglob("*")) and list((out / "sites" / "server").rglob("*"))
    assert not (out / "poc-workspace").exists()
    assert leftover == [], f"FLARE processes still running after run_poc returned: {leftover}"
    print("killed after FLARE's stop:", result["killed_after_stop"])
