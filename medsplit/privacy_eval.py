"""The attack x defence harness behind ``python -m medsplit attack`` (and ``make attacks``).

For every defence and strength: train the target split model with the defence once, then
train *fresh* attackers against the defended client that see exactly what crossed the channel
(noisy or mixed activations included): the adversarial reconstruction attack (ADRA, model
inversion with a colluding hospital) and SDAR (passive, no collusion). Never judge a defence
by a proxy it trained against. FSHA is an attack *during* training, so it runs from scratch,
inside the real protocol (:class:`~medsplit.attacks.fsha.HijackedSplitModel`: in the lung
U-Net the server can only hijack the gradient it returns to the client encoder), against a
client that applies its defence. Everything is measured on held-out images.

DP-SGD runs: GroupNorm replaces every BatchNorm of every part and batches are Poisson-sampled,
so the accountant's epsilon is valid (:mod:`medsplit.defences.dpsgd`).

Device: one ``torch.device`` runs everything (data, target, validator, attacker, defences).
Batch indices always come from CPU generators and are then moved, so a seed gives the same
batches on every device; models are initialised on the CPU and moved, so the same weights too.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from medsplit.attacks import ALIASES, ATTACKS, check_attack_names, resolve_attack_names
from medsplit.attacks.fsha import FSHAConfig, FSHAServer, HijackedSplitModel, gradient_to_first_part, run_fsha_protocol
from medsplit.attacks.inversion import InversionConfig, run_inversion
from medsplit.attacks.sdar import SDARAttack, SDARConfig, run_sdar
from medsplit.attacks.label_leakage import label_private_parts, leakage_scores
from medsplit.attacks.nets import decoder as make_decoder
from medsplit.attacks.tap import Recorder, crossing_key, observed_activations
from medsplit.config import ConfigError, with_overrides
from medsplit.defences import (
    DEFENCES,
    DefenceNotApplicable,
    HijackDetector,
    LaplaceMechanism,
    Mixing,
    NoPeek,
    ProxyAdversary,
    bias_corrected_dcor2,
    check_defence_names,
    distance_correlation,
)
from medsplit.defences.sampling import poisson_batch
from medsplit.models import build_model
from medsplit.split import SplitModel, cut, two_party
from medsplit.train import loop as train_loop

TASKS = ("lungs", "retinopathy")
DEVICES = ("auto", "cpu", "cuda")
CPU = torch.device("cpu")


@dataclass
class Profile:
    """Scale of one evaluation. Args: see the field comments."""

    name: str
    img_size: int
    target_steps: int  # training steps of the target split model
    batch_size: int
    fsha: FSHAConfig
    inversion: InversionConfig
    validator_steps: int
    strengths: dict[str, list[float]]  # defence -> strengths evaluated against model inversion
    fsha_defences: dict[str, list[float]]  # defence -> strengths evaluated against FSHA
    seeds: list[int] = field(default_factory=lambda: [0])
    max_images: int = 600  # retinopathy subset
    base_channels: int = 8  # U-Net width
    cut_lungs: int = 2
    cut_retinopathy: int = 4
    label_steps: int = 100
    laplace_c: float = 1.0
    probe_every: int = 10
    sdar: SDARConfig = field(default_factory=SDARConfig)
    # defence -> strengths SDAR runs against (it reuses ADRA's target; None: every strength of
    # ``strengths``). Each SDAR run trains four networks, so the CPU profile runs one per defence.
    sdar_strengths: dict[str, list[float]] | None = None


PROFILES = {
    # Reduced scales keep the paper's learning-rate *ratios* (critic 10x client and pilot) but
    # multiply them by 10 so that hundreds, not thousands, of CPU iterations show the attack.
    "tiny": Profile("tiny", 16, 6, 8, FSHAConfig(iterations=12, batch_size=8, lr_client=1e-4, lr_pilot=1e-4, lr_decoder=1e-4,
                                                 lr_discriminator=1e-3, width=8, log_every=6),
                    InversionConfig(steps=20, batch_size=8, width=8, log_every=10), 5,
                    {"none": [0], "nopeek": [1.0], "laplace": [0.5], "mixing": [2], "proxy": [0.5], "dpsgd": [1.0]},
                    {"none": [0], "nopeek": [1.0]}, max_images=120, label_steps=6, probe_every=3,
                    sdar=SDARConfig(steps=30, batch_size=8, lr=3e-3, width=8, log_every=15)),
    # reduced: end to end in 9 min (lungs) and 17 min (retinopathy) on the shared 2-core CPU.
    # Laplace scales: after the L1 clip to C/2 a coordinate carries ~3e-5 at a 64 px cut, so the
    # trade-off lies between b = 1e-5 (epsilon 1e5 per release; lungs SSIM 0.74) and b = 1e-4
    # (SSIM 0.40); any b that gives a meaningful epsilon (0.5: epsilon 2) leaves pure noise.
    "reduced": Profile("reduced", 64, 200, 16, FSHAConfig(iterations=400, batch_size=16, lr_client=1e-4, lr_pilot=1e-4,
                                                          lr_decoder=1e-4, lr_discriminator=1e-3, width=16, log_every=100),
                       InversionConfig(steps=300, batch_size=16, width=16, log_every=100), 150,
                       {"none": [0], "nopeek": [0.5, 2.0], "laplace": [1e-5, 0.5], "mixing": [2, 4], "proxy": [0.5, 2.0],
                        "dpsgd": [0.5, 2.0]},
                       # dpsgd: the row answering Gawron and Stubbings (2022), FSHA against a DP-SGD client
                       {"none": [0], "nopeek": [1.0], "dpsgd": [1.0]}, cut_lungs=1, label_steps=150,
                       sdar=SDARConfig(steps=300, batch_size=16, width=16, log_every=100),
                       # the strongest strength of each defence, but Laplace's weak one (b = 0.5 leaves pure noise)
                       sdar_strengths={"none": [0], "nopeek": [2.0], "laplace": [1e-5], "mixing": [4], "proxy": [2.0],
                                       "dpsgd": [2.0]}),
    # paper-cpu: FSHA at the paper's length and learning rates (10,000 iterations, batch 64, Adam
    # 1e-5 client / pilot / decoder, 1e-4 critic, gradient penalty 500) at 32 px, the size a CPU
    # core affords (about an hour per run; attacker networks 16 channels wide), against the
    # U-shaped lung client cut after its first block; SSIM/MSE logged every 250 iterations.
    "paper-cpu": Profile("paper-cpu", 32, 200, 64, FSHAConfig(width=16, log_every=250),
                         InversionConfig(steps=300, batch_size=64, width=16, log_every=100), 150,
                         {"none": [0]}, {"none": [0], "nopeek": [1.0], "dpsgd": [1.0]}, cut_lungs=1),
    "full": Profile("full", 64, 3000, 64, FSHAConfig(), InversionConfig(), 2000,
                    {"none": [0], "nopeek": [0.1, 0.5, 1, 2, 5], "laplace": [1e-5, 3e-5, 1e-4, 1e-3, 0.5, 2], "mixing": [2, 3, 4, 8],
                     "proxy": [0.1, 0.5, 1, 2], "dpsgd": [0.3, 0.7, 1.0, 2.0]},
                    {"none": [0], "nopeek": [0.5, 2.0, 5.0], "laplace": [0.5, 2.0], "dpsgd": [0.5, 1.0, 2.0]}, seeds=[0, 1, 2],
                    max_images=3000, base_channels=32, label_steps=2000),
}


# ------------------------------------------------------------------ data and target


@dataclass
class TaskData:
    x_train: torch.Tensor  # all hospitals' training images, float [0, 1]
    y_train: torch.Tensor
    x_aux: torch.Tensor  # the colluding hospital's / attacker's disjoint share
    y_aux: torch.Tensor
    x_test: torch.Tensor  # held-out victim images
    y_test: torch.Tensor
    num_classes: int
    source: str

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def to(self, device: torch.device) -> TaskData:
        """The same data with every tensor on ``device`` (moved once, before any training)."""
        return TaskData(self.x_train.to(device), self.y_train.to(device), self.x_aux.to(device), self.y_aux.to(device),
                        self.x_test.to(device), self.y_test.to(device), self.num_classes, self.source)


def load_task(task: str, profile: Profile, data_root: Path, seed: int) -> TaskData:
    """Images in [0, 1]; the training split is divided by patient order into a private half and an auxiliary half."""
    if task == "lungs":
        from medsplit.data.lungs import load_lungs

        d = load_lungs("covid-cxr-v7", data_root, img_size=profile.img_size, seed=seed)
        tr, te, nc, src = d.train, d.test, 1, d.source
        ytr, yte = tr.masks, te.masks
    elif task == "retinopathy":
        from medsplit.data.retinopathy import load_retinopathy

        d = load_retinopathy("eyepacs", data_root, target="referable", img_size=profile.img_size, seed=seed,
                             max_images=profile.max_images)
        tr, te, nc, src = d.train, d.test, d.num_classes, d.source
        ytr, yte = tr.labels, te.labels
    else:
        raise ValueError(f"unknown task {task!r}; valid tasks are {list(TASKS)}")
    patients = getattr(tr, "patients", None) or list(tr.ids)
    order = sorted(set(patients))
    rng = np.random.default_rng(seed)
    aux_patients = set(rng.permutation(order)[: len(order) // 2].tolist())
    aux = torch.tensor([p in aux_patients for p in patients])
    x = tr.images.float() / 255
    return TaskData(x[~aux], ytr[~aux], x[aux], ytr[aux], te.images.float() / 255, yte, nc, src)


def _loss_for(task: str):
    if task == "lungs":
        return lambda out, y: F.binary_cross_entropy_with_logits(out, y.float())
    return F.cross_entropy  # accepts the soft (mixed) targets too


def build_target(task: str, profile: Profile, in_channels: int, num_classes: int, lr: float = 1e-3,
                 device: torch.device = CPU) -> SplitModel:
    """The target split model on ``device`` (initialised on the CPU, so every device starts from the same weights)."""
    if task == "lungs":
        table = build_model("unet-classic", num_classes=1, in_channels=in_channels, base_channels=profile.base_channels)
        c = profile.cut_lungs
    else:
        table = build_model("resnet18", num_classes=num_classes, in_channels=in_channels)
        c = profile.cut_retinopathy
    make = lambda params: torch.optim.Adam(params, lr=lr)  # noqa: E731
    return two_party(_parts_on(cut(table, c), device), _loss_for(task), make_optimizer=make)


def _parts_on(parts: list, device: torch.device) -> list:
    """Move parts before their parties build optimisers over their parameters."""
    for part in parts:
        part.to(device)
    return parts


def _activation_shape(model: SplitModel, x: torch.Tensor) -> tuple[int, int, int]:
    with torch.no_grad():
        return tuple(model.chain[0][0]({"x": x[:2]})[crossing_key(model)].shape[1:])


def apply_defence(model: SplitModel, task: str, name: str, strength: float, data: TaskData, profile: Profile,
                  generator: torch.Generator, lr: float = 1e-3, batch_size: int | None = None,
                  train_size: int | None = None) -> tuple[dict, object]:
    """Install defence ``name`` at ``strength`` on ``model``; returns (its privacy facts, the hook object).

    Facts that are strings (what an epsilon covers) go to the report's notes, numbers to the rows.
    ``lr``, ``batch_size`` (default: the profile's) and ``train_size`` (default: every training
    image) are the client's, for DP-SGD's optimiser and sampling rate."""
    check_defence_names([name])
    first = model.chain[0][0].name
    key = crossing_key(model)
    if name == "none":
        return {}, None
    if name == "nopeek":
        hook = NoPeek(strength, sent_keys=(key,))
        model.regularizers[first] = hook
        return {"alpha": strength}, hook
    if name == "laplace":
        hook = LaplaceMechanism(profile.laplace_c, strength, generator)
        model.send_transforms[first] = hook
        return hook.describe(batch_size or profile.batch_size), hook
    if name == "mixing":
        if task == "lungs" or len(model.chain) > 2:
            raise DefenceNotApplicable("mixing cannot apply to a U-shaped split: the server's output returns to the "
                                       "client decoder, which needs un-mixed features, and the masks never cross")
        hook = Mixing(int(strength), data.num_classes, generator)
        model.send_transforms[first] = hook.activations
        model.send_transforms["data"] = hook.labels
        return {"k": int(strength)}, hook
    if name == "proxy":
        shape = _activation_shape(model, data.x_train)
        proxy = make_decoder(shape, data.x_train.shape[1], profile.img_size, 16).to(data.device)
        hook = ProxyAdversary(proxy, strength, sent_key=key)
        model.regularizers[first] = hook
        return {"lambda": strength}, hook
    if name == "dpsgd":
        from medsplit.defences.dpsgd import DPSGDClient

        n = train_size or data.x_train.shape[0] + data.x_aux.shape[0]
        b = batch_size or profile.batch_size
        hook = DPSGDClient(model, first, strength, 1.0, b / n, 1e-5, lr, b)
        return {"sigma": strength, "max_grad_norm": 1.0, "delta": 1e-5, "sample_rate": b / n,
                "sampling": "Poisson (each image joins a batch with probability q)", **hook.scope()}, hook
    raise AssertionError(name)


def train_target(model: SplitModel, data: TaskData, profile: Profile, generator: torch.Generator,
                 detector: HijackDetector | None = None, dp=None) -> float:
    """Train on all hospitals' training images (the colluder is one of them); returns seconds.

    Args:
        dp: the :class:`~medsplit.defences.dpsgd.DPSGDClient` when DP-SGD is on: batches are then
            Poisson-sampled at its rate (an empty draw is a step the accountant still counts).
    """
    x = torch.cat([data.x_train, data.x_aux])
    y = torch.cat([data.y_train, data.y_aux])
    start = time.perf_counter()
    model.train()
    for step in range(1, profile.target_steps + 1):
        if dp is not None:
            i = poisson_batch(x.shape[0], dp.sample_rate, generator)
            if len(i) == 0:
                dp.account_empty_step()
                continue
        else:
            i = torch.randint(0, x.shape[0], (profile.batch_size,), generator=generator)
        i = i.to(x.device)
        if detector is not None and detector.should_probe(step):
            fake = gradient_to_first_part(model, x[i], detector.fake_targets(y[i], data.num_classes))
            regular = gradient_to_first_part(model, x[i], y[i])
            detector.update(step, regular, fake)
        model.train_step(x[i], y[i])
    return time.perf_counter() - start


@torch.no_grad()
def utility(model: SplitModel, task: str, x: torch.Tensor, y: torch.Tensor) -> float:
    """Dice (lungs) or AUC (retinopathy) on held-out images."""
    model.eval()
    out = torch.cat([model.forward(x[i:i + 32]) for i in range(0, x.shape[0], 32)])
    model.train()
    if task == "lungs":
        return dice(out, y)
    p = out.softmax(1)[:, 1].cpu().numpy()
    return float(roc_auc_score(y.cpu().numpy(), p)) if len(set(y.tolist())) == 2 else float("nan")


def dice(logits: torch.Tensor, masks: torch.Tensor) -> float:
    pred = (logits > 0).float()
    m = masks.float()
    inter = (pred * m).sum((1, 2, 3))
    return float(((2 * inter + 1e-6) / (pred.sum((1, 2, 3)) + m.sum((1, 2, 3)) + 1e-6)).mean())


def train_validator(task: str, data: TaskData, profile: Profile, generator: torch.Generator) -> torch.nn.Module:
    """A separate model (never the target) trained on the auxiliary images, to judge reconstructions."""
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))  # same validator for every run of a seed
    if task == "lungs":
        net = build_model("unet-classic", num_classes=1, in_channels=1, base_channels=profile.base_channels)
    else:
        net = build_model("resnet18", num_classes=data.num_classes, in_channels=3)
    net.to(data.device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss = _loss_for(task)
    net.train()
    for _ in range(profile.validator_steps):
        i = torch.randint(0, data.x_aux.shape[0], (profile.batch_size,), generator=generator).to(data.device)
        opt.zero_grad(set_to_none=True)
        loss(net(data.x_aux[i]), data.y_aux[i]).backward()
        opt.step()
    return net.eval()


@torch.no_grad()
def validator_score(net: torch.nn.Module, task: str, images: torch.Tensor, y: torch.Tensor) -> float:
    """Dice (lungs) or balanced accuracy (fundus: the mean of the per-class recalls).

    Plain accuracy rewarded garbage: about 80 % of fundus images are non-referable, so a
    validator that answers "non-referable" for unrecognisable reconstructions scored higher
    on them than on the originals. Balanced accuracy is 0.5 for any constant answer.
    """
    out = net(images)
    if task == "lungs":
        return dice(out, y)
    pred = out.argmax(1)
    recalls = [float((pred[y == c] == c).float().mean()) for c in torch.unique(y)]
    return sum(recalls) / len(recalls)


# ------------------------------------------------------------------ experiments


@dataclass
class DefendedTarget:
    """A target trained once with one defence; ADRA and SDAR both attack it."""

    model: SplitModel
    facts: dict
    hook: object
    utility: float
    seconds: float
    detector: HijackDetector | None


def train_defended_target(task, name, strength, seed, data, profile) -> DefendedTarget:
    """Build, defend and train the target once; every honest-but-curious attack reuses it."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = build_target(task, profile, data.x_train.shape[1], data.num_classes, device=data.device)
    detector = HijackDetector(probe_every=profile.probe_every) if name == "none" else None
    facts, hook = apply_defence(model, task, name, strength, data, profile, g)
    seconds = train_target(model, data, profile, g, detector, dp=hook if name == "dpsgd" else None)
    if name == "dpsgd":
        facts["epsilon"] = hook.epsilon()
        facts["steps"] = hook.steps
    if name == "proxy":
        # what the client's own proxy reached: set beside the fresh attacker's MSE it shows
        # whether the defence fooled only the proxy it trained against
        facts["proxy_mse"] = hook.last_proxy_mse
    util = utility(model, task, data.x_test, data.y_test)
    return DefendedTarget(model, facts, hook, util, seconds, detector)


