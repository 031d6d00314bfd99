"""The FLARE job of a medsplit run: its description, and the job folder an admin submits.

A job carries the resolved medsplit config, the hospital sites in client order (site k runs
``client<k>``), the defences every hospital applies (checked by each hospital against its OWN
site policy), and timeouts. It never carries a site policy or a hospital's data location: those
stay in each site's start-up kit / environment (``MEDSPLIT_DATA``); nor code: every site runs the
medsplit installed there (the job folder has no ``app/custom``).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from medsplit.config import Config
from medsplit.flare.job_defences import JobDefences
from medsplit.flare.site_run import check_flare_config
from medsplit.train.party_plan import config_hash

_SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_site_names(sites: list[str], what: str = "--sites") -> list[str]:
    sites = [s.strip() for s in sites if s.strip()]
    bad = [s for s in sites if not _SITE_NAME.match(s)]
    if bad:
        raise ValueError(f"{what}: site name(s) {bad} must start with a letter or digit and hold only letters, digits, '.', '_', '-'")
    if len(set(sites)) != len(sites):
        raise ValueError(f"{what}: site names repeat: {sites}")
    return sites


def job_description(cfg: Config, sites: list[str], defences: dict | None = None, out_dir: str = "",
                    timeout_s: float = 120.0, own_data: bool = False, name: str | None = None) -> dict:
    """The JSON-able job every site receives.

    Args:
        cfg: resolved config; ``split.clients`` must equal the number of hospital sites.
        sites: hospital site names in client order.
        defences: :class:`JobDefences` fields (validated here).
        out_dir: where the server site writes the report (empty: its job workspace, which the
            admin downloads with the job).
        timeout_s: a site waiting longer than this for a message names the silent site.
        own_data: each hospital's data folder holds only its own images (production), instead of
            every site taking its partition of one shared dataset (simulator, POC).
        name: FLARE job name (default: the run name).
    """
    check_flare_config(cfg)
    sites = check_site_names(sites)
    if len(sites) != cfg.split.clients:
        raise ValueError(f"{len(sites)} hospital site(s) {sites} for split.clients={cfg.split.clients}; "
                         "give one site per hospital (or set split.clients)")
    if "server" in sites:
        raise ValueError("'server' is the server site's name; hospital sites need other names")
    return {
        "name": name or cfg.run_name(),
        "config": cfg.to_dict(),
        "config_hash": config_hash(cfg),
        "sites": sites,
        "defences": JobDefences.from_dict(defences).to_dict(),
        "out_dir": out_dir,
        "timeout_s": float(timeout_s),
        "job_timeout_s": 7 * 24 * 3600.0,
        "own_data": bool(own_data),
        "resume": False,
    }


def write_job_folder(cfg: Config, sites: list[str], out: str | Path, defences: dict | None = None,
                     timeout_s: float = 120.0, own_data: bool = True, resume: bool = False) -> Path:
    """Write the job folder an admin submits (``nvflare job submit -j DIR`` or the admin console's
    ``submit_job DIR``), exported by FLARE's own job API; returns the folder."""
    job = job_description(cfg, sites, defences=defences, timeout_s=timeout_s, own_data=own_data)
    job["resume"] = bool(resume)  # each site continues from its checkpoint under <site>/medsplit/runs
    return export_job_folder(job, out)


def export_job_folder(job: dict, out: str | Path) -> Path:
    """Export ``job`` (a :func:`job_description`) with FLARE's own job API into ``out/<name>``,
    without code (:func:`strip_job_code`); returns the folder."""
    from medsplit.flare.simulate import build_recipe  # optional extra nvflare: a job folder is written without it

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    build_recipe(job).export(str(out))
    folder = out / job["name"]
    if not (folder / "meta.json").exists():
        raise RuntimeError(f"FLARE's export did not write {folder / 'meta.json'}; see the files under {out}")
    strip_job_code(folder)
    return folder


def strip_job_code(folder: Path) -> list[Path]:
    """Remove the code FLARE's Collab export copies into the job (``<app>/custom``); returns what went.

    Every site runs the medsplit it has installed: a job carries data (the config, the defences),
    never code. A job without a custom folder is not bring-your-own-code to FLARE, so its admin
    needs only the right to submit jobs, and a hospital's guard
    (:mod:`medsplit.flare.site_guard`) refuses any job that does ship code.
    """
    removed = sorted(p for p in Path(folder).glob("*/custom") if p.is_dir())
    for path in removed:
        shutil.rmtree(path)
    return removed
