"""The privacy numbers hold for what they claim (issue 14): DP-SGD's per-sample gradients are
per-sample, batches are Poisson-sampled, the epsilon says what it covers; the Laplace epsilon
per release holds at inference and the training-time bound is the batch-wide one; FSHA against
the lung U-Net runs the real U-shaped protocol (masks stay home, only the encoder's gradient
is hijacked)."""

from dataclasses import replace

import pytest
import torch
from torch import nn

from medsplit.attacks.fsha import FSHAConfig, FSHAServer
from medsplit.attacks.fsha_protocol import HijackedSplitModel, run_fsha_protocol
from medsplit.attacks.profiles import PROFILES
from medsplit.attacks.tap import Recorder, crossing_key
from medsplit.attacks.targets import apply_defence, build_target, train_target
from medsplit.attacks.tasks import AttackData
from medsplit.defences import LaplaceMechanism
from medsplit.defences.sampling import poisson_batch

torch.set_num_threads(1)

TINY = PROFILES["tiny"]
SHAPES = {"retinopathy": (3, 32, 2), "lungs": (1, 16, 1)}  # channels, image side, classes


def _data(task: str, n: int = 16) -> AttackData:
    c, side, classes = SHAPES[task]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3 * n, c, side, side, generator=g)
    y = (x[:, :1] > 0.5).long() if task == "lungs" else torch.randint(0, classes, (3 * n,), generator=g)
    return AttackData(x[:n], y[:n], x[n:2 * n], y[n:2 * n], x[2 * n:], y[2 * n:], classes, "test")


def _dp_target(task: str):
    torch.manual_seed(0)
    data = _data(task)
    model = build_target(task, replace(TINY, cut_retinopathy=4), data.x_train.shape[1], data.num_classes)
    facts, dp = apply_defence(model, task, "dpsgd", 1.0, data, TINY, torch.Generator().manual_seed(0))
    return model, dp, facts, data


def _clipped_per_sample_gradients(model, dp, x, y, clip: float) -> torch.Tensor:
    """Each sample's gradient of every private part's parameters, each part clipped to ``clip`` (as DP-SGD does)."""
    for party in model.parties:
        party.zero_grad()
    model.train()
    model.forward_backward(x, y)
    n = x.shape[0]
    out = []
    for module in dp.modules.values():
        g = torch.cat([p.grad_sample.reshape(n, -1) for p in module.parameters() if p.grad_sample is not None], 1)
        out.append(g * (clip / (g.norm(dim=1, keepdim=True) + 1e-6)).clamp(max=1.0))
    return torch.cat(out, 1)


