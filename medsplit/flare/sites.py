"""The FLARE sites of a medsplit job (Collab API): the server site and the hospital sites.

Why the Collab API and not the Client API: split learning is a conversation (activations up,
gradients down, every step, and weights handed hospital to hospital), not FedAvg's "receive a
model, train locally, send it back" round that the Client API's ``flare.receive()/flare.send()``
loop expresses. Collab maps remote calls onto plain Python methods between any two sites, so the
transport is one published method (``deliver``) and the protocol code stays medsplit's own.

The server site's ``main`` starts every hospital's :meth:`MedsplitHospital.train`, runs the
server's share itself, collects each site's result (aggregates only: no image-level rows leave a
hospital) and writes ``metrics.json`` and the HTML report. A hospital first checks the job
against its OWN site policy (``local/medsplit_policy.yaml`` in its workspace), then trains its
own parts on its own data.

Where hospitals may drop out (``split.min_hospitals``), the server asks FLARE whether a silent
hospital's site is still there and goes on without one whose site went away, as over gloo; see
:mod:`medsplit.flare.hospital_calls` for which failures stop the job.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from pathlib import Path

import nvflare
from nvflare.collab import collab

from medsplit import __version__
from medsplit.config import config_from_dict
from medsplit.flare.hospital_calls import HospitalCalls, Outcomes, root_message
from medsplit.flare.inbox_site import InboxSite, authenticated_caller, only_from_server
from medsplit.flare.policy import HospitalGuard, JobDefences, policy_for_site
from medsplit.flare.site_run import client_party, party_sites, run_site_party
from medsplit.flare.transport import FlareTransport
from medsplit.report.run_report import write_run_report
from medsplit.train.records import json_default

#: Simulator only: a folder holding each site's kit-like folder (``<site>/local/medsplit_policy.yaml``).
POLICY_ROOT_ENV = "MEDSPLIT_SITE_KITS"
#: While a site waits on another (a message from it, or its answer to a delivery), it asks FLARE this
#: often (seconds) whether that site is still there: a site whose process died is found in seconds,
#: not after the job's timeout (and a run that may lose hospitals goes on without it).
CHECK_ALIVE_S = 2.0


def _job_parts(job: dict):
    cfg = config_from_dict(job["config"])
    sites = list(job["sites"])
    if len(sites) != cfg.split.clients:
        raise ValueError(f"job {job.get('name')!r} names {len(sites)} hospital sites {sites} but split.clients={cfg.split.clients}")
    return cfg, sites, party_sites(sites)


def _site_root(job: dict, site: str) -> Path:
    """The site's own folder for medsplit runs: stable across jobs (so ``resume`` finds its checkpoints)."""
    if job.get("sites_root"):  # simulator / POC on one machine: one folder per site under this
        return Path(job["sites_root"]) / site
    return Path(collab.context.workspace.get_root_dir()) / "medsplit"


def _may_lose_hospitals(cfg) -> bool:
    """``split.min_hospitals`` below the hospitals: the run goes on without a hospital that left."""
    return cfg.split.min_hospitals is not None and cfg.split.min_hospitals < cfg.split.clients


def _plain(obj):
    """JSON round trip: what crosses FLARE is plain lists/dicts/numbers (no numpy, no objects)."""
    return json.loads(json.dumps(obj, default=json_default))