def _numbers(facts: dict) -> dict:
    return {f"privacy.{k}": v for k, v in facts.items() if not isinstance(v, str)}


def _notes(facts: dict) -> dict:
    return {k: v for k, v in facts.items() if isinstance(v, str)}


def inversion_row(task, name, strength, seed, data, profile, validator, target: DefendedTarget) -> tuple[dict, dict]:
    """ADRA (model inversion): a fresh decoder on the colluder's pairs, inverting the victims."""
    g = torch.Generator().manual_seed(seed)
    model = target.model
    aux_act = observed_activations(model, data.x_aux)
    vic_act = observed_activations(model, data.x_test)
    res = run_inversion(data.x_aux, aux_act, data.x_test, vic_act, profile.inversion, g)
    n = min(64, data.x_test.shape[0])
    row = {"attack": "inversion", "defence": name, "strength": strength, "seed": seed, "utility": target.utility,
           **{k: v for k, v in res.final.items() if k != "iteration"},
           "baseline_mse": res.baseline["mse"], "baseline_ssim": res.baseline["ssim"],
           # dcor: the V-statistic NoPeek minimises, near 1 in this dimension even for noise;
           # dcor2_unbiased: about 0 for independent samples, the leakage score to read
           "dcor": float(distance_correlation(data.x_test[:n], vic_act[:n])),
           "dcor2_unbiased": bias_corrected_dcor2(data.x_test[:n], vic_act[:n]),
           "validator_on_recon": validator_score(validator, task, res.reconstructions, data.y_test),
           "validator_on_original": validator_score(validator, task, data.x_test, data.y_test),
           "train_seconds": target.seconds, **_numbers(target.facts)}
    extra = {"history": res.history, "recon": res.reconstructions[:6].cpu(),
             "detector": target.detector.summary() if target.detector else None, "privacy_notes": _notes(target.facts)}
    return row, extra


