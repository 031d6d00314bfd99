"""What one FLARE site runs: issue 12's party runner (:class:`medsplit.train.party_run.PartyRun`) with the
``flare`` transport under its Channel.

The runner is the one ``serve``/``join`` use over gloo: every party walks the same schedule from the
same seed and computes only its own parts (the server never opens an image folder); the
evaluating hospital gathers losses, byte counts and link timings and builds the run record. So a
FLARE run gives the in-process run's numbers exactly (same data, same seed, CPU; tested through
FLARE's simulator). The one thing added here is the hospital's own enforcement of the job's
defences (:class:`~medsplit.flare.policy.HospitalGuard`) on the parts it runs.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch

from medsplit.config import Config, config_from_dict
from medsplit.flare.policy import HospitalGuard
from medsplit.train.party_plan import AGGREGATOR, SERVER, party_names
from medsplit.train.party_run import PartyRun
from medsplit.train.protocols import PROTOCOLS


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


class _FlareParty(PartyRun):
    """The party runner with the hospital's guard installed once the protocol exists, and, when
    the job runs the hijack detector, the hospital's probe rounds in its schedule."""

    guard: HospitalGuard | None = None

    def _train_epoch(self, epoch: int):
        if self.guard is not None and not getattr(self, "_guarded", False):
            install_guard(self.protocol, self.name, self.guard)
            self._guarded = True
        if self.is_server or self.guard is None or self.guard.detector is None:
            return super()._train_epoch(epoch)
        return self._train_epoch_with_probes(epoch)

    def _train_epoch_with_probes(self, epoch: int) -> dict[int, list[float]]:
        """A hospital's epoch with the detector's fake rounds (SplitGuard-style, simplified).

        A probe is one more batch of the same size, announced to the server like any other (its size
        gives nothing away), and the server answers it as it answers every batch. A server that
        compares consecutive activations can still spot it (same images, unchanged weights). The
        hospital sends the batch with random targets, keeps the gradient it gets back and does not
        step; then sends the same images with the true targets as a regular step and scores the
        two gradients (:class:`~medsplit.defences.detector.HijackDetector`). Once the detector
        fires under ``on_alarm: abort``, the guard refuses to send any further activation and the
        job ends naming this site. The server trains on the fake batches too (the price of a
        probe the server cannot recognise), so a run with the detector is not the in-process run.
        """
        from medsplit.train.schedule import augmentation_generator, hospital_batches

        cfg, K, det = self.cfg, self.cfg.split.clients, self.guard.detector
        own = hospital_batches(cfg, self.task, self.indices, epoch, self.k)
        plan: list[tuple[torch.Tensor, bool, int]] = []  # (rows, fake round?, the hospital's step number)
        for idx in own:
            self._regular_steps = getattr(self, "_regular_steps", 0) + 1
            if det.should_probe(self._regular_steps):
                plan.append((idx, True, self._regular_steps))
            plan.append((idx, False, self._regular_steps))
        self.control.send(SERVER, batches=[len(idx) for idx, _, _ in plan])
        batches = [[idx for idx, _, _ in plan] if k == self.k else [] for k in range(K)]
        aug_gen = augmentation_generator(cfg, epoch, self.k, self.device)
        torch.manual_seed(cfg.train.seed * 104_729 + epoch + 1)
        losses: dict[int, list[float]] = {k: [] for k in range(K)}
        rounds = iter(plan)
        state: dict = {"probe": None}
        received: list[dict] = []
        untap = self.channel.tap(lambda t: received.append(t.tensors)
                                 if t.kind == "gradient" and t.receiver == self.name and t.phase == "train" else None)

        def gradient() -> torch.Tensor:
            grads = received[-1]
            return torch.cat([g.reshape(-1) for g in grads.values()]).detach().clone()

        def step(model, k, idx):
            _, fake, number = next(rounds)
            if fake:
                batch = self.task.batch("train", idx, train=True, generator=aug_gen)
                state["probe"] = batch
                received.clear()
                y_fake = det.fake_targets(batch.y, getattr(self.task.data, "num_classes", None))
                with self.autocast():
                    model.train_step(batch.x, y_fake, step=False)
                state["fake_grad"] = gradient()
                return
            batch = state["probe"] if state["probe"] is not None else self.task.batch("train", idx, train=True, generator=aug_gen)
            probed, state["probe"] = state["probe"] is not None, None
            received.clear()
            with self.autocast():
                loss, _ = model.train_step(batch.x, batch.y)
            if probed:
                det.update(number, gradient(), state["fake_grad"])
            if loss == loss:  # not NaN: this site computed the loss
                losses[k].append(loss)

        try:
            self.protocol.run_epoch(batches, step)
        finally:
            untap()
        return losses


def run_site_party(cfg: Config, party: str, transport, root: str | Path, own_data: bool = False, resume: bool = False,
                   guard: HospitalGuard | None = None) -> dict | None:
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
    """
    from medsplit.train.device import resolve_device

    check_flare_config(cfg)
    cfg = with_outputs(cfg, Path(root))
    names = party_names(cfg.split.clients)
    if party not in names:
        raise ValueError(f"party {party!r} is not in this job (parties {names})")
    rank = names.index(party)
    run_dir = Path(cfg.output.runs_dir) / cfg.run_name()
    party_dir = run_dir / "parties" / party
    party_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    runner = _FlareParty(cfg, party, rank, names, run_dir, party_dir, device, transport, own_data, resume, True, time.time())
    runner.guard = guard
    return runner.run()
