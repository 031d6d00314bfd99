"""The hospital's job guard: code installed at the site that checks every FLARE job before any of
the job's components is built, so a job cannot switch the site's policy off by shipping or naming
other code.

A site installs it by naming it in its own FLARE configuration, outside any job:
``<site kit>/local/medsplit__j_resources.json`` (FLARE loads ``*__j_resources.json`` from the
site's ``local/`` folder into every job process; ``medsplit flare provision`` writes it)::

    {"format_version": 2,
     "components": [{"id": "medsplit_job_guard", "path": "medsplit.flare.site_guard.MedsplitJobGuard", "args": {}}]}

FLARE fires ``BEFORE_BUILD_COMPONENT`` to the site's components for each component of the job's
``config_fed_client.json``, before building it. The guard then refuses, naming the site's policy
file and the rule:

* a job that ships its own code (an ``app/custom`` folder, which FLARE's server marks as BYOC in
  the job's meta), unless the policy has ``jobs.allow_custom_code: true``;
* a component other than the medsplit hospital (``medsplit.flare.sites.MedsplitHospital``),
  FLARE's Collab executor that hosts it and the log streamer FLARE's own site configuration adds
  to every job (:data:`SITE_INJECTED_COMPONENTS`), unless listed in ``jobs.allow_components``:
  pointing the job's configuration at a replacement class does not get past it;
* a job that chooses where the hospital writes (``sites_root``, for the simulator and POC only);
* a medsplit hospital whose job defences fall short of the policy
  (:meth:`medsplit.flare.policy.SitePolicy.enforce`, the same check ``train`` repeats).

Without a policy file the site gets the defaults: no job code, only the medsplit hospital.

FLARE's simulator builds no site-local components, so the guard does not run there by itself:
:func:`guard_simulated_job` runs the same check (:func:`check_job_folder`, which applies
:func:`check_job_component` to every component of a job folder as FLARE would build it) for every
hospital against its kit-like folder before the simulator starts.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from nvflare.apis.app_validation import AppValidationKey
from nvflare.apis.event_type import EventType
from nvflare.apis.fl_component import FLComponent
from nvflare.apis.fl_constant import FLContextKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.fl_exception import UnsafeComponentError

from medsplit.flare.job_defences import JobDefences, PolicyError
from medsplit.flare.policy import POLICY_FILE, SitePolicy, policy_for_site

HOSPITAL_CLASS = "medsplit.flare.sites.MedsplitHospital"
#: What a medsplit hospital's job configuration builds: the hospital and FLARE's Collab executor.
HOSPITAL_COMPONENTS = (HOSPITAL_CLASS, "nvflare.collab.runtime.executor.CollabExecutor")
#: What FLARE itself adds to every job at a site, from the site's own configuration: FLARE 2.9's
#: SiteLogStreamer (in every provisioned site's ``local/resources.json``) writes a JobLogStreamer
#: into each job's ``config_fed_client.json`` before the job starts; whether it streams the job's
#: ``error_log.txt`` to the server is the site's ``allow_log_streaming`` in that file.
SITE_INJECTED_COMPONENTS = ("nvflare.app_common.logging.job_log_streamer.JobLogStreamer",)
#: The file a site names the guard in (FLARE loads ``local/*__j_resources.json`` into job processes).
GUARD_RESOURCES_FILE = Path("local") / "medsplit__j_resources.json"
GUARD_RESOURCES = {"format_version": 2,
                   "components": [{"id": "medsplit_job_guard", "path": "medsplit.flare.site_guard.MedsplitJobGuard",
                                   "args": {}}]}


def site_policy_or_defaults(site_root: str | Path, site: str) -> SitePolicy:
    """The site's policy file, or the defaults (no job code, no defence required) when it has none."""
    policy = policy_for_site(site_root, site)
    if policy is None:
        policy = SitePolicy(site, source=f"{Path(site_root) / POLICY_FILE} (absent: the defaults)")
    return policy


def check_job_component(policy: SitePolicy, component: dict, job_meta: dict | None, job_name: str) -> str | None:
    """Why the site refuses to build ``component`` of a job, or ``None`` when it may.

    Args:
        policy: the site's policy.
        component: one component's configuration from the job (``path`` or ``class_path``, ``args``).
        job_meta: the job's meta as FLARE's server validated it (``byoc`` when it ships code).
        job_name: the job's name (named in the refusal).
    """
    if (job_meta or {}).get(AppValidationKey.BYOC) and not policy.allow_custom_code:
        return policy.code_violation(job_name)
    if not isinstance(component, dict):
        return f"site {policy.site} refuses {job_name}: a component configuration is a {type(component).__name__}"
    path = component.get("path") or component.get("class_path")
    allowed = HOSPITAL_COMPONENTS + SITE_INJECTED_COMPONENTS + tuple(policy.allow_components)
    if path not in allowed:
        return (f"site {policy.site} refuses {job_name}: its configuration builds component {path!r}, which is not "
                f"the medsplit hospital installed at this site (allowed: {list(allowed)}; a site adds others with "
                f"jobs.allow_components in {policy.source})")
    if path != HOSPITAL_CLASS:
        return None
    job = (component.get("args") or {}).get("job")
    if not isinstance(job, dict):
        return f"site {policy.site} refuses {job_name}: {HOSPITAL_CLASS} has no 'job' argument"
    if job.get("sites_root"):
        # Where a hospital keeps its runs is its own business: sites_root is for the simulator and
        # POC on one machine, which do not run this guard.
        return (f"site {policy.site} refuses {job_name}: the job sets sites_root={job['sites_root']!r}, choosing where "
                "this hospital writes its checkpoints and reports; a deployed hospital uses its own workspace")
    try:
        defences = JobDefences.from_dict(job.get("defences"), where=f"job {job_name} defences")
        batch_size = ((job.get("config") or {}).get("train") or {}).get("batch_size")
        policy.enforce(defences, job_name=job_name, batch_size=batch_size if isinstance(batch_size, int) else None)
    except (PolicyError, RuntimeError) as e:
        return str(e)
    return None