def build_sdar(task: str, profile: Profile, model: SplitModel, data: TaskData, dp_normalisation: bool) -> SDARAttack:
    """SDAR's networks: fresh client parts of the target's architecture (the attacker knows the
    architecture, as in the paper), the server's own trained parts, decoder and critics."""
    if task == "lungs":
        table = build_model("unet-classic", num_classes=1, in_channels=data.x_train.shape[1],
                            base_channels=profile.base_channels)
        c = profile.cut_lungs
    else:
        table = build_model("resnet18", num_classes=data.num_classes, in_channels=data.x_train.shape[1])
        c = profile.cut_retinopathy
    fresh = cut(table, c)
    if dp_normalisation:  # the target's architecture under DP-SGD: GroupNorm everywhere
        from medsplit.defences.dpsgd import _fix_stage_modules

        for part in fresh:
            _fix_stage_modules(part)
    simulated = {p.name: p.to(data.device) for p in fresh if p.role == "client"}
    client = model.data_owner
    server_parts = {p.name: p for p, owner in model.chain if owner is not client}
    key = crossing_key(model)
    return SDARAttack(simulated, server_parts, [p.name for p in fresh], key, model.output_key, _loss_for(task),
                      data.num_classes if task == "retinopathy" else 1, tuple(data.x_train.shape[1:]),
                      _activation_shape(model, data.x_train), profile.sdar)