@pytest.mark.parametrize("task", ["retinopathy", "lungs"])  # the ResNet at cut 4, the U-Net
def test_dpsgd_per_sample_gradients_do_not_depend_on_the_rest_of_the_batch(task):
    model, dp, _, data = _dp_target(task)
    x, y = data.x_train[:8], data.y_train[:8]
    other = x.clone()
    other[0] = data.x_test[0]  # replace one image of the batch
    a = _clipped_per_sample_gradients(model, dp, x, y, dp.part_clip)
    b = _clipped_per_sample_gradients(model, dp, other, y, dp.part_clip)
    assert (a[0] - b[0]).norm() > 1e-3  # the replaced sample's own gradient changed ...
    # ... and nobody else's did: with a BatchNorm in training mode downstream they moved by ~C
    assert (a[1:] - b[1:]).norm(dim=1).max() < 1e-5 * dp.max_grad_norm
    norms = [m for part, _ in model.chain for m in part.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert not norms  # the explicit choice: GroupNorm on every part


def test_dpsgd_runs_sample_poisson_batches_and_the_epsilon_names_its_scope():
    n, q = 2000, 0.01
    sizes = [len(poisson_batch(n, q, torch.Generator().manual_seed(s))) for s in range(200)]
    assert abs(sum(sizes) / len(sizes) - n * q) < 2 and len(set(sizes)) > 5  # mean q*n, variable size
    model, dp, facts, data = _dp_target("lungs")
    seen = []
    step = model.train_step
    model.train_step = lambda x, y: seen.append(x.shape[0]) or step(x, y)
    profile = replace(TINY, target_steps=8)
    train_target(model, data, profile, torch.Generator().manual_seed(0), dp=dp)
    assert len(set(seen)) > 1  # not the fixed-size batches the accountant does not model
    assert dp.steps == profile.target_steps  # empty draws count too
    assert "client_encoder" in facts["covers"] and "client_decoder" in facts["covers"] and "Poisson" in facts["covers"]
    assert "activations" in facts["not_covered"]
    assert "GroupNorm" in facts["normalisation"]


def test_laplace_epsilon_per_release_holds_at_inference_and_training_gets_the_batch_bound():
    torch.manual_seed(0)
    model = build_target("lungs", TINY, 1, 1)
    mech = LaplaceMechanism(sensitivity=1.0, scale=0.5)
    first, key = model.chain[0][0], crossing_key(model)
    x = torch.rand(8, 1, 16, 16)
    other = x.clone()
    other[0] = torch.rand(1, 16, 16)

    @torch.no_grad()
    def rows(images, training):
        first.train(training)
        return mech.clip({key: first({"x": images})[key]})[key].reshape(8, -1)

    a, b = rows(x, False), rows(other, False)
    assert torch.allclose(a[1:], b[1:], atol=1e-7)  # inference: each row is its own image's
    a, b = rows(x, True), rows(other, True)
    assert (a[1:] - b[1:]).abs().sum(1).max() > 0.01 * mech.sensitivity  # training: BatchNorm couples rows
    assert ((a - b).abs().sum(1) <= mech.sensitivity + 1e-6).all()  # yet every row moves by <= C
    facts = mech.describe(batch_size=8, steps=10)
    assert facts["epsilon_per_release_inference"] == pytest.approx(1.0 / 0.5)
    assert facts["epsilon_per_training_batch"] == pytest.approx(8 * 1.0 / 0.5)
    assert facts["epsilon_whole_training"] == pytest.approx(10 * 8 * 1.0 / 0.5)  # T*B*C/b, not epochs*B*C/b
    assert "T*B*C/b" in facts["scope"] and "not cryptographically secure" in facts["scope"]
    assert mech.describe(8, 10, images_per_patient=2)["epsilon_whole_training_patient"] == pytest.approx(2 * 160)
    assert "client decoder" in facts["scope"] and "in the clear" in facts["scope"]


def _hijacked_unet():
    torch.manual_seed(0)
    model = build_target("lungs", TINY, 1, 1, lr=1e-3)
    key = crossing_key(model)
    shape = tuple(model.chain[0][0]({"x": torch.rand(2, 1, 16, 16)})[key].shape[1:])
    cfg = FSHAConfig(iterations=6, batch_size=8, lr_client=1e-3, width=8, log_every=3)
    return HijackedSplitModel(model, FSHAServer(1, 16, shape, cfg, nonnegative=True), key), key, cfg


def test_u_shaped_fsha_hijacks_only_the_encoder_gradient_and_the_skips_still_pull_to_the_task():
    model, key, _ = _hijacked_unet()
    data = _data("lungs")
    x, masks = data.x_train[:8], data.y_train[:8]
    encoder = model.chain[0][0]
    with Recorder(model.channel, "gradient", receiver="client0") as rec, \
            Recorder(model.channel, "label") as labels:
        for party in model.parties:
            party.zero_grad()
        model.forward_backward(x, masks)
    received = rec.transfers[-1].tensors[key]
    assert torch.allclose(received, model.fsha.client_gradient(model.last_received), atol=1e-7)  # the hijack
    assert not labels.transfers  # the masks never left the hospital
    # the encoder's gradient = adversarial (server path) + task (skip path through the client decoder)
    total = [p.grad.clone() for p in encoder.parameters()]
    z = encoder({"x": x})[key]
    adversarial_only = torch.autograd.grad(z, list(encoder.parameters()), grad_outputs=received)
    gap = sum(float((t - a).norm()) for t, a in zip(total, adversarial_only))
    assert gap > 1e-3 * sum(float(t.norm()) for t in total)
    decoder = dict(model.data_owner.parts.items())["client_decoder"]
    assert all(p.grad is not None for p in decoder.parameters())  # the client decoder trains on the masks


def test_the_label_sharing_lung_control_gives_the_client_only_the_servers_gradient():
    """``--task lungs-label-sharing`` (FSHA's own threat model on the lung data): one tensor crosses,
    the masks go to the server, and the client's encoder trains on the hijacked gradient alone."""
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"CUT=2 is not a legal cut.*\[1\]"):
        build_target("lungs-label-sharing", TINY, 1, 1)  # tiny cuts at 2: two skips would cross
    model = build_target("lungs-label-sharing", replace(TINY, cut_lungs=1), 1, 1, lr=1e-3)
    assert [(part.name, owner.name) for part, owner in model.chain] == [("client_encoder", "client0"), ("server", "server")]
    key = crossing_key(model)
    assert key == "enc1" and model.chain[0][0].sends == ("enc1",)  # the skip dec1 reads is the same tensor
    shape = tuple(model.chain[0][0]({"x": torch.rand(2, 1, 16, 16)})[key].shape[1:])
    cfg = FSHAConfig(iterations=6, batch_size=8, lr_client=1e-3, width=8, log_every=3)
    hijacked = HijackedSplitModel(model, FSHAServer(1, 16, shape, cfg, nonnegative=True), key)
    data = _data("lungs")
    x, masks = data.x_train[:8], data.y_train[:8]
    encoder = hijacked.chain[0][0]
    with Recorder(hijacked.channel, "label") as labels:
        for party in hijacked.parties:
            party.zero_grad()
        hijacked.forward_backward(x, masks)
    assert labels.transfers  # the masks crossed: the server computes the loss
    received = hijacked.fsha.client_gradient(hijacked.last_received)
    z = encoder({"x": x})[key]
    adversarial_only = torch.autograd.grad(z, list(encoder.parameters()), grad_outputs=received)
    for p, a in zip(encoder.parameters(), adversarial_only):
        assert torch.allclose(p.grad, a, atol=1e-6)  # no task gradient reaches the client