class MedsplitJobGuard(FLComponent):
    """The site-installed check of every job (see the module docstring); FLARE builds it from the
    site's ``local/`` configuration in each job process."""

    def handle_event(self, event_type: str, fl_ctx: FLContext) -> None:
        if event_type != EventType.BEFORE_BUILD_COMPONENT:
            return
        workspace = fl_ctx.get_prop(FLContextKey.WORKSPACE_OBJECT)
        site = fl_ctx.get_identity_name() or fl_ctx.get_prop(FLContextKey.CLIENT_NAME)
        meta = fl_ctx.get_prop(FLContextKey.JOB_META) or {}
        job_name = f"job {meta.get('name') or fl_ctx.get_job_id()!r}"
        try:
            policy = site_policy_or_defaults(workspace.get_root_dir(), site)
            error = check_job_component(policy, fl_ctx.get_prop(FLContextKey.COMPONENT_CONFIG), meta, job_name)
        except PolicyError as e:  # an unreadable policy refuses every job, naming the file
            error = f"site {site} refuses {job_name}: {e}"
        if error:
            self.log_error(fl_ctx, error, fire_event=False)
            fl_ctx.set_prop(FLContextKey.COMPONENT_BUILD_ERROR, error, sticky=False, private=True)
            raise UnsafeComponentError(error)


def _configured_components(client_config: dict) -> list:
    """Every component a client app's ``config_fed_client.json`` makes FLARE build: its components,
    its executors and its filters (FLARE asks the site before building each)."""
    found = list(client_config.get("components") or [])
    found += [e.get("executor") for e in client_config.get("executors") or [] if isinstance(e, dict)]
    for key in ("task_data_filters", "task_result_filters"):
        for chain in client_config.get(key) or []:
            found += list((chain or {}).get("filters") or []) if isinstance(chain, dict) else [chain]
    return found


def check_job_folder(folder: str | Path, site: str, policy: SitePolicy) -> str | None:
    """Why ``site`` refuses the job folder ``folder`` (the first refusal, as FLARE stops at the
    first component its guard refuses), or ``None`` when it would build every component.

    A folder with an ``app/custom`` folder ships code (FLARE's server marks such a job BYOC).
    """
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta["byoc"] = bool(meta.get("byoc")) or any(p.is_dir() for p in folder.glob("*/custom"))
    job_name = f"job {meta.get('name') or folder.name!r}"
    apps = [app for app, targets in (meta.get("deploy_map") or {}).items() if "@ALL" in targets or site in targets]
    if not apps:
        return f"site {site} refuses {job_name}: its deploy_map gives this site no app"
    for app in apps:
        config_file = folder / app / "config" / "config_fed_client.json"
        if not config_file.exists():
            return f"site {site} refuses {job_name}: {config_file} is missing"
        for component in _configured_components(json.loads(config_file.read_text())):
            error = check_job_component(policy, component, meta, job_name)
            if error:
                return error
    return None


def guard_simulated_job(job: dict, kits_root: str | Path | None) -> dict | None:
    """The site guard's check of ``job`` at every hospital, for FLARE's simulator (which builds no
    site-local components): each hospital's policy is read from ``kits_root/<site>/local/`` (the
    folder ``MEDSPLIT_SITE_KITS`` names; ``None`` or no file: the defaults).

    Returns ``None`` when every hospital accepts the job, else the failed result in the shape of
    the server site's ``medsplit_result.json``: ``{"status": "failed", "job": NAME, "errors":
    {site: refusal}}``. The job's ``sites_root`` is the simulator's own choice of folders on one
    machine (the runner sets it, not the job's author), so it is left out of the check.
    """
    # imports torch: the site policy and job guard load in FLARE's site process without it
    from medsplit.flare.job import export_job_folder

    checked = {k: v for k, v in job.items() if k != "sites_root"}
    errors = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_job_folder(checked, tmp)
        for site in job["sites"]:
            try:
                policy = site_policy_or_defaults(Path(kits_root) / site if kits_root else Path(tmp) / "no-kit", site)
                error = check_job_folder(folder, site, policy)
            except PolicyError as e:  # an unreadable policy refuses every job, naming the file
                error = f"site {site} refuses job {job['name']!r}: {e}"
            if error:
                errors[site] = error
    return {"status": "failed", "job": job["name"], "errors": errors} if errors else None
