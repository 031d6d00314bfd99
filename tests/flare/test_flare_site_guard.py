"""FLARE sites check every job themselves (issue 30, findings 8 and 10): provisioning uses the
consortium's identity, gives its admin no bring-your-own-code right and says where the private
keys are; the policy guard is installed in each site's own FLARE configuration and checks a job
before FLARE builds any of its components, and jobs that ship code are refused. Tests that need
nvflare skip without it. (Hostile peers and job numbers: test_flare_hostile.py.)"""

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flare_jobs import ON_PAPER_ONLY, POLICY, SITES, policy_file, tiny_job_config

torch.set_num_threads(1)


# ---- findings 8 and 10: provisioning, the site-installed guard --------------------------------

@pytest.fixture(scope="module")
def kits(tmp_path_factory):
    pytest.importorskip("nvflare")
    from medsplit.flare.provision import provision

    out = tmp_path_factory.mktemp("prov")
    return out, provision(["server", "hospital-a", "hospital-b"], out, project="retina-consortium",
                          org="Eye_Consortium", admin="lead@eyes.example")


@pytest.mark.flare
def test_provision_takes_the_consortium_identity_and_restricts_the_admin_and_the_keys(kits):
    out, kits = kits
    spec = json.loads(json.dumps(__import__("yaml").safe_load((out / "project.yml").read_text())))
    assert spec["name"] == "retina-consortium" and kits.parent.name == "retina-consortium"
    admin = next(p for p in spec["participants"] if p["type"] == "admin")
    assert admin == {"name": "lead@eyes.example", "type": "admin", "org": "Eye_Consortium", "role": "lead"}
    assert next(p for p in spec["participants"] if p["type"] == "server")["org"] == "Eye_Consortium"
    # every site's own authorization: the admin's role may submit jobs but not bring its own code
    for site in ("hospital-a", "hospital-b", "localhost"):
        rights = json.loads((kits / site / "local" / "authorization.json").read_text())["permissions"]["lead"]
        assert rights["submit_job"] == "any" and rights["byoc"] == "none" and rights["shell_commands"] == "none"
    # the root CA's key (FLARE's state/cert.json) and every kit key: mode 0600, and named
    from medsplit.flare.provision import private_key_files

    listed = dict(private_key_files(out, kits, "retina-consortium"))
    state = out / "retina-consortium" / "state" / "cert.json"
    assert state in listed and "root CA" in listed[state]
    assert kits / "hospital-a" / "startup" / "client.key" in listed
    for path in listed:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


@pytest.mark.flare
def test_provision_cli_prints_the_private_key_files_and_can_remove_the_ca_state(tmp_path, nvflare):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]), OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "medsplit", "flare", "provision", "--sites", "server,hospital-a",
                          "--out", str(tmp_path), "--project", "lungs", "--org", "LungNet", "--admin", "a@lungs.example",
                          "--remove-ca-state"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "files holding private keys" in run.stdout and "hospital-a/startup/client.key" in run.stdout
    assert "removed" in run.stdout and "cert.json (the root CA's key)" in run.stdout
    assert not (tmp_path / "lungs" / "state" / "cert.json").exists()
    assert (tmp_path / "lungs" / "prod_00" / "hospital-a" / "startup" / "client.key").exists()


def _job_folder(tmp_path, defences, ship_code=False) -> Path:
    from medsplit.flare.job import write_job_folder
    from medsplit.flare.simulate import build_recipe

    cfg = tiny_job_config(tmp_path)
    if not ship_code:
        return write_job_folder(cfg, SITES, tmp_path / "jobs", defences=defences)
    from medsplit.flare.job import job_description

    job = job_description(cfg, SITES, defences=defences)
    build_recipe(job).export(str(tmp_path / "byoc"))
    return tmp_path / "byoc" / job["name"]


