"""Provisioning: the FLARE project file and every participant's start-up kit (mutual TLS).

``medsplit flare provision --sites server,hospital-a,hospital-b --out DIR --project NAME --org ORG
--admin EMAIL`` writes ``DIR/project.yml`` for the consortium's own project, organisation and
admin, and runs FLARE's own provisioner (``nvflare provision``) on it, which creates a root CA, a
certificate and key per site and per admin, signed start-up scripts and the
``fed_server.json``/``fed_client.json`` with ``connection_security: mtls`` (gRPC).

What medsplit adds to each hospital's kit, under its ``local/`` folder (the site's own
configuration, which no job can change):

* ``authorization.json``: the admin's role (``lead``) may submit and manage its own jobs and
  nothing else: no bring-your-own-code (``byoc: none``), no operating or shell access to the
  sites. medsplit jobs carry no code, so that is all submitting them needs; the admin is not
  FLARE's ``project_admin``.
* ``resources.json``: FLARE's resources plus a ``class_allow_list`` of FLARE's defaults, the
  Collab executor and the medsplit hospital: the only job classes the site builds (the server's
  kit gets the same two files, with the Collab controller and the medsplit server).
* ``medsplit__j_resources.json``: the site's job guard (:mod:`medsplit.flare.site_guard`), which
  checks every job against the site's policy before FLARE builds any of the job's components.
* ``medsplit_policy.yaml.sample``: a policy to rename to ``medsplit_policy.yaml`` and adapt.

Private keys: each kit's ``startup/*.key`` belongs to that participant alone; FLARE's
``<project>/state/cert.json`` holds the root CA's private key and a copy of every participant's
key. Provisioning sets them to mode 0600, lists them, and (``--remove-ca-state``) deletes
``cert.json`` once the kits are written; otherwise keep it offline, never on a site.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from nvflare.app_common.default_component_policy import DEFAULT_CLASS_ALLOW_LIST

from medsplit.flare import require_nvflare
from medsplit.flare.job import check_site_names
from medsplit.flare.policy import POLICY_FILE, SitePolicy
from medsplit.flare.site_guard import GUARD_RESOURCES, GUARD_RESOURCES_FILE, HOSPITAL_COMPONENTS

SAMPLE_POLICY = POLICY_FILE.with_suffix(".yaml.sample")
#: FLARE's role for the admin who submits medsplit jobs (not project_admin).
ADMIN_ROLE = "lead"
#: What that role may do at every site (FLARE's authorization.json rights): submit jobs and manage,
#: view and download its own; never bring its own code, operate a site or open its shell.
ADMIN_RIGHTS = {"submit_job": "any", "clone_job": "n:submitter", "manage_job": "n:submitter",
                "download_job": "n:submitter", "view": "any", "operate": "none", "shell_commands": "none",
                "byoc": "none", "server-predeployed-flwr": "none"}


def _org(name: str) -> str:
    """FLARE organisation names allow letters, digits and '_' only."""
    return "".join(c if c.isalnum() else "_" for c in name)


def project_file(sites: list[str], server_host: str = "localhost", fed_port: int = 8102, admin_port: int = 8103,
                 admin: str = "admin@medsplit.local", project: str = "medsplit", org: str = "consortium") -> dict:
    """FLARE's project definition (api_version 3) for a server and hospital sites.

    Args:
        sites: ``server`` plus the hospital site names (``server`` may be omitted).
        server_host: the server's host name as the hospitals reach it; it is the server's
            participant name, so its certificate is issued for this name (TLS checks it).
        fed_port, admin_port: the server's ports for sites and for the admin console.
        admin: the admin user (an e-mail address) who submits jobs, with role ``lead``.
        project: the consortium's FLARE project name (the folder under ``--out``).
        org: the consortium's organisation (the server's and the admin's); each hospital's
            organisation is its site name.
    """
    sites = check_site_names(sites)
    hospitals = [s for s in sites if s != "server"]
    if not hospitals:
        raise ValueError("--sites names no hospital (e.g. --sites server,hospital-a,hospital-b)")
    if "@" not in admin:
        raise ValueError(f"--admin {admin!r} must be the admin's e-mail address (FLARE names admins by it)")
    if not project or _org(project) != project.replace("-", "_") or "/" in project:
        raise ValueError(f"--project {project!r}: use letters, digits, '-' and '_'")
    participants = [{"name": server_host, "type": "server", "org": _org(org), "fed_learn_port": fed_port,
                     "admin_port": admin_port}]
    participants += [{"name": h, "type": "client", "org": _org(h)} for h in hospitals]
    participants.append({"name": admin, "type": "admin", "org": _org(org), "role": ADMIN_ROLE})
    return {
        "api_version": 3, "name": project, "description": f"medsplit split learning: server and {len(hospitals)} hospital(s)",
        "participants": participants,
        "builders": [
            {"path": "nvflare.lighter.impl.workspace.WorkspaceBuilder"},
            {"path": "nvflare.lighter.impl.static_file.StaticFileBuilder", "args": {"config_folder": "config", "scheme": "grpc"}},
            {"path": "nvflare.lighter.impl.cert.CertBuilder"},
            {"path": "nvflare.lighter.impl.signature.SignatureBuilder"},
        ],
    }


#: What the server site's job configuration builds (its class allow-list adds these to FLARE's).
SERVER_COMPONENTS = ("medsplit.flare.sites.MedsplitServer", "nvflare.collab.runtime.controller.CollabController")


def write_site_local(kit: Path, site: str, server: bool = False) -> list[Path]:
    """A kit's ``local/`` files medsplit adds (see the module docstring); returns them. The server
    gets the admin's rights and its class allow-list; hospitals also the job guard and a sample policy."""
    local = kit / "local"
    local.mkdir(parents=True, exist_ok=True)
    written = []
    authz_default = local / "authorization.json.default"
    authz = json.loads(authz_default.read_text()) if authz_default.exists() else {"format_version": "1.0", "permissions": {}}
    authz["permissions"][ADMIN_ROLE] = dict(ADMIN_RIGHTS)
    written.append(local / "authorization.json")
    written[-1].write_text(json.dumps(authz, indent=2))
    resources_default = local / "resources.json.default"
    resources = json.loads(resources_default.read_text()) if resources_default.exists() else {"format_version": 2}
    resources["class_allow_list"] = list(DEFAULT_CLASS_ALLOW_LIST) + list(SERVER_COMPONENTS if server else HOSPITAL_COMPONENTS)
    written.append(local / "resources.json")
    written[-1].write_text(json.dumps(resources, indent=2))
    if server:
        return written
    written.append(kit / GUARD_RESOURCES_FILE)
    written[-1].write_text(json.dumps(GUARD_RESOURCES, indent=2))
    written.append(kit / SAMPLE_POLICY)
    written[-1].write_text("# Rename to medsplit_policy.yaml to make it this hospital's policy; every job is checked\n"
                           "# against it before this hospital builds or trains anything. See medsplit/flare/policy.py.\n"
                           + SitePolicy(site, "abort", 0.5, None).to_yaml())
    return written