def sdar_row(task, name, strength, seed, data, profile, validator, target: DefendedTarget) -> tuple[dict, dict]:
    """SDAR: a passive server, no colluder. What it learns from: the activations that crossed when the
    private hospitals (not the colluder's share: there is no colluder) ran their training images
    through the trained model (unpaired, labels inferred by its own ``g`` or simulated decoder),
    its own trained parts and its auxiliary labelled images. Judged on the held-out victims."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = target.model
    attack = build_sdar(task, profile, model, data, dp_normalisation=name == "dpsgd")
    z_seen = observed_activations(model, data.x_train)
    vic_act = observed_activations(model, data.x_test)
    res = run_sdar(attack, data.x_aux, data.y_aux, z_seen, None, vic_act, data.x_test, profile.sdar, g)
    row = {"attack": "sdar", "defence": name, "strength": strength, "seed": seed, "utility": target.utility,
           **{k: v for k, v in res.final.items() if k != "iteration"},
           "baseline_mse": res.baseline["mse"], "baseline_ssim": res.baseline["ssim"],
           "validator_on_recon": validator_score(validator, task, res.reconstructions, data.y_test),
           **_numbers(target.facts)}
    if task == "lungs":  # U-shaped: the masks never crossed; the attacker infers them
        mean_mask = (data.y_aux.float().mean(0, keepdim=True) > 0.5).float().expand_as(data.y_test)
        row["mask_dice"] = dice(torch.logit(res.inferred_labels.clamp(1e-6, 1 - 1e-6)), data.y_test)
        row["mask_dice_baseline"] = dice(mean_mask * 2 - 1, data.y_test)  # the mean auxiliary mask
    else:
        row["label_accuracy"] = float((res.inferred_labels.cpu() == data.y_test.cpu()).float().mean())
    return row, {"history": res.history, "recon": res.reconstructions[:6].cpu(), "privacy_notes": _notes(target.facts)}


def fsha_row(task, name, strength, seed, data, profile, validator) -> tuple[dict, dict]:
    """FSHA from scratch inside the real protocol against a client that applies ``name``."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    cfg = profile.fsha
    model = build_target(task, profile, data.x_train.shape[1], data.num_classes, lr=cfg.lr_client, device=data.device)
    facts, hook = apply_defence(model, task, name, strength, data, profile, g, lr=cfg.lr_client,
                                batch_size=cfg.batch_size, train_size=data.x_train.shape[0])
    first = model.chain[0][0]
    key = crossing_key(model)
    shape = _activation_shape(model, data.x_train)
    with torch.no_grad():
        nonneg = bool((first({"x": data.x_aux[:4]})[key] >= 0).all())
    server = FSHAServer(data.x_train.shape[1], profile.img_size, shape, cfg, nonnegative=nonneg, device=data.device)
    hijacked = HijackedSplitModel(model, server, key)
    # the client watches for a hijack in the undefended run (as in honest training)
    detector = HijackDetector(probe_every=profile.probe_every) if name == "none" else None
    batches = None
    if name == "dpsgd":
        def batches():
            i = poisson_batch(data.x_train.shape[0], hook.sample_rate, g)
            if len(i) == 0:
                hook.account_empty_step()
            return i
    res = run_fsha_protocol(hijacked, data.x_train, data.y_train, data.x_aux, data.x_test, cfg, detector=detector,
                            num_classes=data.num_classes, generator=g, batches=batches,
                            progress=cfg.iterations >= 1000)
    if name == "dpsgd":
        facts["epsilon"] = hook.epsilon()
        facts["steps"] = hook.steps
    row = {"attack": "fsha", "defence": name, "strength": strength, "seed": seed,
           **{k: v for k, v in res.final.items() if k not in ("iteration",)},
           "iterations": cfg.iterations,
           # the hijacked client's own task score: in the U-shape its decoder keeps training on the masks
           "utility": utility(hijacked, task, data.x_test, data.y_test),
           "validator_on_recon": validator_score(validator, task, res.reconstructions, data.y_test),
           **_numbers(facts)}
    return row, {"history": res.history, "recon": res.reconstructions[:6].cpu(), "detector": res.detector,
                 "privacy_notes": _notes(facts)}


