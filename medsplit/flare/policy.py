"""Site policy: what a hospital requires of any job before it trains, read from its OWN files.

A hospital's policy lives in its start-up kit / site workspace (``local/medsplit_policy.yaml``,
next to FLARE's own ``local/resources.json``), never in the job: the server (or whoever wrote the
job) cannot lower it. Each hospital compares its policy with the defences the job declares
(:class:`JobDefences`) and refuses to train, with a message naming its policy file and the rule
that failed, when the job falls short. The hospital then applies those defences itself
(:class:`HospitalGuard`), so a job cannot declare a defence and skip it at the hospital.

Example ``local/medsplit_policy.yaml``::

    site: hospital-a
    require:
      hijack_detector: abort   # off | on | abort (on, and an alarm stops the hospital sending)
      laplace_min_scale: 0.5   # Laplace noise on activations with b >= 0.5 (omit: not required)
      nopeek_min_alpha: 0.1    # NoPeek with alpha >= 0.1 (omit: not required)

Pure Python and YAML: works without NVIDIA FLARE installed.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from medsplit.yaml_file import read_yaml_mapping

#: Where a site keeps its policy, relative to its FLARE workspace / start-up kit root.
POLICY_FILE = Path("local") / "medsplit_policy.yaml"
DETECTOR_LEVELS = ("off", "on", "abort")
ALARM_ACTIONS = ("abort", "warn")


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file and key."""


class PolicyRefused(RuntimeError):
    """A hospital refuses a job that does not meet its site policy (message names policy and rule)."""


class HijackAbort(RuntimeError):
    """The hospital's hijack detector raised the alarm and its policy says abort: nothing more is sent."""


