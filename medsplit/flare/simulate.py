"""Run a medsplit job in FLARE's simulator (every site on this machine, as FLARE runs them)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from medsplit.config import Config
from medsplit.flare import require_nvflare
from medsplit.flare.job import job_description
from medsplit.flare.policy import write_site_kits
from medsplit.flare.site_guard import guard_simulated_job
from medsplit.flare.transport import FlareTransport
from medsplit.transport import register_placement


def build_recipe(job: dict):
    """A FLARE Collab recipe for ``job``: the server site and one hospital app per site."""
    require_nvflare()
    from nvflare.collab import CollabRecipe  # optional extra: only when a FLARE job runs

    from medsplit.flare.sites import MedsplitHospital, MedsplitServer  # imports nvflare

    # sync_task_timeout: how long FLARE waits for a site to start its part; the job itself is
    # bounded by job_timeout_s (the hospitals' train calls).
    return CollabRecipe(job_name=job["name"], server=MedsplitServer(job), client=MedsplitHospital(job),
                        min_clients=len(job["sites"]), sync_task_timeout=int(job.get("timeout_s", 120)))


def run_simulator(cfg: Config, sites: list[str], out_dir: str | Path, workspace: str | Path,
                  defences: dict | None = None, policies: dict[str, str | Path] | None = None,
                  timeout_s: float = 120.0, name: str | None = None, resume: bool = False) -> dict:
    """Run ``cfg`` with one FLARE site per hospital plus the server, in the simulator.

    Args:
        cfg: the job's config (``split.clients`` must equal ``len(sites)``).
        sites: hospital site names, in client order.
        out_dir: where the server site writes ``metrics.json``, the HTML report and
            ``medsplit_result.json`` (``status`` ok/failed with each site's error).
        workspace: the simulator's workspace root (one folder per site under ``<workspace>/<job>``).
        defences: the job's defences (:class:`medsplit.flare.policy.JobDefences` fields).
        policies: site -> a policy file, copied to ``out_dir/site-kits/<site>/local/`` (a real
            hospital keeps it in its start-up kit; the simulator creates its site workspaces afresh).
        timeout_s: how long a site waits for a message before naming the silent site.
        name: FLARE job name (default: the run name).
        resume: every party continues from its last checkpoint under ``out_dir/sites/<site>``.

    Returns:
        ``medsplit_result.json``'s content (``{"status": "ok"|"failed", ...}``).
    """
    require_nvflare()
    from nvflare.recipe import SimEnv  # optional extra: only when a FLARE job runs

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    job = job_description(cfg, sites, defences=defences, out_dir=str(out_dir), timeout_s=timeout_s, name=name)
    job["sites_root"] = str(out_dir / "sites")  # each site's own runs/ and reports/ (the evaluating hospital's report)
    job["resume"] = bool(resume)
    workspace = Path(workspace).resolve()
    job_ws = workspace / job["name"]
    if job_ws.exists():
        shutil.rmtree(job_ws)
    # Each site's own policy, in a kit-like folder per site: FLARE's simulator recreates the site
    # workspaces when it starts, so the sites find these through MEDSPLIT_SITE_KITS instead.
    kits = write_site_kits(out_dir, policies)
    result_file = out_dir / "medsplit_result.json"
    # The simulator loads no site-local components, so the hospitals' site guard (which a deployed
    # site runs before FLARE builds a job) is applied here to the exported job folder instead.
    refused = guard_simulated_job(job, kits)
    if refused is not None:
        result_file.write_text(json.dumps(refused))
        return refused
    recipe = build_recipe(job)
    env = SimEnv(clients=list(sites), workspace_root=str(workspace), num_threads=len(sites))
    result_file.unlink(missing_ok=True)
    saved = os.environ.get("MEDSPLIT_SITE_KITS")
    os.environ["MEDSPLIT_SITE_KITS"] = str(kits)
    try:
        recipe.run(env)
    except RuntimeError as e:
        if not result_file.exists():
            raise RuntimeError(f"FLARE simulator run of job {job['name']!r} failed before the server site "
                               f"wrote a result: {e}") from e
    finally:
        if saved is None:
            os.environ.pop("MEDSPLIT_SITE_KITS", None)
        else:
            os.environ["MEDSPLIT_SITE_KITS"] = saved
    if not result_file.exists():
        raise RuntimeError(f"FLARE simulator run of job {job['name']!r} ended without a result; logs: {job_ws}/*/log.txt")
    return json.loads(result_file.read_text())


def train_with_flare(cfg: Config, run_dir: Path | None = None, resume: bool = False, quiet: bool = False) -> Path:
    """``split.transport=flare`` for ``medsplit train`` (``make ... TRANSPORT=flare``): the run in
    FLARE's simulator with hospital sites ``hospital-1..K``. The run folder
    (``<output.runs_dir>/<run>``) gets ``config.yaml``, ``metrics.json``, the report, each site's
    own folder and FLARE's workspace; ``reports/`` gets the report and metrics as for any run.

    Args:
        cfg: the run's config (``split.transport=flare``).
        run_dir: the run folder (default ``<output.runs_dir>/<run>``).
        resume: every site continues from its last checkpoint (``medsplit train --resume RUN_DIR``).
        quiet: no console output beyond FLARE's own logging.
    """
    require_nvflare()
    run_dir = Path(run_dir) if run_dir is not None else Path(cfg.output.runs_dir) / cfg.run_name()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    sites = [f"hospital-{k + 1}" for k in range(cfg.split.clients)]
    result = run_simulator(cfg, sites, run_dir, run_dir / "flare-workspace", timeout_s=cfg.split.timeout_s, resume=resume)
    if result["status"] != "ok":
        raise RuntimeError(f"FLARE job {cfg.run_name()!r} failed: {result.get('errors')}")
    reports = Path(cfg.output.reports_dir)
    reports.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir / "metrics.json", reports / f"{cfg.run_name()}.json")
    shutil.copyfile(run_dir / f"{cfg.run_name()}.html", reports / f"{cfg.run_name()}.html")
    if not quiet:
        print(f"report: {reports / (cfg.run_name() + '.html')}\nmetrics: {run_dir / 'metrics.json'}\nrun: {run_dir}")
    return run_dir


# split.transport=flare: medsplit.transport imports this module by name when such a run starts.
register_placement("flare", train_with_flare, transport=FlareTransport)