def _build_at_site(kit: Path, job_folder: Path, byoc: bool, edit=None) -> str:
    """Deploy ``job_folder`` to ``kit``'s site and build its client app as FLARE's job process does
    (worker_process -> ClientAppRunner.create_client_runner): the site's own ``local/`` configuration
    gives the event handlers, FLARE's authorize_build_component checks every component. Returns
    "" when every component was built, else FLARE's error."""
    import argparse

    from nvflare.apis.fl_constant import FLContextKey
    from nvflare.apis.fl_context import FLContext
    from nvflare.apis.workspace import Workspace
    from nvflare.private.fed.app.fl_conf import FLClientStarterConfiger
    from nvflare.private.fed.client.client_json_config import ClientJsonConfigurator
    from nvflare.private.fed.utils.fed_utils import authorize_build_component

    site, job_id = kit.name, "job-under-test"
    app = kit / job_id / f"app_{site}"
    shutil.rmtree(app.parent, ignore_errors=True)
    shutil.copytree(job_folder / "app", app)
    client_config = app / "config" / "config_fed_client.json"
    if edit is not None:
        client_config.write_text(json.dumps(edit(json.loads(client_config.read_text()))))
    meta = json.loads((job_folder / "meta.json").read_text())
    if byoc:
        meta["byoc"] = True  # what FLARE's server records for a job with an app/custom folder
    ws = Workspace(str(kit), site, "config")
    args = argparse.Namespace(workspace=str(kit), startup=str(kit / "startup"), job_id=job_id, client_name=site,
                              sp_target="localhost:8102", sp_scheme="grpc", parent_url="", parent_conn_sec="",
                              fed_client="fed_client.json", token="t", token_signature="s", ssid="x",
                              client_config="config/config_fed_client.json", env="config/environment.json",
                              set=["uid=" + site, "secure_train=true", "config_folder=config"])
    site_conf = FLClientStarterConfiger(workspace=ws, args=args, kv_list=list(args.set))
    site_conf.configure()
    fl_ctx = FLContext()
    fl_ctx.set_prop(FLContextKey.CLIENT_NAME, site, private=False)
    fl_ctx.set_prop(FLContextKey.WORKSPACE_OBJECT, ws, private=True)
    fl_ctx.set_prop(FLContextKey.CURRENT_JOB_ID, job_id, private=False, sticky=True)
    fl_ctx.set_prop(FLContextKey.APP_ROOT, str(app), private=True, sticky=True)
    fl_ctx.set_prop(FLContextKey.JOB_META, meta, private=True)
    job_conf = ClientJsonConfigurator(workspace_obj=ws, config_file_name=str(client_config), args=args,
                                      app_root=str(app), kv_list=list(args.set))
    job_conf.set_component_build_authorizer(authorize_build_component, fl_ctx=fl_ctx, event_handlers=site_conf.handlers)
    try:
        job_conf.configure()
    except Exception as e:
        return str(e)
    return ""


def _as_flare_deploys_it(config: dict) -> dict:
    """The client config as FLARE 2.9 hands it to the job at a provisioned site: its SiteLogStreamer
    has added this component (copied from a POC run's config_fed_client.json)."""
    config["components"].append({"id": "auto_log_streamer", "path": "nvflare.app_common.logging.job_log_streamer.JobLogStreamer",
                                 "args": {"target_parent_server": True, "log_file_name": "error_log.txt"}})
    return config


def _replace_hospital(config: dict) -> dict:
    """The job author points the hospital component at another class (one the site has installed)."""
    for component in config["components"]:
        if component["path"] == "medsplit.flare.sites.MedsplitHospital":
            component["path"] = "medsplit.flare.pingpong.PingHospital"
            component["args"] = {}
    return config


@pytest.mark.flare
def test_site_guard_in_the_sites_own_config_checks_every_job_before_it_is_built(kits, tmp_path):
    _, kits = kits
    kit = kits / "hospital-a"
    (kit / "local" / "medsplit_policy.yaml").write_text(POLICY)
    honest = {"hijack_detector": True, "on_alarm": "abort", "probe_every": 10, "laplace_scale": 0.5}
    folder = _job_folder(tmp_path / "honest", honest)
    assert not list(folder.glob("*/custom"))  # a medsplit job ships no code: each site runs its installed medsplit
    assert _build_at_site(kit, folder, byoc=False) == ""  # the job the policy allows is built
    # ... also with the log streamer FLARE's own SiteLogStreamer (in the site's resources.json)
    # writes into every job's client config before the job starts (found by a POC run)
    assert _build_at_site(kit, folder, byoc=False, edit=_as_flare_deploys_it) == ""
    # the red team's job is refused before the hospital component exists, naming rule and field
    error = _build_at_site(kit, _job_folder(tmp_path / "paper", ON_PAPER_ONLY), byoc=False)
    assert "site hospital-a refuses job" in error and "medsplit_policy.yaml is not met" in error
    assert "the job's probe_every=1000000000" in error and "epsilon C/b=2e+09 per inference release" in error
    # a job that ships its own code (FLARE's BYOC) is refused unless the site's policy allows it
    shipped = _job_folder(tmp_path / "shipped", honest, ship_code=True)
    assert list(shipped.glob("*/custom"))
    error = _build_at_site(kit, shipped, byoc=True)
    assert "the job ships its own code" in error and "jobs.allow_custom_code: false" in error
    # pointing config_fed_client.json at a replacement class does not disable the check, even
    # where the site allows job code (FLARE's own class allow-list does not apply to BYOC jobs)
    (kit / "local" / "medsplit_policy.yaml").write_text(POLICY + "jobs:\n  allow_custom_code: true\n")
    assert _build_at_site(kit, shipped, byoc=True) == ""
    error = _build_at_site(kit, shipped, byoc=True, edit=_replace_hospital)
    assert "builds component 'medsplit.flare.pingpong.PingHospital', which is not the medsplit hospital" in error
    (kit / "local" / "medsplit_policy.yaml").unlink()
    # nor may a job choose where the hospital writes its checkpoints

    def elsewhere(config):
        next(c for c in config["components"] if c["id"] == "_client")["args"]["job"]["sites_root"] = "/etc"
        return config

    assert "the job sets sites_root='/etc'" in _build_at_site(kit, folder, byoc=False, edit=elsewhere)
    # without a policy file the guard keeps the defaults: no job code
    assert "the job ships its own code" in _build_at_site(kit, shipped, byoc=True)