@dataclass
class JobDefences:
    """The defences a job runs at every hospital (written into the FLARE job by ``medsplit flare job``).

    Args:
        hijack_detector: run the client-side hijack detector (fake rounds with random targets).
        on_alarm: what the hospital does when it fires: ``abort`` (stop sending, end the job with
            an error naming the site) or ``warn`` (log and continue).
        probe_every: one fake round every this many steps.
        detector_threshold: alarm when the median probe score falls below this.
        laplace_scale: Laplace scale b on the activations a hospital sends (``None``: off).
        laplace_sensitivity: the clip bound C of the Laplace mechanism (epsilon per release = C / b).
        nopeek_alpha: NoPeek weight on the hospital's sending part (``None``: off).
    """

    hijack_detector: bool = False
    on_alarm: str = "abort"
    probe_every: int = 10
    detector_threshold: float = 0.1
    laplace_scale: float | None = None
    laplace_sensitivity: float = 1.0
    nopeek_alpha: float | None = None

    def __post_init__(self) -> None:
        if self.on_alarm not in ALARM_ACTIONS:
            raise PolicyError(f"job defences: on_alarm={self.on_alarm!r}; valid choices are {list(ALARM_ACTIONS)}")
        if self.probe_every < 1:
            raise PolicyError(f"job defences: probe_every={self.probe_every} must be >= 1")
        if self.laplace_scale is not None and self.laplace_scale <= 0:
            raise PolicyError(f"job defences: laplace_scale={self.laplace_scale} must be > 0 (or null for off)")
        if self.nopeek_alpha is not None and self.nopeek_alpha < 0:
            raise PolicyError(f"job defences: nopeek_alpha={self.nopeek_alpha} must be >= 0 (or null for off)")

    @classmethod
    def from_dict(cls, values: dict | None, where: str = "job defences") -> "JobDefences":
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PolicyError(f"{where}: unknown key {unknown[0]!r}; valid keys are {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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
    """

    site: str
    hijack_detector: str = "off"
    laplace_min_scale: float | None = None
    nopeek_min_alpha: float | None = None
    source: str = "<in memory>"

    def violations(self, job: JobDefences) -> list[str]:
        """Every rule of this policy the job breaks, as ``require.KEY=...: the job has ...`` lines."""
        out = []
        if self.hijack_detector in ("on", "abort") and not job.hijack_detector:
            out.append(f"require.hijack_detector={self.hijack_detector}: the job runs without the hijack detector")
        if self.hijack_detector == "abort" and job.hijack_detector and job.on_alarm != "abort":
            out.append(f"require.hijack_detector=abort: the job's detector only does on_alarm={job.on_alarm!r}")
        if self.laplace_min_scale is not None and (job.laplace_scale is None or job.laplace_scale < self.laplace_min_scale):
            have = "no Laplace noise" if job.laplace_scale is None else f"Laplace scale b={job.laplace_scale}"
            out.append(f"require.laplace_min_scale={self.laplace_min_scale}: the job has {have}")
        if self.nopeek_min_alpha is not None and (job.nopeek_alpha is None or job.nopeek_alpha < self.nopeek_min_alpha):
            have = "no NoPeek" if job.nopeek_alpha is None else f"NoPeek alpha={job.nopeek_alpha}"
            out.append(f"require.nopeek_min_alpha={self.nopeek_min_alpha}: the job has {have}")
        return out

    def enforce(self, job: JobDefences, job_name: str = "this job") -> None:
        """Raise :class:`PolicyRefused` naming the policy file and every failed rule."""
        broken = self.violations(job)
        if broken:
            raise PolicyRefused(f"site {self.site} refuses {job_name}: its site policy {self.source} is not met: "
                                + "; ".join(broken))

    def to_yaml(self) -> str:
        require: dict[str, Any] = {"hijack_detector": self.hijack_detector}
        if self.laplace_min_scale is not None:
            require["laplace_min_scale"] = self.laplace_min_scale
        if self.nopeek_min_alpha is not None:
            require["nopeek_min_alpha"] = self.nopeek_min_alpha
        return yaml.safe_dump({"site": self.site, "require": require}, sort_keys=False)


_REQUIRE_KEYS = ("hijack_detector", "laplace_min_scale", "nopeek_min_alpha")


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
    raw = read_yaml_mapping(path, "site policy", PolicyError, "with 'site' and 'require'")
    unknown = sorted(set(raw) - {"site", "require"})
    if unknown:
        raise PolicyError(f"site policy {path}: unknown key {unknown[0]!r}; valid keys are ['require', 'site']")
    name = raw.get("site")
    if not isinstance(name, str) or not name:
        raise PolicyError(f"site policy {path}: 'site' must name the site it belongs to")
    if site is not None and name != site:
        raise PolicyError(f"site policy {path} belongs to site {name!r}, but site {site!r} is reading it")
    require = raw.get("require") or {}
    if not isinstance(require, dict):
        raise PolicyError(f"site policy {path}: 'require' must be a mapping")
    unknown = sorted(set(require) - set(_REQUIRE_KEYS))
    if unknown:
        raise PolicyError(f"site policy {path}: unknown key require.{unknown[0]}; valid keys are {list(_REQUIRE_KEYS)}")
    detector = require.get("hijack_detector", "off")
    if detector is False:  # YAML reads a bare `off` as False
        detector = "off"
    if detector is True:
        detector = "on"
    if detector not in DETECTOR_LEVELS:
        raise PolicyError(f"site policy {path}: require.hijack_detector={detector!r}; valid choices are {list(DETECTOR_LEVELS)}")
    numbers = {}
    for key in ("laplace_min_scale", "nopeek_min_alpha"):
        value = require.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise PolicyError(f"site policy {path}: require.{key}={value!r} must be a number >= 0")
        numbers[key] = None if value is None else float(value)
    return SitePolicy(name, detector, numbers["laplace_min_scale"], numbers["nopeek_min_alpha"], str(path))


def policy_for_site(site_root: str | Path, site: str) -> SitePolicy | None:
    """The policy in ``site_root/local/medsplit_policy.yaml``, or ``None`` when the site has none."""
    path = Path(site_root) / POLICY_FILE
    return load_policy(path, site) if path.exists() else None


@dataclass
class HospitalGuard:
    """A hospital's own enforcement of the job's defences on what it sends.

    ``send_transform`` is what the hospital applies to every activation before it leaves: it
    refuses to send once the detector has fired under ``on_alarm: abort`` (raising
    :class:`HijackAbort` naming the site and step), then adds the job's Laplace noise.

    Args:
        site: the hospital's site name (named in the abort).
        defences: the job's defences (already checked against the site policy).
        detector: the hijack detector, when the job runs one.
        laplace: the Laplace mechanism, when the job runs one.
        log: where a ``warn`` alarm is reported.
    """

    site: str
    defences: JobDefences
    detector: Any = None
    laplace: Callable | None = None
    log: Callable[[str], None] = print
    _warned: bool = field(default=False, repr=False)

    @classmethod
    def build(cls, site: str, defences: JobDefences, seed: int = 0, log: Callable[[str], None] = print) -> "HospitalGuard":
        import torch

        from medsplit.defences import HijackDetector, LaplaceMechanism

        detector = None
        if defences.hijack_detector:
            detector = HijackDetector(probe_every=defences.probe_every, threshold=defences.detector_threshold,
                                      generator=torch.Generator().manual_seed(seed + 17))
        laplace = None
        if defences.laplace_scale is not None:
            laplace = LaplaceMechanism(defences.laplace_sensitivity, defences.laplace_scale,
                                       generator=torch.Generator().manual_seed(seed + 31))
        return cls(site, defences, detector, laplace, log)

    @property
    def alarmed(self) -> bool:
        return self.detector is not None and self.detector.flagged_at is not None

    def check_alarm(self) -> None:
        """Raise :class:`HijackAbort` (abort) or warn once (warn) when the detector has fired."""
        if not self.alarmed:
            return
        step = self.detector.flagged_at
        if self.defences.on_alarm == "abort":
            raise HijackAbort(f"site {self.site}: the hijack detector raised the alarm at step {step} "
                              f"(median probe score below {self.detector.threshold}); its policy says abort, "
                              "so it sends no more activations")
        if not self._warned:
            self._warned = True
            self.log(f"WARNING site {self.site}: hijack detector alarm at step {step}; on_alarm=warn, training continues")

    def send_transform(self, tensors: dict) -> dict:
        self.check_alarm()
        return self.laplace(tensors) if self.laplace is not None else tensors

    def regularizer(self, sent_keys: tuple[str, ...] | None = None):
        """The NoPeek regulariser for the hospital's sending part, or ``None`` when the job has none."""
        if not self.defences.nopeek_alpha:
            return None
        from medsplit.defences import NoPeek

        return NoPeek(self.defences.nopeek_alpha, sent_keys=sent_keys)