class MedsplitServer(InboxSite):
    """The server site: runs the server's parts and the aggregator, drives the job, writes the report.

    Args:
        job: the job description written by ``medsplit flare job`` (config, hospital sites in
            client order, defences, timeouts, where to write the report).
    """

    def __init__(self, job: dict):
        self.job = job
        self.outcomes = Outcomes()
        super().__init__()

    @collab.publish
    def report(self, outcome: dict) -> bool:
        """A hospital's outcome of ``train()`` where hospitals may drop out (only for itself:
        the site is FLARE's authenticated caller)."""
        self.outcomes.put(authenticated_caller(), dict(outcome))
        return True

    @collab.main
    def main(self):
        t0 = time.time()
        job = self.job
        cfg, sites, site_of = _job_parts(job)
        # Default: inside this job's run folder on the server, which FLARE uploads with the job,
        # so the admin gets the report with `nvflare job download JOB_ID` (under workspace/medsplit).
        out = Path(job.get("out_dir") or Path(collab.context.workspace.get_run_dir(collab.fl_ctx.get_job_id())) / "medsplit")
        out.mkdir(parents=True, exist_ok=True)
        proxies = {c.name: c for c in collab.clients}
        missing = [s for s in sites if s not in proxies]
        if missing:
            raise RuntimeError(f"job {job['name']!r} needs hospital site(s) {missing}; connected: {sorted(proxies)}")
        timeout = float(job.get("timeout_s", 120))
        tolerant = _may_lose_hospitals(cfg)
        transport = FlareTransport("server", site_of, proxies, self.inbox, timeout=timeout,
                                   check_alive_s=CHECK_ALIVE_S, hospitals_may_leave=tolerant)
        calls = HospitalCalls(sites, proxies, self.inbox, float(job.get("job_timeout_s", 86400)), tolerant, self.outcomes)
        calls.start()
        departed: list[int] = []  # the hospitals the server's roster let go (split.min_hospitals)
        server_error = None
        try:
            run_site_party(cfg, "server", transport, _site_root(job, "server"), resume=bool(job.get("resume")),
                           departed=departed)
        except Exception as e:
            server_error = root_message(e)
            calls.stop_others("server", server_error)
        gone = {sites[k] for k in departed}
        errors = calls.wait(server_error is not None, timeout, gone, transport.check_alive)
        if server_error is not None:
            errors = {"server": server_error, **errors}
        if errors:
            status = {"status": "failed", "job": job["name"], "errors": errors}
            (out / "medsplit_result.json").write_text(json.dumps(status, indent=2))
            raise RuntimeError(f"medsplit job {job['name']!r} failed: " + "; ".join(f"{s}: {m}" for s, m in errors.items()))
        results = calls.results
        records = [r["record"] for r in results.values() if r.get("record")]
        if len(records) != 1:
            raise RuntimeError(f"expected the run record from exactly one (the evaluating) hospital, got {len(records)}")
        record = records[0]
        record["transport"]["name"] = "flare"
        record["transport"]["nvflare"] = _nvflare_version()
        record["transport"]["handed_to_flare"] = {"server": {"payload_bytes": transport.handed_bytes},
                                                  **{s: {"payload_bytes": r["handed_bytes"]} for s, r in results.items()}}
        record["transport"]["policies"] = {s: r.get("policy") for s, r in results.items()}
        record["transport"]["detectors"] = {s: r.get("detector") for s, r in results.items() if r.get("detector")}
        # Each hospital's Laplace epsilons, named by what they cover: C/b per inference release,
        # B*C/b per training batch, T*B*C/b over the T training batches it sent (the bound that
        # covers its images after a FLARE job, which trains).
        record["transport"]["laplace"] = {s: r.get("laplace") for s, r in results.items() if r.get("laplace")}
        record["transport"]["job_wall_time_s"] = time.time() - t0
        for d in record.get("dropouts", []):  # the console line the other placements' server prints
            site = sites[int(d["hospital"].removeprefix("client"))]
            print(f"[server] {d['hospital']} (site {site}) dropped out in epoch {d['epoch']} after {d['after']} of its "
                  f"batches ({d['why']}); the run went on without it", flush=True)
        if gone:  # what FLARE said of their train() calls, if they ended at all
            record["transport"]["sites_dropped"] = {s: calls.errors.get(s, "no answer") for s in sorted(gone)}
        write_report(cfg, record, out)
        (out / "medsplit_result.json").write_text(json.dumps({"status": "ok", "job": job["name"], "out": str(out)}))
        print(f"[server] medsplit job {job['name']} finished: report in {out}", flush=True)
        return {"status": "ok", "out": str(out)}