def label_leakage_row(task, seed, data, profile) -> dict:
    if task != "retinopathy":
        raise DefenceNotApplicable("label leakage needs per-example binary labels held by the client; the lung task's "
                                   "labels are pixel masks that never leave the hospital")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    table = build_model("resnet18", num_classes=data.num_classes, in_channels=3)
    parts = _parts_on(label_private_parts(table, profile.cut_retinopathy), data.device)
    make = lambda params: torch.optim.Adam(params, lr=1e-3)  # noqa: E731
    model = two_party(parts, F.cross_entropy, make_optimizer=make)
    grads, labels = [], []
    x, y = torch.cat([data.x_train, data.x_aux]), torch.cat([data.y_train, data.y_aux])
    with Recorder(model.channel, "gradient", receiver="server") as rec:
        for _ in range(profile.label_steps):
            i = torch.randint(0, x.shape[0], (profile.batch_size,), generator=g).to(x.device)
            model.train_step(x[i], y[i])
            grads.append(next(iter(rec.transfers[-1].tensors.values())))
            labels.append(y[i])
    counts = torch.bincount(y, minlength=2)
    positive = int(counts.argmin())
    return {"attack": "label-leakage", "defence": "none", "seed": seed, "positive_class": positive,
            **leakage_scores(grads, labels, positive)}


