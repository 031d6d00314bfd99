"""FSHA inside the real split protocol (every part, every party): the malicious server of
:mod:`medsplit.attacks.fsha` hijacks only the gradient it returns to the client's first part.

What is where: :class:`HijackedSplitModel` (a :class:`~medsplit.split.split_model.SplitModel`
whose server replies with the adversarial gradient; built over any split model with
:meth:`HijackedSplitModel.against`), :func:`run_fsha_protocol` (the attack's iteration loop,
with the client's optional hijack detector) and the harness's FSHA run (:func:`fsha_row`) with
its registry entry (``SPEC``). The attacker's networks, hyper-parameters and scoring are in
:mod:`medsplit.attacks.fsha`. The client's defences are SplitModel's own hooks
(``send_transforms``, ``regularizers``), installed on the split model before or after hijacking
(the hijacked model shares them).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Callable

import torch
from tqdm.auto import tqdm

from medsplit.attacks.fsha import FSHAConfig, FSHAResult, FSHAServer, decode, evaluate
from medsplit.attacks.registry import OWN, AttackContext, AttackSpec
from medsplit.attacks.tap import activation_shape, crossing_key, gradient_to_first_part
from medsplit.attacks.targets import (
    apply_defence,
    build_target,
    privacy_columns,
    privacy_notes,
    utility,
    validator_score,
)
from medsplit.defences import DEFENCES
from medsplit.defences.detector import HijackDetector
from medsplit.defences.sampling import poisson_batch
from medsplit.split.split_model import SplitModel


class HijackedSplitModel(SplitModel):
    """The real split protocol (every part, every party) with a malicious server.

    Every party runs its usual code; the only change is the server's reply to the client's
    first part: instead of the task gradient it computed, the server returns FSHA's
    adversarial gradient ``d/dz [-D(z)]`` at the activation ``z`` it received. In a U-shaped
    split (the U-Net) that is *all* the server can hijack: the masks never leave the hospital,
    the client decoder computes the loss and trains on it, and its skip-path gradient keeps
    pulling the client encoder toward the task while the server pulls it toward the pilot's
    feature space. The server still trains its own parts honestly on the gradient the client
    decoder returns, so the client keeps a working model (what a stealthy attacker wants).

    Args:
        model: an honest split model (its chain, channel, defences are shared, not copied).
        server: the FSHA networks (pilot, decoder, critic) and their optimisers.
        sent_key: the tensor the client's first part sends to the server.
    """

    def __init__(self, model: SplitModel, server: FSHAServer, sent_key: str):
        super().__init__(model.chain, model.channel, model.data_owner, model.loss_fn, model.target_key)
        self.send_transforms = model.send_transforms
        self.regularizers = model.regularizers
        self.fsha = server
        self.sent_key = sent_key
        self.last_received: torch.Tensor | None = None  # z as the server received it, last round

    @classmethod
    def against(cls, model: SplitModel, x_client: torch.Tensor, x_aux: torch.Tensor,
                cfg: FSHAConfig) -> "HijackedSplitModel":
        """``model`` with a malicious server whose FSHA networks (on ``x_aux``'s device) are sized
        from what the client's first part sends for images like ``x_client``; the attacker reads
        off the activations it receives (of auxiliary images) whether they are non-negative."""
        key = crossing_key(model)
        shape = activation_shape(model, x_client)
        with torch.no_grad():
            nonneg = bool((model.chain[0][0]({"x": x_aux[:4]})[key] >= 0).all())
        server = FSHAServer(x_aux.shape[1], x_aux.shape[-1], shape, cfg, nonnegative=nonneg, device=x_aux.device)
        return cls(model, server, key)

    def _return_gradients(self, consumer: int, edges, pending) -> None:
        for e in edges:
            if e.consumer == consumer and e.producer == 0 and e.crossed and e.name == self.sent_key:
                # the server's reply to the client's first part: the adversarial gradient
                e.received.grad = self.fsha.client_gradient(e.received)
                self.last_received = e.received.detach()
        super()._return_gradients(consumer, edges, pending)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, step: bool = True, x_aux: torch.Tensor | None = None):
        """One protocol round; with ``x_aux`` the server then updates its FSHA networks on what it received."""
        out = super().train_step(x, y, step)
        if x_aux is not None and self.last_received is not None:
            self.fsha.update(x_aux, self.last_received)
        return out

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """``f~^-1`` of what the client sends for ``x``."""
        return decode(self.fsha, self.sent_features(x, batch_size), batch_size)

    @torch.no_grad()
    def sent_features(self, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """What the server receives for ``x`` from the client's first part at inference, after its send
        transform: the part in eval mode, so measuring the attack on held-out images neither
        moves the client's BatchNorm running statistics (which the utility column then reads)
        nor lets one held-out image shift another's features through batch statistics."""
        first = self.chain[0][0]
        name = first.name
        was_training = first.training
        first.eval()
        try:
            with self.channel.evaluating():
                out = []
                for i in range(0, x.shape[0], batch_size):
                    sent = {self.sent_key: first({"x": x[i:i + batch_size]})[self.sent_key]}
                    transform = self.send_transforms.get(name)
                    if transform is not None:
                        sent = transform(sent)
                    z = self.channel.send(self.data_owner.name, "server", "activation", sent, link=f"{name}->server")
                    out.append(z[self.sent_key])
                return torch.cat(out)
        finally:
            first.train(was_training)


def run_fsha_protocol(model: HijackedSplitModel, x_priv: torch.Tensor, y_priv: torch.Tensor, x_aux: torch.Tensor,
                      x_eval: torch.Tensor, cfg: FSHAConfig, detector: HijackDetector | None = None,
                      num_classes: int | None = None, generator: torch.Generator | None = None,
                      batches: Callable[[], torch.Tensor] | None = None,
                      clock: Callable[[], float] | None = None, progress: bool = False) -> FSHAResult:
    """FSHA for ``cfg.iterations`` rounds of the real protocol; logs reconstruction quality of ``x_eval``.

    Args:
        model: the hijacked split model (defences already installed on it).
        x_priv, y_priv: the hospitals' training images and targets (masks stay with the client
            in a U-shaped split: the loss is computed there).
        x_aux: the server's auxiliary images.
        x_eval: held-out private images the quality is measured on.
        cfg: iterations, batch size, logging.
        detector: optional client-side hijack detector (fake rounds with randomised targets).
        num_classes: for the detector's random labels.
        generator: batch sampling RNG (CPU; indices are moved to the images' device).
        batches: optional sampler of private batch indices (Poisson sampling under DP-SGD);
            ``None`` draws ``cfg.batch_size`` indices uniformly with replacement.
        clock: time source for the history.
        progress: show a progress bar of the iterations (long runs) with the latest SSIM.
    """
    clock = clock or time.perf_counter
    start = clock()
    history = []

    def log(it: int) -> None:
        history.append({"iteration": it, **evaluate(model.fsha, model.sent_features(x_eval), x_eval),
                        "seconds": clock() - start})

    model.train()
    log(0)
    bar = tqdm(range(1, cfg.iterations + 1), desc="FSHA", unit="it", leave=False, disable=not progress, mininterval=5)
    for it in bar:
        i = batches() if batches is not None else torch.randint(0, x_priv.shape[0], (cfg.batch_size,), generator=generator)
        j = torch.randint(0, x_aux.shape[0], (cfg.batch_size,), generator=generator).to(x_aux.device)
        if len(i) == 0:
            continue  # an empty Poisson draw (the caller accounts for it)
        i = i.to(x_priv.device)
        xb, yb = x_priv[i], y_priv[i]
        if detector is not None and detector.should_probe(it):
            fake = gradient_to_first_part(model, xb, detector.fake_targets(yb, num_classes))
            regular = gradient_to_first_part(model, xb, yb)
            detector.update(it, regular, fake)
        model.train_step(xb, yb, x_aux=x_aux[j])
        if it % cfg.log_every == 0 or it == cfg.iterations:
            log(it)
            bar.set_postfix(ssim=f"{history[-1]['ssim']:.3f}", mse=f"{history[-1]['mse']:.4f}")
    bar.close()
    recon = model.reconstruct(x_eval)
    return FSHAResult(history, recon, history[-1], detector.summary() if detector else None, asdict(cfg))


# ------------------------------------------------------------------ in the attack harness


def fsha_row(ctx: AttackContext, name: str, strength: float) -> tuple[dict, dict]:
    """FSHA from scratch inside the real protocol against a client that applies defence ``name``."""
    task, data, profile = ctx.task, ctx.data, ctx.profile
    spec = DEFENCES[name]
    g = torch.Generator().manual_seed(ctx.seed)
    torch.manual_seed(ctx.seed)
    cfg = profile.fsha
    model = build_target(task, profile, data.x_train.shape[1], data.num_classes, lr=cfg.lr_client, device=data.device)
    n_private = data.x_train.shape[0]
    # the client's expected batch cannot exceed its private images under Poisson sampling (q <= 1):
    # with fewer images than the attack's batch, every image joins every DP-SGD batch (q = 1)
    dp_batch = min(cfg.batch_size, n_private)
    facts, hook = apply_defence(model, task, name, strength, data, profile, g, lr=cfg.lr_client,
                                batch_size=dp_batch if spec.poisson_batches else cfg.batch_size,
                                train_size=n_private, train_steps=cfg.iterations)
    if spec.poisson_batches and dp_batch < cfg.batch_size:
        facts["batch_note"] = (f"the client holds {n_private} private images, fewer than the attack's batch of "
                               f"{cfg.batch_size}: under DP-SGD its expected batch is {dp_batch} (q = 1)")
    hijacked = HijackedSplitModel.against(model, data.x_train, data.x_aux, cfg)
    # the client watches for a hijack in the undefended run (as in honest training)
    detector = HijackDetector(probe_every=profile.probe_every) if name == "none" else None
    def poisson_batches():  # DP-SGD's sampling: each image joins a batch with the accountant's rate
        i = poisson_batch(data.x_train.shape[0], hook.sample_rate, g)
        if len(i) == 0:
            hook.account_empty_step()
        return i

    batches = poisson_batches if spec.poisson_batches else None  # None: uniform draws with replacement
    res = run_fsha_protocol(hijacked, data.x_train, data.y_train, data.x_aux, data.x_test, cfg, detector=detector,
                            num_classes=data.num_classes, generator=g, batches=batches,
                            progress=cfg.iterations >= 1000)
    if spec.final_facts is not None:
        facts.update(spec.final_facts(hook))
    row = {"attack": "fsha", "defence": name, "strength": strength, "seed": ctx.seed,
           **{k: v for k, v in res.final.items() if k not in ("iteration",)},
           "iterations": cfg.iterations,
           # the hijacked client's own task score: in the U-shape its decoder keeps training on the masks
           "utility": utility(hijacked, task, data.x_test, data.y_test),
           "validator_on_recon": validator_score(ctx.validator, task, res.reconstructions, data.y_test),
           **privacy_columns(facts)}
    return row, {"history": res.history, "recon": res.reconstructions[:6].cpu(), "detector": res.detector,
                 "privacy_notes": privacy_notes(facts)}


SPEC = AttackSpec(
    "fsha", "malicious server hijacks the client's feature space (Pasquini et al. 2021)", "FSHA", OWN, fsha_row,
    strengths=lambda profile: profile.fsha_defences,
    limited_because="each FSHA run is a full attack from scratch",
    summary="ssim {ssim:.3f} mse {mse:.4f} utility {utility:.3f}")