def private_key_files(out: Path, kits: Path, project: str) -> list[tuple[Path, str]]:
    """Every file provisioning wrote that holds a private key, with who may hold it."""
    found = [(p, f"participant {p.parent.parent.name} only") for p in sorted(kits.glob("*/startup/*.key"))]
    state = out / project / "state" / "cert.json"
    if state.exists():
        found.append((state, "the root CA's private key and every participant's key: keep offline, never on a site"))
    return found


def provision(sites: list[str], out: str | Path, server_host: str = "localhost", fed_port: int = 8102,
              admin_port: int = 8103, admin: str = "admin@medsplit.local", project: str = "medsplit",
              org: str = "consortium", remove_ca_state: bool = False) -> Path:
    """Write ``out/project.yml`` and the start-up kits (``out/<project>/prod_NN/<participant>``);
    returns the kits folder. Every private key file is left at mode 0600; with
    ``remove_ca_state`` FLARE's ``state/cert.json`` (the root CA's key) is deleted once the kits
    are written. Other arguments as in :func:`project_file`."""
    require_nvflare()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    spec = project_file(sites, server_host, fed_port, admin_port, admin, project, org)
    project_yml = out / "project.yml"
    project_yml.write_text(yaml.safe_dump(spec, sort_keys=False))
    run = subprocess.run([sys.executable, "-m", "nvflare.cli", "provision", "-p", str(project_yml), "-w", str(out)],
                         capture_output=True, text=True, cwd=out)
    prods = sorted((out / project).glob("prod_*"))
    if run.returncode != 0 or not prods:
        raise RuntimeError(f"nvflare provision failed for {project_yml} (exit {run.returncode}):\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    kits = prods[-1]
    for p in spec["participants"]:
        if p["type"] in ("client", "server"):
            write_site_local(kits / p["name"], p["name"], server=p["type"] == "server")
    for path, _ in private_key_files(out, kits, project):
        os.chmod(path, 0o600)
    if remove_ca_state:
        (out / project / "state" / "cert.json").unlink(missing_ok=True)
    return kits


def kit_files(kits: Path, site: str, server: bool = False) -> list[Path]:
    """The TLS files a kit must hold (used by tests and by ``flare provision`` to report)."""
    names = ("server.crt", "server.key", "rootCA.pem", "fed_server.json") if server else \
            ("client.crt", "client.key", "rootCA.pem", "fed_client.json")
    return [kits / site / "startup" / n for n in names]