def evaluate(task: str, profile: Profile, data_root: Path, attacks: list[str], defences: list[str] | None,
             log=print, device: torch.device = CPU, progress: bool = False) -> dict:
    """Run every requested attack against every defence and strength of ``profile`` on ``device``.

    ``progress`` shows a bar over the runs (one line per finished run is written either way).

    Returned tensors (reconstructions, originals) are on the CPU whatever ``device`` is.
    """
    check_attack_names(attacks)
    defences = list(profile.strengths) if defences is None else defences
    check_defence_names(defences)
    rows, extras, skipped = [], {}, []
    honest = [a for a in ("inversion", "sdar") if a in attacks]  # share one defended target per setting
    honest_runs = [(n, s) for n in defences for s in profile.strengths.get(n, [0])] if honest else []
    fsha_runs = [(n, s) for n in defences if n in profile.fsha_defences for s in profile.fsha_defences[n]] \
        if "fsha" in attacks else []
    per_seed = 1 + len(honest_runs) + len(fsha_runs) + ("label-leakage" in attacks)  # 1: the validator
    bar = tqdm(total=per_seed * len(profile.seeds), desc=f"attacks on {task} ({profile.name})", unit="run",
               disable=not progress)
    say = bar.write if progress else log
    if "fsha" in attacks:
        for name in [d for d in defences if d not in profile.fsha_defences]:
            skipped.append({"attack": "fsha", "defence": name, "reason": f"profile {profile.name!r} runs FSHA against "
                            f"{sorted(profile.fsha_defences)} only (each FSHA run is a full attack from scratch)"})
    shown = {"inversion": "ssim {ssim:.3f} utility {utility:.3f}", "sdar": "ssim {ssim:.3f} mse {mse:.4f}",
             "fsha": "ssim {ssim:.3f} mse {mse:.4f} utility {utility:.3f}"}
    row_functions = {"inversion": inversion_row, "sdar": sdar_row}
    # a defence that cannot apply (to this task or cut) is tried once, not at every strength and seed
    refused: dict[str, set[str]] = {"honest": set(), "fsha": set()}

    def record(attack, name, s, seed, row, extra):
        rows.append(row)
        extras[f"{attack}/{name}/{s}/{seed}"] = extra
        say(f"{attack} {name}={s} seed {seed}: " + shown[attack].format(**row))

    start = time.perf_counter()
    for seed in profile.seeds:
        data = load_task(task, profile, data_root, seed).to(device)
        validator = train_validator(task, data, profile, torch.Generator().manual_seed(1000 + seed))
        bar.update(1)
        for name, s in honest_runs:
            bar.set_postfix_str(f"{'+'.join(honest)} {name}={s} seed {seed}")
            if name not in refused["honest"]:
                try:
                    target = train_defended_target(task, name, s, seed, data, profile)
                except DefenceNotApplicable as e:
                    skipped += [{"attack": a, "defence": name, "reason": str(e)} for a in honest]
                    refused["honest"].add(name)
                else:
                    for attack in honest:
                        if attack == "sdar" and s not in (profile.sdar_strengths or profile.strengths).get(name, []):
                            continue
                        record(attack, name, s, seed, *row_functions[attack](task, name, s, seed, data, profile,
                                                                              validator, target))
            bar.update(1)
        for name, s in fsha_runs:
            bar.set_postfix_str(f"fsha {name}={s} seed {seed}")
            if name not in refused["fsha"]:
                try:
                    record("fsha", name, s, seed, *fsha_row(task, name, s, seed, data, profile, validator))
                except DefenceNotApplicable as e:
                    skipped.append({"attack": "fsha", "defence": name, "reason": str(e)})
                    refused["fsha"].add(name)
            bar.update(1)
        if "label-leakage" in attacks:
            bar.set_postfix_str(f"label leakage seed {seed}")
            try:
                rows.append(label_leakage_row(task, seed, data, profile))
            except DefenceNotApplicable as e:
                if seed == profile.seeds[0]:  # the task decides, not the seed
                    skipped.append({"attack": "label-leakage", "defence": "none", "reason": str(e)})
            bar.update(1)
    bar.close()
    return {"task": task, "profile": profile.name, "rows": rows, "extras": extras, "skipped": skipped,
            "seconds": time.perf_counter() - start, "data_source": data.source, "originals": data.x_test[:6].cpu(),
            "profile_config": _jsonable(asdict(profile)), "device": train_loop.device_label(device)}


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


