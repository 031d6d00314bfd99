"""FLARE's proof-of-concept mode on this machine: real processes, gRPC on loopback, mutual TLS.

POC is a single-machine demonstration of a deployment, not a deployment: every participant's
start-up kit, private keys included, lies in one folder on this machine, and the folder is
deleted when the run ends. What it does show is the deployed set-up working end to end:

* :func:`poc_project_file` is the project ``medsplit flare provision`` writes (the consortium's
  own project, organisation and admin, the admin with role ``lead``), plus the one
  ``project_admin`` that FLARE 2.9's POC tooling insists on (``get_proj_admin`` refuses a project
  without exactly one). That project admin's kit is written but never started or logged in with.
* Before any FLARE process starts, every kit gets the same ``local/`` files as a provisioned kit
  (:func:`medsplit.flare.provision.write_site_local`: the admin's rights, the class allow-list,
  each hospital's job guard) and each hospital's own policy file, if it has one.
* The job is submitted by the consortium's admin, as ``lead``, without any code (FLARE's Collab
  export copies the code into ``app/custom``; it is removed, as ``medsplit flare job`` does), so
  FLARE does not mark it bring-your-own-code and every hospital's guard checks it.
* Each site keeps its runs under its own workspace (``<kit>/medsplit``, as when deployed), which
  is a link to ``OUT/sites/<site>`` so that the checkpoints survive the POC folder (``--resume``).

:func:`run_poc` then waits for the job, reads the report the server site wrote, and stops every
FLARE process and removes the POC workspace, also when the job fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import yaml
from nvflare.fuel.flare_api.flare_api import new_secure_session
from nvflare.recipe.poc_env import PocEnv
from nvflare.tool.poc.poc_commands import _start_poc, get_prod_dir, prepare_poc_provision

from medsplit.config import Config
from medsplit.flare import require_nvflare
from medsplit.flare.job import job_description, strip_job_code
from medsplit.flare.policy import POLICY_FILE
from medsplit.flare.provision import project_file, write_site_local
from medsplit.flare.simulate import build_recipe

#: The project admin FLARE's POC tooling needs; never started, never used to log in.
POC_PROJECT_ADMIN = "poc-project-admin@medsplit.local"
#: Seconds FLARE's own PocEnv waits after starting the services before it submits.
SERVICE_START_WAIT_S = 3


def poc_project_file(sites: list[str], admin: str = "admin@medsplit.local", project: str = "medsplit",
                     org: str = "consortium", fed_port: int = 8102) -> dict:
    """The POC project: ``medsplit flare provision``'s project for a server on ``localhost`` and
    ``sites``, plus FLARE's required project admin (:data:`POC_PROJECT_ADMIN`)."""
    if admin == POC_PROJECT_ADMIN:
        raise ValueError(f"--admin {admin!r} is the name of the POC's placeholder project admin; choose another")
    spec = project_file(list(sites), server_host="localhost", fed_port=fed_port, admin_port=fed_port + 1,
                        admin=admin, project=project, org=org)
    admin_org = next(p["org"] for p in spec["participants"] if p["name"] == admin)
    spec["participants"].append({"name": POC_PROJECT_ADMIN, "type": "admin", "org": admin_org, "role": "project_admin"})
    return spec


def install_site_local(prod_dir: Path, spec: dict, sites_dir: Path, policies: dict[str, str | Path] | None) -> None:
    """What a provisioned site has beyond FLARE's kit, installed into each POC kit under ``prod_dir``:
    the ``local/`` files of :func:`medsplit.flare.provision.write_site_local`, each hospital's policy
    file (``policies``: site -> file), and ``<kit>/medsplit`` linked to ``sites_dir/<site>``."""
    policies = dict(policies or {})
    hospitals = [p["name"] for p in spec["participants"] if p["type"] == "client"]
    unknown = sorted(set(policies) - set(hospitals))
    if unknown:
        raise ValueError(f"policy files for {unknown}, which are not hospital sites of this POC ({hospitals})")
    for p in spec["participants"]:
        if p["type"] not in ("client", "server"):
            continue
        server = p["type"] == "server"
        kit = prod_dir / p["name"]
        write_site_local(kit, p["name"], server=server)
        if p["name"] in policies:
            shutil.copyfile(policies[p["name"]], kit / POLICY_FILE)
        # The server site is "server" to medsplit whatever its host name (sites.py's _site_root).
        own = sites_dir / ("server" if server else p["name"])
        own.mkdir(parents=True, exist_ok=True)
        (kit / "medsplit").symlink_to(own, target_is_directory=True)