@pytest.mark.flare
def test_the_guard_check_of_a_job_folder_says_what_flares_own_build_path_says(kits, tmp_path):
    """check_job_folder (what the simulator can run before it starts) gives the same refusals as the
    guard in FLARE's job-build path, for the same folders and the same site policy."""
    from medsplit.flare.policy import policy_for_site
    from medsplit.flare.site_guard import check_job_folder, site_policy_or_defaults

    _, kits = kits
    kit = kits / "hospital-a"
    (kit / "local" / "medsplit_policy.yaml").write_text(POLICY)
    try:
        policy = policy_for_site(kit, "hospital-a")
        honest = _job_folder(tmp_path / "honest", {"hijack_detector": True, "probe_every": 10, "laplace_scale": 0.5})
        assert check_job_folder(honest, "hospital-a", policy) is None
        paper = _job_folder(tmp_path / "paper", ON_PAPER_ONLY)
        refusal = check_job_folder(paper, "hospital-a", policy)
        assert refusal and "the job's probe_every=1000000000" in refusal
        assert refusal in _build_at_site(kit, paper, byoc=False)
        shipped = _job_folder(tmp_path / "shipped", {"hijack_detector": True, "laplace_scale": 0.5}, ship_code=True)
        refusal = check_job_folder(shipped, "hospital-a", policy)  # the app/custom folder alone marks it as code
        assert refusal and "the job ships its own code" in refusal
        assert refusal in _build_at_site(kit, shipped, byoc=True)
        config_file = honest / "app" / "config" / "config_fed_client.json"
        config_file.write_text(json.dumps(_replace_hospital(json.loads(config_file.read_text()))))
        assert "builds component 'medsplit.flare.pingpong.PingHospital'" in check_job_folder(honest, "hospital-a", policy)
        # a site the job's deploy_map leaves out gets no app, and says so
        meta = json.loads((paper / "meta.json").read_text())
        meta["deploy_map"] = {"app": ["hospital-b"]}
        (paper / "meta.json").write_text(json.dumps(meta))
        assert "gives this site no app" in check_job_folder(paper, "hospital-a", site_policy_or_defaults(tmp_path, "hospital-a"))
    finally:
        (kit / "local" / "medsplit_policy.yaml").unlink()


@pytest.mark.flare
def test_guard_simulated_job_refuses_at_each_hospital_by_its_own_kit_before_the_simulator_starts(tmp_path, nvflare):
    from medsplit.flare.job import job_description
    from medsplit.flare.policy import write_site_kits
    from medsplit.flare.site_guard import guard_simulated_job

    kits = write_site_kits(tmp_path / "out", {"hospital-a": policy_file(tmp_path)})
    paper = job_description(tiny_job_config(tmp_path), SITES, defences=ON_PAPER_ONLY)
    paper["sites_root"] = str(tmp_path / "out" / "sites")  # the simulator's own folders: not the job author's
    refused = guard_simulated_job(paper, kits)
    assert refused is not None and refused["status"] == "failed" and refused["job"] == paper["name"]
    assert list(refused["errors"]) == ["hospital-a"]  # hospital-b has no policy: the defaults accept the job
    assert "site hospital-a refuses job" in refused["errors"]["hospital-a"]
    assert "epsilon C/b=2e+09 per inference release" in refused["errors"]["hospital-a"]
    honest = job_description(tiny_job_config(tmp_path), SITES, defences={"hijack_detector": True, "probe_every": 10,
                                                               "laplace_scale": 0.5})
    assert guard_simulated_job(honest, kits) is None
    assert guard_simulated_job(honest, None) is None  # no kits at all: every site has the defaults
    # an unreadable policy refuses every job at that site, naming the file
    (kits / "hospital-b" / "local").mkdir(parents=True)
    (kits / "hospital-b" / "local" / "medsplit_policy.yaml").write_text("site: hospital-a\n")
    refused = guard_simulated_job(honest, kits)
    assert "belongs to site 'hospital-a', but site 'hospital-b' is reading it" in refused["errors"]["hospital-b"]