# ------------------------------------------------------------------ command line


def add_attack_parser(subparsers) -> None:
    p = subparsers.add_parser("attack", help="attack x defence evaluation; writes an HTML report and JSON in reports/")
    p.add_argument("--profile", choices=list(PROFILES), default=None, help="tiny (tests), reduced (CPU default), full (GPU default)")
    p.add_argument("--task", choices=list(TASKS), default="lungs")
    p.add_argument("--device", choices=list(DEVICES), default="auto",
                   help="auto (cuda when a GPU is present, else cpu), cpu, or cuda (an error without a GPU)")
    p.add_argument("--attacks", default=",".join(ATTACKS),
                   help=f"comma-separated from {','.join(ATTACKS)} (aliases: "
                        f"{', '.join(f'{a} = {n}' for a, n in ALIASES.items())})")
    p.add_argument("--defences", default=None, help=f"comma-separated from {','.join(DEFENCES)} (default: all of the profile)")
    p.add_argument("--data-root", default=None, help="data folder holding lungs/ and retinopathy/ (default: $MEDSPLIT_DATA, else datasets/)")
    p.add_argument("--out", default="reports", help="report folder")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change one field of the profile, e.g. --set fsha.iterations=3000 --set img_size=96 "
                        "--set cut_lungs=2 (repeatable; the report is then named after the profile plus '-custom', "
                        "or after --set name=...)")