def export_code_free_job(fed_job, into: Path) -> Path:
    """Export FLARE's job ``fed_job`` into ``into`` and remove the code the export copied; returns
    the job folder (what the admin submits)."""
    fed_job.export_job(str(into))
    folder = Path(into) / fed_job.name
    strip_job_code(folder)
    leftover = sorted(str(p) for p in folder.rglob("custom") if p.is_dir())
    if leftover:
        raise RuntimeError(f"the POC job still ships code in {leftover}")
    return folder


def _consortium_poc_env(spec: dict, project_yml: Path, sites_dir: Path, policies: dict | None):
    """FLARE's PocEnv, with the consortium's admin as the submitter (see the module docstring)."""
    admin = next(p["name"] for p in spec["participants"] if p["type"] == "admin" and p.get("role") != "project_admin")

    class ConsortiumPocEnv(PocEnv):
        # Mirrors FLARE 2.9's PocEnv.deploy (prepare, start, wait, submit), with the sites'
        # local/ files installed between prepare and start and a code-free job submitted by
        # the consortium's admin, whose kit (not the project admin's) every session uses.
        submitter: dict = {}

        def _get_admin_startup_kit_path(self) -> str:
            kit = Path(get_prod_dir(self.poc_workspace, spec["name"])) / admin
            if not kit.is_dir():
                raise RuntimeError(f"the POC admin kit {kit} is missing")
            return str(kit)

        def deploy(self, job) -> str:
            if self._check_poc_running():
                self.stop(clean_up=True)
            prepare_poc_provision(clients=list(self.clients), number_of_clients=self.num_clients,
                                  workspace=self.poc_workspace, docker_image=None, use_he=False,
                                  project_conf_path=str(project_yml), examples_dir=None)
            install_site_local(Path(get_prod_dir(self.poc_workspace, spec["name"])), spec, sites_dir, policies)
            _start_poc(poc_workspace=self.poc_workspace, gpu_ids=[], excluded=[admin], services_list=[])
            time.sleep(SERVICE_START_WAIT_S)
            with tempfile.TemporaryDirectory() as tmp:
                folder = export_code_free_job(job, Path(tmp))
                sess = new_secure_session(admin, self._get_admin_startup_kit_path(), timeout=30.0)
                try:
                    job_id = sess.submit_job(str(folder))
                    meta = sess.get_job_meta(job_id)
                finally:
                    sess.close()
            self.submitter = {k: meta.get(f"submitter_{k}") for k in ("name", "org", "role")}
            self.submitter["byoc"] = bool(meta.get("byoc"))
            return job_id

    return ConsortiumPocEnv(clients=[p["name"] for p in spec["participants"] if p["type"] == "client"],
                            project_conf_path=str(project_yml), username=admin)


def keep_logs(poc_ws: Path, into: Path) -> Path:
    """Copy FLARE's logs of every POC participant and job (``log.txt``, ``error_log.txt``) from
    ``poc_ws`` to ``into`` (keeping their paths), so that they outlive the POC workspace."""
    if into.exists():
        shutil.rmtree(into)
    for log in poc_ws.glob("*/prod_*/**/*log.txt"):
        dest = into / log.relative_to(poc_ws)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, dest)
    return into


