"""What one FLARE site runs: the runner every placement runs (:class:`medsplit.train.runner.Runner`)
with the party-process coordinator (:class:`medsplit.train.party_run.ControlCoordinator`) and the
``flare`` transport under its Channel.

The coordinator is the one ``serve``/``join`` use over gloo: every party walks the same schedule from the
same seed and computes only its own parts (the server never opens an image folder); the
evaluating hospital gathers losses, byte counts and link timings and builds the run record. So a
FLARE run gives the in-process run's numbers exactly (same data, same seed, CPU; tested through
FLARE's simulator). The one thing added here is the hospital's own enforcement of the job's
defences (:class:`~medsplit.flare.policy.HospitalGuard`) on the parts it runs, with the
detector's probe rounds as a hook of the runner (:class:`SiteHooks`).
"""

from __future__ import annotations

import contextlib
import copy
import time
from pathlib import Path

import torch

from medsplit.config import Config, config_from_dict
from medsplit.flare.policy import HospitalGuard
from medsplit.train.device import resolve_device
from medsplit.train.party_plan import AGGREGATOR, SERVER, party_names
from medsplit.train.party_run import ControlCoordinator
from medsplit.train.protocols import PROTOCOLS
from medsplit.train.runner import RunHooks, Runner


def client_party(k: int) -> str:
    return f"client{k}"


def party_sites(sites: list[str]) -> dict[str, str]:
    """Party -> FLARE site: the server and the aggregator on the server site, hospital k on ``sites[k]``."""
    return {SERVER: "server", AGGREGATOR: "server", **{client_party(k): s for k, s in enumerate(sites)}}


def check_flare_config(cfg: Config) -> None:
    runnable = [name for name, cls in PROTOCOLS.items() if cls.runs_as_processes]
    if cfg.split.protocol not in runnable:
        raise ValueError(f"a FLARE job runs the protocols {runnable}; "
                         f"split.protocol={cfg.split.protocol!r} runs in-process only")


def with_outputs(cfg: Config, root: Path) -> Config:
    """``cfg`` with its run and report folders under a site's own ``root`` (outputs may differ per party)."""
    values = copy.deepcopy(cfg.to_dict())
    values["output"]["runs_dir"] = str(root / "runs")
    values["output"]["reports_dir"] = str(root / "reports")
    values["output"]["tensorboard"] = False
    return config_from_dict(values)


def install_guard(protocol, party: str, guard: HospitalGuard) -> None:
    """The hospital's defences on what ITS parts send to another party (Laplace noise and the
    alarm check as a send transform, NoPeek as a regulariser of the sending part)."""
    for model in protocol.models:
        for part, owner in model.chain:
            if owner.name != party:
                continue
            crosses = any(o is not owner for _, o in model.chain)
            if crosses:
                model.send_transforms[part.name] = guard.send_transform
                reg = guard.regularizer(tuple(part.sends))
                if reg is not None:
                    model.regularizers[part.name] = reg
                break  # the hospital's first part is the one whose activations leave it