def run_attack_command(args) -> int:
    from medsplit.report.attack_report import write_attack_report

    device = resolve_device(args.device)
    profile = customise(PROFILES[args.profile or default_profile(device)], args.overrides)
    attacks = resolve_attack_names([a.strip() for a in args.attacks.split(",") if a.strip()])
    defences = [d for d in args.defences.split(",") if d] if args.defences else None
    if defences is not None:
        check_defence_names(defences)
        if args.task == "lungs" and "mixing" in defences:
            raise DefenceNotApplicable("mixing cannot apply to the lung task's U-shaped split: the server's output "
                                       "returns to the client decoder, which needs un-mixed features")
    root = Path(args.data_root) if args.data_root else _default_root()
    results = evaluate(args.task, profile, root, attacks, defences, device=device, progress=True)
    html = write_attack_report(results, Path(args.out))
    print(f"report: {html}\nsummary: {html.with_suffix('.json')}")
    return 0


def customise(profile: Profile, overrides: list[str]) -> Profile:
    """The profile with ``--set`` overrides applied and checked; renamed so that its report does
    not overwrite the stock profile's."""
    if not overrides:
        return profile
    renamed = any(o.split("=", 1)[0].strip() == "name" for o in overrides)
    try:
        custom = with_overrides(profile, overrides)
    except ConfigError as e:
        raise ConfigError(f"--set: {e}; the profile's fields are {sorted(f.name for f in fields(Profile))}") from None
    if not renamed:
        custom.name = f"{profile.name}-custom"
    checks = [("img_size", custom.img_size >= 16, "must be >= 16"),
              ("batch_size", custom.batch_size >= 2, "must be >= 2 (BatchNorm needs more than one sample)"),
              ("fsha.batch_size", custom.fsha.batch_size >= 2, "must be >= 2"),
              ("inversion.batch_size", custom.inversion.batch_size >= 2, "must be >= 2"),
              ("fsha.iterations", custom.fsha.iterations >= 1, "must be >= 1"),
              ("inversion.steps", custom.inversion.steps >= 1, "must be >= 1"),
              ("target_steps", custom.target_steps >= 1, "must be >= 1"),
              ("seeds", bool(custom.seeds), "must name at least one seed")]
    for key, ok, why in checks:
        if not ok:
            raise ConfigError(f"--set {key}: {why}")
    return custom


def resolve_device(name: str) -> torch.device:
    """``--device`` to a device, as training resolves ``train.device``; the harness knows only DEVICES."""
    if name not in DEVICES:
        raise ValueError(f"unknown --device {name!r}; valid devices are {list(DEVICES)}")
    return train_loop.resolve_device(name, setting="--device {}")


def default_profile(device: torch.device) -> str:
    """Paper scale on a GPU, the reduced scale on a CPU."""
    return "full" if device.type == "cuda" else "reduced"


def _default_root() -> Path:
    # The same data root as training: $MEDSPLIT_DATA, else datasets/.
    return Path(os.environ.get("MEDSPLIT_DATA", "datasets"))
