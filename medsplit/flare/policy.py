"""Site policy: what a hospital requires of any job before it trains, read from its OWN files.

A hospital's policy lives in its start-up kit / site workspace (``local/medsplit_policy.yaml``,
next to FLARE's own ``local/resources.json``), never in the job: the server (or whoever wrote the
job) cannot lower it. Each hospital compares its policy with the defences the job declares
(:class:`~medsplit.flare.job_defences.JobDefences`) and refuses to train, with a message naming
its policy file, the rule and the job field that failed, when the job falls short. The check runs twice, both times in
code installed at the site: in FLARE's job process before any job component is built
(:class:`medsplit.flare.site_guard.MedsplitJobGuard`, named in the site's ``local/`` FLARE
configuration) and again when the hospital starts training. The hospital then applies those
defences itself (:class:`~medsplit.flare.hospital_guard.HospitalGuard`), so a job cannot declare
a defence and skip it.

The policy bounds the guarantees a job actually gets, not only the raw knobs: a Laplace scale
``b`` means nothing without the clip bound ``C`` (epsilon = C/b), and a detector that probes once
in 10^9 steps or alarms below a threshold of -10^9 never fires.

Example ``local/medsplit_policy.yaml``::

    site: hospital-a
    require:
      hijack_detector: abort          # off | on | abort (on, and an alarm stops the hospital sending)
      detector_max_probe_every: 20    # a probe at least every 20 steps (default 20 when the detector is required)
      detector_threshold_range: [0.01, 1.0]  # the alarm threshold must lie here (default when required)
      laplace_min_scale: 0.5          # Laplace noise on activations with b >= 0.5 (omit: not required)
      laplace_max_epsilon: 2.0        # epsilon per inference release C/b <= 2 (default 1 / laplace_min_scale)
      laplace_max_epsilon_per_training_batch: 64  # B*C/b with B = the job's train.batch_size (omit: no bound)
      nopeek_min_alpha: 0.1           # NoPeek with alpha >= 0.1 (omit: not required)
    jobs:
      allow_custom_code: false        # refuse jobs that ship code (app/custom, FLARE's BYOC); default false
      allow_components: []            # classes a job may build besides the medsplit hospital (default none)

The epsilons the Laplace bounds refer to (per inference release ``C/b``, per training batch
``B*C/b``, whole training ``T*B*C/b``) are defined in :mod:`medsplit.flare.job_defences`.

Pure Python and YAML: works without NVIDIA FLARE installed.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# JobDefences, PolicyError, laplace_epsilons, HospitalGuard and HijackAbort live in their own
# modules; they stay importable from here, where the site's code has always imported them.
from medsplit.flare.hospital_guard import HijackAbort, HospitalGuard
from medsplit.flare.job_defences import JobDefences, PolicyError, finite_number, laplace_epsilons
from medsplit.yaml_file import read_yaml_mapping

__all__ = ["POLICY_FILE", "DETECTOR_LEVELS", "DEFAULT_MAX_PROBE_EVERY", "DEFAULT_THRESHOLD_RANGE", "PolicyRefused",
           "SitePolicy", "load_policy", "policy_for_site", "write_site_kits",
           "HijackAbort", "HospitalGuard", "JobDefences", "PolicyError", "laplace_epsilons"]

#: Where a site keeps its policy, relative to its FLARE workspace / start-up kit root.
POLICY_FILE = Path("local") / "medsplit_policy.yaml"
DETECTOR_LEVELS = ("off", "on", "abort")
#: Bounds a required detector gets when the policy file does not state them.
DEFAULT_MAX_PROBE_EVERY = 20
DEFAULT_THRESHOLD_RANGE = (0.01, 1.0)


class PolicyRefused(RuntimeError):
    """A hospital refuses a job that does not meet its site policy (message names policy and rule)."""


@dataclass
class SitePolicy:
    """One hospital's requirements (see the module docstring for the file format).

    Args:
        site: the site's name (must match the FLARE site that reads it).
        hijack_detector: ``off`` (not required), ``on`` (detector must run), ``abort`` (detector
            must run with ``on_alarm: abort``).
        laplace_min_scale: the job's Laplace scale b must be at least this (``None``: not required).
        nopeek_min_alpha: the job's NoPeek alpha must be at least this (``None``: not required).
        source: the file it was read from (named in refusals).
        detector_max_probe_every: a required detector must probe at least every this many steps
            (default :data:`DEFAULT_MAX_PROBE_EVERY` when the detector is required).
        detector_threshold_range: ``(low, high)`` the detector's threshold must lie in (default
            :data:`DEFAULT_THRESHOLD_RANGE` when the detector is required).
        laplace_max_epsilon: epsilon per inference release C/b must be at most this (default
            ``1 / laplace_min_scale`` when Laplace noise is required: C <= 1 at the minimum scale).
        laplace_max_epsilon_per_training_batch: B*C/b, with B the job's ``train.batch_size``,
            must be at most this (``None``: no bound).
        allow_custom_code: accept jobs that ship their own code (FLARE's BYOC, an ``app/custom``
            folder). Default false: only the medsplit installed at this site runs here.
        allow_components: component classes a job may build besides the medsplit hospital and
            FLARE's Collab executor (:mod:`medsplit.flare.site_guard`).
    """

    site: str
    hijack_detector: str = "off"
    laplace_min_scale: float | None = None
    nopeek_min_alpha: float | None = None
    source: str = "<in memory>"
    detector_max_probe_every: int | None = None
    detector_threshold_range: tuple[float, float] | None = None
    laplace_max_epsilon: float | None = None
    laplace_max_epsilon_per_training_batch: float | None = None
    allow_custom_code: bool = False
    allow_components: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.hijack_detector in ("on", "abort"):
            if self.detector_max_probe_every is None:
                self.detector_max_probe_every = DEFAULT_MAX_PROBE_EVERY
            if self.detector_threshold_range is None:
                self.detector_threshold_range = DEFAULT_THRESHOLD_RANGE
        if self.laplace_min_scale is not None and self.laplace_min_scale > 0 and self.laplace_max_epsilon is None:
            self.laplace_max_epsilon = 1.0 / self.laplace_min_scale

    def violations(self, job: JobDefences, batch_size: int | None = None) -> list[str]:
        """Every rule of this policy the job breaks, as ``require.KEY=...: the job's FIELD=...`` lines.

        Args:
            job: the job's defences.
            batch_size: the job's ``train.batch_size`` B (for the per-training-batch epsilon bound).
        """
        out = []
        detector_required = self.hijack_detector in ("on", "abort")
        if detector_required and not job.hijack_detector:
            out.append(f"require.hijack_detector={self.hijack_detector}: the job runs without the hijack detector")
        if self.hijack_detector == "abort" and job.hijack_detector and job.on_alarm != "abort":
            out.append(f"require.hijack_detector=abort: the job's detector only does on_alarm={job.on_alarm!r}")
        if detector_required and job.hijack_detector:
            if self.detector_max_probe_every is not None and job.probe_every > self.detector_max_probe_every:
                out.append(f"require.detector_max_probe_every={self.detector_max_probe_every}: the job's "
                           f"probe_every={job.probe_every} probes less often")
            if self.detector_threshold_range is not None:
                low, high = self.detector_threshold_range
                if not low <= job.detector_threshold <= high:
                    out.append(f"require.detector_threshold_range=[{low}, {high}]: the job's "
                               f"detector_threshold={job.detector_threshold:g} is outside it")
        if self.laplace_min_scale is not None and (job.laplace_scale is None or job.laplace_scale < self.laplace_min_scale):
            have = "no Laplace noise" if job.laplace_scale is None else f"Laplace scale b={job.laplace_scale}"
            out.append(f"require.laplace_min_scale={self.laplace_min_scale}: the job has {have}")
        per_release = job.laplace_epsilon_per_release
        if self.laplace_max_epsilon is not None:
            if per_release is None:
                if self.laplace_min_scale is None:  # not already named by laplace_min_scale
                    out.append(f"require.laplace_max_epsilon={self.laplace_max_epsilon:g} (per inference release, C/b): "
                               "the job has no Laplace noise")
            elif per_release > self.laplace_max_epsilon:
                out.append(f"require.laplace_max_epsilon={self.laplace_max_epsilon:g} (per inference release, C/b): "
                           f"the job's laplace_sensitivity={job.laplace_sensitivity:g} and laplace_scale="
                           f"{job.laplace_scale:g} give epsilon C/b={per_release:g} per inference release")
        if self.laplace_max_epsilon_per_training_batch is not None and per_release is not None:
            if batch_size is None:
                out.append(f"require.laplace_max_epsilon_per_training_batch={self.laplace_max_epsilon_per_training_batch:g}: "
                           "the job's train.batch_size is unknown")
            elif batch_size * per_release > self.laplace_max_epsilon_per_training_batch:
                out.append(f"require.laplace_max_epsilon_per_training_batch={self.laplace_max_epsilon_per_training_batch:g} "
                           f"(B*C/b): the job's train.batch_size={batch_size}, laplace_sensitivity="
                           f"{job.laplace_sensitivity:g} and laplace_scale={job.laplace_scale:g} give epsilon "
                           f"B*C/b={batch_size * per_release:g} per training batch")
        if self.nopeek_min_alpha is not None and (job.nopeek_alpha is None or job.nopeek_alpha < self.nopeek_min_alpha):
            have = "no NoPeek" if job.nopeek_alpha is None else f"NoPeek alpha={job.nopeek_alpha}"
            out.append(f"require.nopeek_min_alpha={self.nopeek_min_alpha}: the job has {have}")
        return out

    def enforce(self, job: JobDefences, job_name: str = "this job", batch_size: int | None = None) -> None:
        """Raise :class:`PolicyRefused` naming the policy file and every failed rule."""
        broken = self.violations(job, batch_size)
        if broken:
            raise PolicyRefused(f"site {self.site} refuses {job_name}: its site policy {self.source} is not met: "
                                + "; ".join(broken))

    def code_violation(self, job_name: str = "this job") -> str:
        """The refusal of a job that ships its own code, naming the policy key that would allow it."""
        return (f"site {self.site} refuses {job_name}: the job ships its own code (an app/custom folder: FLARE's "
                f"bring-your-own-code), and its site policy {self.source} does not allow that "
                "(jobs.allow_custom_code: false); only the medsplit installed at the site may run here")

    def to_yaml(self) -> str:
        require: dict[str, Any] = {"hijack_detector": self.hijack_detector}
        for key in _REQUIRE_KEYS[1:]:
            value = getattr(self, key)
            if value is not None:
                require[key] = list(value) if isinstance(value, tuple) else value
        jobs = {"allow_custom_code": self.allow_custom_code, "allow_components": list(self.allow_components)}
        return yaml.safe_dump({"site": self.site, "require": require, "jobs": jobs}, sort_keys=False)


_REQUIRE_KEYS = ("hijack_detector", "laplace_min_scale", "laplace_max_epsilon", "laplace_max_epsilon_per_training_batch",
                 "detector_max_probe_every", "detector_threshold_range", "nopeek_min_alpha")
_JOBS_KEYS = ("allow_custom_code", "allow_components")


def write_site_kits(out_dir: Path, policies: dict[str, str | Path] | None) -> Path:
    """Copy each site's policy file to ``out_dir/site-kits/<site>/local/`` (a fresh folder) and
    return that folder: the simulator and POC runs point their sites at it through
    ``MEDSPLIT_SITE_KITS``, as a provisioned site finds its own ``local/`` folder.

    Args:
        out_dir: the run's output folder.
        policies: site -> policy file to copy (``None``: no site has a policy).
    """
    kits = Path(out_dir) / "site-kits"
    if kits.exists():
        shutil.rmtree(kits)
    for site, src in (policies or {}).items():
        dest = kits / site / POLICY_FILE
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    return kits


def load_policy(path: str | Path, site: str | None = None) -> SitePolicy:
    """Read a site policy file; unknown keys, bad values and a site-name mismatch name the file and key.

    Args:
        path: the YAML file (``<site workspace>/local/medsplit_policy.yaml``).
        site: the site reading it; the file's ``site:`` must match (a copied file is caught).
    """
    path = Path(path)
    raw = read_yaml_mapping(path, "site policy", PolicyError, "with 'site', 'require' and 'jobs'")
    unknown = sorted(set(raw) - {"site", "require", "jobs"})
    if unknown:
        raise PolicyError(f"site policy {path}: unknown key {unknown[0]!r}; valid keys are ['jobs', 'require', 'site']")
    name = raw.get("site")
    if not isinstance(name, str) or not name:
        raise PolicyError(f"site policy {path}: 'site' must name the site it belongs to")
    if site is not None and name != site:
        raise PolicyError(f"site policy {path} belongs to site {name!r}, but site {site!r} is reading it")
    require, jobs = raw.get("require") or {}, raw.get("jobs") or {}
    for section, keys, values in (("require", _REQUIRE_KEYS, require), ("jobs", _JOBS_KEYS, jobs)):
        if not isinstance(values, dict):
            raise PolicyError(f"site policy {path}: {section!r} must be a mapping")
        unknown = sorted(set(values) - set(keys))
        if unknown:
            raise PolicyError(f"site policy {path}: unknown key {section}.{unknown[0]}; valid keys are {list(keys)}")
    detector = require.get("hijack_detector", "off")
    if detector is False:  # YAML reads a bare `off` as False
        detector = "off"
    if detector is True:
        detector = "on"
    if detector not in DETECTOR_LEVELS:
        raise PolicyError(f"site policy {path}: require.hijack_detector={detector!r}; valid choices are {list(DETECTOR_LEVELS)}")
    numbers: dict[str, Any] = {}
    for key in ("laplace_min_scale", "laplace_max_epsilon", "laplace_max_epsilon_per_training_batch",
                "detector_max_probe_every", "nopeek_min_alpha"):
        value = require.get(key)
        if value is not None:
            value = finite_number(value, f"site policy {path}: require.{key}", integer=key == "detector_max_probe_every")
            positive = key in ("laplace_max_epsilon", "detector_max_probe_every")
            if value < 0 or (positive and value == 0):
                raise PolicyError(f"site policy {path}: require.{key}={value!r} must be {'> 0' if positive else '>= 0'}")
        numbers[key] = value
    threshold_range = require.get("detector_threshold_range")
    if threshold_range is not None:
        if not isinstance(threshold_range, list) or len(threshold_range) != 2:
            raise PolicyError(f"site policy {path}: require.detector_threshold_range={threshold_range!r} must be [low, high]")
        low, high = (finite_number(v, f"site policy {path}: require.detector_threshold_range") for v in threshold_range)
        if low > high:
            raise PolicyError(f"site policy {path}: require.detector_threshold_range=[{low}, {high}]: low is above high")
        threshold_range = (low, high)
    allow_code = jobs.get("allow_custom_code", False)
    if not isinstance(allow_code, bool):
        raise PolicyError(f"site policy {path}: jobs.allow_custom_code={allow_code!r} must be true or false")
    components = jobs.get("allow_components", [])
    if not isinstance(components, list) or not all(isinstance(c, str) and c for c in components):
        raise PolicyError(f"site policy {path}: jobs.allow_components={components!r} must be a list of class paths")
    return SitePolicy(name, detector, numbers["laplace_min_scale"], numbers["nopeek_min_alpha"], str(path),
                      detector_max_probe_every=numbers["detector_max_probe_every"],
                      detector_threshold_range=threshold_range, laplace_max_epsilon=numbers["laplace_max_epsilon"],
                      laplace_max_epsilon_per_training_batch=numbers["laplace_max_epsilon_per_training_batch"],
                      allow_custom_code=allow_code, allow_components=tuple(components))


def policy_for_site(site_root: str | Path, site: str) -> SitePolicy | None:
    """The policy in ``site_root/local/medsplit_policy.yaml``, or ``None`` when the site has none."""
    path = Path(site_root) / POLICY_FILE
    return load_policy(path, site) if path.exists() else None