class SiteHooks(RunHooks):
    """A hospital site's changes to the runner: its guard installed once the protocol exists and,
    when the job runs the hijack detector, its probe rounds in the schedule.

    A probe is one more batch of the same size, announced to the server like any other (its size
    gives nothing away), and the server answers it as it answers every batch. A server that
    compares consecutive activations can still spot it (same images, unchanged weights). The
    hospital sends the batch with random targets, keeps the gradient it gets back and does not
    step; then sends the same images with the true targets as a regular step and scores the two
    gradients (:class:`~medsplit.defences.detector.HijackDetector`). Once the detector fires under
    ``on_alarm: abort``, the guard refuses to send any further activation and the job ends naming
    this site. The server trains on the fake batches too (the price of a probe the server cannot
    recognise), so a run with the detector is not the in-process run.
    """

    def __init__(self, party: str, guard: HospitalGuard):
        self.party, self.guard, self.detector = party, guard, guard.detector
        self.regular_steps = 0  # the hospital's regular steps over the whole run (the detector's clock)
        self.rounds = iter(())
        self.probe, self.fake_grad, self.received = None, None, []

    def started(self, runner: Runner) -> None:
        install_guard(runner.protocol, self.party, self.guard)

    def plan_batches(self, runner: Runner, epoch: int, own: dict) -> dict:
        if self.detector is None:
            return own
        plan: list[tuple[torch.Tensor, bool, int]] = []  # (rows, fake round?, the hospital's step number)
        (k, batches), = own.items()
        for idx in batches:
            self.regular_steps += 1
            if self.detector.should_probe(self.regular_steps):
                plan.append((idx, True, self.regular_steps))
            plan.append((idx, False, self.regular_steps))
        self.rounds = iter(plan)
        return {k: [idx for idx, _, _ in plan]}

    @contextlib.contextmanager
    def epoch(self, runner: Runner):
        if self.detector is None:
            yield
            return
        channel = runner.channel
        untap = channel.tap(lambda t: self.received.append(t.tensors)
                            if t.kind == "gradient" and t.receiver == self.party and t.phase == "train" else None)
        try:
            yield
        finally:
            untap()

    def _gradient(self) -> torch.Tensor:
        return torch.cat([g.reshape(-1) for g in self.received[-1].values()]).detach().clone()

    def train_step(self, runner: Runner, model, k: int, idx: torch.Tensor, draw) -> float | None:
        if self.detector is None:
            return super().train_step(runner, model, k, idx, draw)
        _, fake, number = next(self.rounds)
        if fake:  # the probe: random targets, keep the gradient, no optimiser step
            self.probe = draw()
            self.received.clear()
            y_fake = self.detector.fake_targets(self.probe[1], getattr(runner.task.data, "num_classes", None))
            with runner.autocast():
                model.train_step(self.probe[0], y_fake, step=False)
            self.fake_grad = self._gradient()
            return None
        probed = self.probe is not None
        x, y = self.probe if probed else draw()
        self.probe = None
        self.received.clear()
        with runner.autocast():
            loss, _ = model.train_step(x, y)
        if probed:
            self.detector.update(number, self._gradient(), self.fake_grad)
        return loss


def run_site_party(cfg: Config, party: str, transport, root: str | Path, own_data: bool = False, resume: bool = False,
                   guard: HospitalGuard | None = None, departed: list[int] | None = None) -> dict | None:
    """Run ``party`` of ``cfg`` on this site; the evaluating hospital returns the run record.

    Args:
        cfg: the job's config.
        party: ``server`` or ``client<k>``.
        transport: the site's :class:`~medsplit.flare.transport.FlareTransport` for ``party``.
        root: the site's own folder for the run (checkpoints under ``runs/<run>/parties/<party>``,
            which ``resume`` continues from; the evaluating hospital's report under ``reports/``).
        own_data: the hospital trains on all of its own folder's training rows (production).
        resume: continue from this party's last checkpoint.
        guard: the hospital's defences (hospitals only).
        departed: gets the hospitals (client indices) that dropped out and are not back
            (``split.min_hospitals``), so the server site waits for no call of theirs.
    """
    check_flare_config(cfg)
    cfg = with_outputs(cfg, Path(root))
    names = party_names(cfg.split.clients)
    if party not in names:
        raise ValueError(f"party {party!r} is not in this job (parties {names})")
    run_dir = Path(cfg.output.runs_dir) / cfg.run_name()
    party_dir = run_dir / "parties" / party
    party_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    coordinator = ControlCoordinator(cfg, party, names, party_dir, device, transport, own_data, resume, quiet=True)
    hooks = SiteHooks(party, guard) if guard is not None else None
    runner = Runner(cfg, coordinator, run_dir, party_dir, device, time.time(), hooks=hooks, quiet=True)
    try:
        return runner.run()
    finally:
        if departed is not None and getattr(runner, "roster", None) is not None:
            departed.extend(d.hospital for d in runner.roster.departures if d.rejoined is None)