def test_harness_runs_lung_fsha_in_the_u_shaped_protocol(shared_data):
    from medsplit.attacks.harness import evaluate
    from medsplit.split import channel as channel_module

    kinds = []
    send = channel_module.Channel.send

    def spy(self, sender, receiver, kind, tensors, link=""):
        kinds.append((kind, link))
        return send(self, sender, receiver, kind, tensors, link)

    channel_module.Channel.send = spy
    try:
        res = evaluate("lungs", TINY, shared_data, ["fsha"], ["none"], log=lambda *a: None)
    finally:
        channel_module.Channel.send = send
    assert not [k for k in kinds if k[0] == "label"]  # old harness: the masks crossed as labels
    assert any(link.startswith("client_decoder->") for kind, link in kinds if kind == "gradient")
    row = res["rows"][0]
    assert row["attack"] == "fsha" and 0 <= row["utility"] <= 1  # the hijacked client's own Dice


def test_u_shaped_fsha_run_logs_quality_and_the_detector_sees_the_hijack():
    from medsplit.defences import HijackDetector

    model, _, cfg = _hijacked_unet()
    data = _data("lungs", n=24)
    detector = HijackDetector(probe_every=2, min_probes=3)
    with Recorder(model.channel, "label") as labels:
        res = run_fsha_protocol(model, data.x_train, data.y_train, data.x_aux, data.x_test, cfg, detector=detector,
                                num_classes=1, generator=torch.Generator().manual_seed(0))
    assert [h["iteration"] for h in res.history] == [0, 3, 6] and res.reconstructions.shape == data.x_test.shape
    # fake rounds (inverted masks, at the client) change the client decoder's gradient to the
    # server, but not what the hijacking server returns to the encoder
    assert res.detector["flagged"] and res.detector["median_score"] < 1e-6
    assert not labels.transfers


def test_attack_summary_states_sdar_the_u_shaped_fsha_and_fsha_against_dpsgd():
    from medsplit.report.attack_findings import defence_table, findings

    base = {"strength": 0, "seed": 0, "baseline_ssim": 0.45, "baseline_mse": 0.03}
    rows = [{"attack": "sdar", "defence": "none", **base, "ssim": 0.7, "mse": 0.01, "utility": 0.9, "mask_dice": 0.88,
             "mask_dice_baseline": 0.76},
            {"attack": "sdar", "defence": "nopeek", **{**base, "strength": 2.0}, "ssim": 0.6, "mse": 0.02, "utility": 0.85},
            {"attack": "fsha", "defence": "none", "strength": 0, "seed": 0, "ssim": 0.5, "mse": 0.03, "iterations": 400,
             "utility": 0.87},
            {"attack": "fsha", "defence": "dpsgd", "strength": 1.0, "seed": 0, "ssim": 0.1, "mse": 0.1, "iterations": 400,
             "utility": 0.86, "privacy.epsilon": 63.0}]
    text = " ".join(findings(rows, {}, "lungs"))
    assert "SDAR without a defence" in text and "beats it on MSE" in text and "Dice 0.880" in text
    assert "real U-shaped protocol" in text and "Dice 0.870" in text
    assert "epsilon 63 per image for the trained weights, not the activations" in text and "Gawron and Stubbings" in text
    table = {r["defence"]: r for r in defence_table(rows)}
    assert table["nopeek"]["SDAR SSIM change"] == pytest.approx(-0.1) and table["nopeek"]["ADRA SSIM"] is None


def test_dpsgd_refuses_an_expected_batch_larger_than_the_training_set():
    data = _data("lungs")
    model = build_target("lungs", TINY, data.x_train.shape[1], data.num_classes)
    n = data.x_train.shape[0]
    with pytest.raises(ValueError, match=rf"expected batch size \({n + 1}\).*training images \({n}\)"):
        apply_defence(model, "lungs", "dpsgd", 1.0, data, TINY, torch.Generator().manual_seed(0),
                      batch_size=n + 1, train_size=n)


def test_fsha_against_dpsgd_with_fewer_private_images_than_its_batch_samples_every_image():
    from medsplit.attacks.fsha_protocol import fsha_row
    from medsplit.attacks.registry import AttackContext
    from medsplit.attacks.tasks import attack_task

    data = _data("lungs")
    n = data.x_train.shape[0]
    profile = replace(TINY, fsha=replace(TINY.fsha, batch_size=n + 5, iterations=2, log_every=1))
    row, extra = fsha_row(AttackContext(attack_task("lungs"), 0, data, profile, nn.Identity()), "dpsgd", 1.0)
    assert row["privacy.sample_rate"] == 1.0 and row["privacy.epsilon"] > 0
    assert f"expected batch is {n} (q = 1)" in extra["privacy_notes"]["batch_note"]