class MedsplitHospital(InboxSite):
    """A hospital site: checks the job against its own policy, then trains its own parts on its own data.

    Args:
        job: the same job description the server got.
    """

    def __init__(self, job: dict):
        self.job = job
        super().__init__()

    @collab.publish
    def stop(self, site: str, why: str) -> bool:
        """The server tells this hospital that ``site`` failed (only the server may)."""
        only_from_server("stop")
        self.inbox.fail(site, why)
        return True

    @collab.publish
    def train(self) -> dict:
        """Check the job against this site's policy, then train this hospital's parts (only the
        server may start it)."""
        only_from_server("train")
        cfg = _job_parts(self.job)[0]
        if not _may_lose_hospitals(cfg):
            return self._train()
        # Hospitals may drop out: the server does not wait on this call (see HospitalCalls), so
        # this site reports its outcome to the server site itself.
        try:
            outcome = self._train()
        except Exception as e:
            self._report({"error": root_message(e), "type": type(e).__name__})
            raise
        self._report({"result": outcome})
        return outcome

    def _report(self, outcome: dict) -> None:
        """Tell the server site this hospital's outcome; if that fails too, the server names this
        site when its wait for the report runs out (HospitalCalls.wait)."""
        try:
            collab.server(expect_result=True, timeout=float(self.job.get("timeout_s", 120))).report(outcome)
        except Exception as e:
            print(f"[{collab.site_name}] could not report to the server: {root_message(e)}", flush=True)

    def _train(self) -> dict:
        job = self.job
        cfg, sites, site_of = _job_parts(job)
        site = collab.site_name
        if site not in sites:
            raise RuntimeError(f"site {site} is not a hospital of job {job['name']!r} (hospitals: {sites})")
        k = sites.index(site)
        defences = JobDefences.from_dict(job.get("defences"), where=f"job {job['name']!r} defences")
        policy = policy_for_site(Path(collab.context.workspace.get_root_dir()), site)
        if policy is None and os.environ.get(POLICY_ROOT_ENV):
            # The simulator recreates every site's workspace on start; its sites' own kits live
            # under this folder instead (<root>/<site>/local/medsplit_policy.yaml).
            policy = policy_for_site(Path(os.environ[POLICY_ROOT_ENV]) / site, site)
        if policy is not None:
            policy.enforce(defences, job_name=f"job {job['name']!r}", batch_size=cfg.train.batch_size)
        guard = None
        if defences.hijack_detector or defences.laplace_scale is not None or defences.nopeek_alpha:
            guard = HospitalGuard.build(site, defences, seed=cfg.train.seed + k, log=lambda m: print(f"[{site}] {m}", flush=True))
        proxies = {"server": collab.server, **{c.name: c for c in collab.other_clients}}
        transport = FlareTransport(client_party(k), site_of, proxies, self.inbox, timeout=float(job.get("timeout_s", 120)),
                                   check_alive_s=CHECK_ALIVE_S, hospitals_may_leave=_may_lose_hospitals(cfg))
        record = run_site_party(cfg, client_party(k), transport, _site_root(job, site), own_data=bool(job.get("own_data")),
                                resume=bool(job.get("resume")), guard=guard)
        if record is not None:
            record = dict(record)
            test = dict(record["test"])
            test.pop("per_image", None)  # image-level rows stay at the hospital (its own report has them)
            record["test"] = test
        detector = guard.detector.summary() if guard is not None and guard.detector is not None else None
        laplace = guard.laplace_summary(cfg.train.batch_size) if guard is not None else None
        return _plain({"record": record, "handed_bytes": transport.handed_bytes,
                       "policy": policy.source if policy is not None else None, "detector": detector,
                       "laplace": laplace})


def _nvflare_version() -> str:
    return getattr(nvflare, "__version__", "unknown")


def write_report(cfg, metrics: dict, out: Path) -> Path:
    """``metrics.json`` and the HTML run report of a FLARE run into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(_plain(metrics), indent=2))
    record = dict(metrics)
    record.update({
        "title": f"medsplit {cfg.task}: {cfg.split.protocol}, CUT={cfg.split.cut}, {cfg.split.clients} hospital(s) on NVIDIA FLARE",
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "medsplit_version": __version__, "config_yaml": cfg.to_yaml(), "device": "per site (see sites)",
        "artifacts": {"metrics_json": "metrics.json", "run_dir": str(out)},
    })
    return write_run_report(record, out / f"{cfg.run_name()}.html")
