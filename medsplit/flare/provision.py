"""Provisioning: the FLARE project file and every participant's start-up kit (mutual TLS).

``medsplit flare provision --sites server,hospital-a,hospital-b --out DIR`` writes
``DIR/project.yml`` and runs FLARE's own provisioner (``nvflare provision``) on it, which creates
a root CA, a certificate and key per site and per admin, signed start-up scripts and the
``fed_server.json``/``fed_client.json`` with ``connection_security: mtls`` (gRPC). Each kit goes
to its site out of band; a hospital then adds its own ``local/medsplit_policy.yaml`` (a sample is
written next to it) and never receives another site's key.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from medsplit.flare import require_nvflare
from medsplit.flare.job import check_site_names
from medsplit.flare.policy import POLICY_FILE, SitePolicy

SAMPLE_POLICY = POLICY_FILE.with_suffix(".yaml.sample")


def project_file(sites: list[str], server_host: str = "localhost", fed_port: int = 8102, admin_port: int = 8103,
                 admin: str = "admin@medsplit.local", project: str = "medsplit") -> dict:
    """FLARE's project definition (api_version 3) for a server and hospital sites.

    Args:
        sites: ``server`` plus the hospital site names (``server`` may be omitted).
        server_host: the server's host name as the hospitals reach it; it is the server's
            participant name, so its certificate is issued for this name (TLS checks it).
        fed_port, admin_port: the server's ports for sites and for the admin console.
        admin: the admin user who submits jobs (project_admin).
        project: the FLARE project name (the folder under ``--out``).
    """
    sites = check_site_names(sites)
    hospitals = [s for s in sites if s != "server"]
    if not hospitals:
        raise ValueError("--sites names no hospital (e.g. --sites server,hospital-a,hospital-b)")

    def org(name: str) -> str:  # FLARE orgs allow letters, digits and '_' only
        return "".join(c if c.isalnum() else "_" for c in name)

    participants = [{"name": server_host, "type": "server", "org": "consortium", "fed_learn_port": fed_port,
                     "admin_port": admin_port}]
    participants += [{"name": h, "type": "client", "org": org(h)} for h in hospitals]
    participants.append({"name": admin, "type": "admin", "org": "consortium", "role": "project_admin"})
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


def provision(sites: list[str], out: str | Path, server_host: str = "localhost", fed_port: int = 8102,
              admin_port: int = 8103, admin: str = "admin@medsplit.local", project: str = "medsplit") -> Path:
    """Write ``out/project.yml`` and the start-up kits (``out/<project>/prod_NN/<participant>``);
    returns the kits folder. Arguments as in :func:`project_file`."""
    require_nvflare()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    spec = project_file(sites, server_host, fed_port, admin_port, admin, project)
    project_yml = out / "project.yml"
    project_yml.write_text(yaml.safe_dump(spec, sort_keys=False))
    run = subprocess.run([sys.executable, "-m", "nvflare.cli", "provision", "-p", str(project_yml), "-w", str(out)],
                         capture_output=True, text=True, cwd=out)
    prods = sorted((out / project).glob("prod_*"))
    if run.returncode != 0 or not prods:
        raise RuntimeError(f"nvflare provision failed for {project_yml} (exit {run.returncode}):\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    kits = prods[-1]
    for p in spec["participants"]:
        if p["type"] == "client":
            sample = kits / p["name"] / SAMPLE_POLICY
            sample.parent.mkdir(parents=True, exist_ok=True)
            sample.write_text("# Rename to medsplit_policy.yaml to make it this hospital's policy; every job is checked\n"
                              "# against it before this hospital trains. hijack_detector: off | on | abort\n"
                              + SitePolicy(p["name"], "abort", 0.5, None).to_yaml())
    return kits


def kit_files(kits: Path, site: str, server: bool = False) -> list[Path]:
    """The TLS files a kit must hold (used by tests and by ``flare provision`` to report)."""
    names = ("server.crt", "server.key", "rootCA.pem", "fed_server.json") if server else \
            ("client.crt", "client.key", "rootCA.pem", "fed_client.json")
    return [kits / site / "startup" / n for n in names]
