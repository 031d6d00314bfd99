"""FLARE's proof-of-concept mode on this machine: real processes, gRPC on loopback, mutual TLS.

:func:`run_poc` provisions a POC project (FLARE's ``nvflare poc prepare``: a root CA and a
certificate per site), starts the server and one process per hospital (``nvflare poc start``),
submits the job as the POC admin, waits for it, reads the report the server site wrote, and stops
every FLARE process (``nvflare poc stop``) and removes the POC workspace, also when the job fails.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from medsplit.config import Config
from medsplit.flare import require_nvflare
from medsplit.flare.job import job_description
from medsplit.flare.policy import write_site_kits


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
            job_timeout_s: float = 3600.0, resume: bool = False) -> dict:
    """Run ``cfg`` in FLARE POC mode (arguments as :func:`medsplit.flare.simulate.run_simulator`).

    Returns ``medsplit_result.json``'s content plus ``tls`` (each hospital's connection security)
    and ``seconds`` (start-up to stop).
    """
    require_nvflare()
    from nvflare.recipe import PocEnv

    from medsplit.flare.simulate import build_recipe

    t0 = time.time()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    poc_ws = out_dir / "poc-workspace"
    if poc_ws.exists():
        shutil.rmtree(poc_ws)
    kits = write_site_kits(out_dir, policies)
    job = job_description(cfg, sites, defences=defences, out_dir=str(out_dir), timeout_s=timeout_s)
    job["job_timeout_s"] = float(job_timeout_s)
    job["sites_root"] = str(out_dir / "sites")
    job["resume"] = bool(resume)  # each site's own runs/ and reports/ (the evaluating hospital's report)
    result_file = out_dir / "medsplit_result.json"
    result_file.unlink(missing_ok=True)
    # The sites are child processes of this one: they inherit where POC lives and the kits folder.
    os.environ["NVFLARE_POC_WORKSPACE"] = str(poc_ws)
    os.environ["MEDSPLIT_SITE_KITS"] = str(kits)
    env = PocEnv(clients=list(sites), num_clients=len(sites))
    tls: dict[str, str] = {}
    try:
        run = build_recipe(job).run(env)
        tls = _tls_of(poc_ws, sites)
        run.get_result(timeout=job_timeout_s)
    finally:
        env.stop(clean_up=True)
    if not result_file.exists():
        raise RuntimeError(f"FLARE POC job {job['name']!r} ended without a result from the server site")
    result = json.loads(result_file.read_text())
    result.update({"tls": tls, "seconds": time.time() - t0})
    return result