def _processes_naming(folder: Path) -> dict[int, str]:
    """Process id -> command line of every process whose command line names ``folder``."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if str(folder) in cmdline:
            found[int(proc.name)] = cmdline.strip()
    return found


def end_leftover_processes(poc_ws: Path, grace_s: float = 20.0) -> dict[int, str]:
    """FLARE's POC stop asks every site to shut down and returns once the server stops answering;
    a site's process can outlive it. Wait up to ``grace_s`` for every process started in
    ``poc_ws`` (they name it on their command line) to end, then kill those left, by id.
    Returns what had to be killed (id -> command line)."""
    deadline = time.time() + grace_s
    while (left := _processes_naming(poc_ws)) and time.time() < deadline:
        time.sleep(1.0)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def _tls_of(poc_ws: Path, sites: list[str]) -> dict[str, str]:
    """Each hospital's ``connection_security`` from its POC start-up kit (FLARE's provisioning)."""
    out = {}
    for site in sites:
        found = sorted(poc_ws.glob(f"*/prod_*/{site}/startup/fed_client.json"))
        if found:
            out[site] = json.loads(found[-1].read_text())["client"].get("connection_security", "unset")
    return out


def run_poc(cfg: Config, sites: list[str], out_dir: str | Path, defences: dict | None = None,
            policies: dict[str, str | Path] | None = None, timeout_s: float = 120.0,
            job_timeout_s: float = 3600.0, resume: bool = False, admin: str = "admin@medsplit.local",
            project: str = "medsplit", org: str = "consortium", port: int = 8102) -> dict:
    """Run ``cfg`` in FLARE POC mode (other arguments as :func:`medsplit.flare.simulate.run_simulator`).

    Args:
        admin, project, org: the consortium's identity, as for ``medsplit flare provision``.
        port: the server's port for the sites (the admin's is ``port + 1``), both on loopback.

    Returns ``medsplit_result.json``'s content plus ``tls`` (each hospital's connection security),
    ``submitter`` (name, org and role of who submitted the job as FLARE recorded it, and whether
    FLARE saw code in it), ``seconds`` (start-up to stop) and ``killed_after_stop`` (the command
    lines of FLARE processes that outlived FLARE's own stop and were killed).
    """
    require_nvflare()

    t0 = time.time()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    poc_ws = out_dir / "poc-workspace"
    if poc_ws.exists():
        shutil.rmtree(poc_ws)
    poc_ws.mkdir()
    spec = poc_project_file(sites, admin=admin, project=project, org=org, fed_port=port)
    project_yml = out_dir / "poc-project.yml"
    project_yml.write_text(yaml.safe_dump(spec, sort_keys=False))
    # No sites_root: each site keeps its runs in its own workspace, as deployed (and as its guard
    # requires); install_site_local links that folder to out_dir/sites/<site>.
    job = job_description(cfg, sites, defences=defences, out_dir=str(out_dir), timeout_s=timeout_s)
    job["job_timeout_s"] = float(job_timeout_s)
    job["resume"] = bool(resume)
    result_file = out_dir / "medsplit_result.json"
    result_file.unlink(missing_ok=True)
    # FLARE finds its POC workspace through this variable; the sites, its child processes, inherit it.
    saved = os.environ.get("NVFLARE_POC_WORKSPACE")
    os.environ["NVFLARE_POC_WORKSPACE"] = str(poc_ws)
    tls: dict[str, str] = {}
    env, status = None, None
    try:
        env = _consortium_poc_env(spec, project_yml, out_dir / "sites", policies)
        run = build_recipe(job).run(env)
        tls = _tls_of(poc_ws, sites)
        run.get_result(timeout=job_timeout_s, clean_up=False)
        status = run.get_status()
    finally:
        logs = keep_logs(poc_ws, out_dir / "poc-logs")  # before the POC workspace goes
        if env is not None:
            env.stop(clean_up=True)
        killed = end_leftover_processes(poc_ws)
        if killed:
            print(f"FLARE POC: killed {len(killed)} process(es) still running after the POC stopped: "
                  + "; ".join(f"{pid}: {cmd[:200]}" for pid, cmd in killed.items()), flush=True)
        if saved is None:
            os.environ.pop("NVFLARE_POC_WORKSPACE", None)
        else:
            os.environ["NVFLARE_POC_WORKSPACE"] = saved
    if not result_file.exists():
        raise RuntimeError(f"FLARE POC job {job['name']!r} ended ({status}) without a result from the server "
                           f"site; FLARE's logs: {logs}")
    result = json.loads(result_file.read_text())
    result.update({"tls": tls, "submitter": dict(env.submitter), "seconds": time.time() - t0,
                   "killed_after_stop": sorted(killed.values())})
    return result
