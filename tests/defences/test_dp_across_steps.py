"""DP-SGD's epsilon holds across steps (issue 27): with DP on every part, nothing but the
released (noisy) weights carries one training image into later steps.

The measurement: two runs that differ in one image of the first batch; after ``k`` steps the
weights of every part the accountant covers are set equal in both runs (conditioning on what
was released); the clipped per-sample gradients of a later batch without that image must then
be exactly equal. With only the client part private (the old mode, a control here: its epsilon
is nominal and never reported) the server's weights, trained without DP, still differ, and the
client's clipped per-sample gradients move.
"""

from dataclasses import replace

import pytest
import torch
from torch import nn

from medsplit.attacks.profiles import PROFILES
from medsplit.attacks.targets import apply_defence, build_target, train_target
from medsplit.attacks.tasks import AttackData
from medsplit.defences.dpsgd import DPSGD
from medsplit.defences.group_privacy import group_delta, patient_epsilon

torch.set_num_threads(1)

TINY = PROFILES["tiny"]
#: (task, cut): the ResNet at cut 4, the U-Net at cut 1 (tiny sizes)
SETTINGS = {"retinopathy": (3, 16, 2, replace(TINY, cut_retinopathy=4)),
            "lungs": (1, 16, 1, replace(TINY, cut_lungs=1))}
SIGMA, CLIP, BATCH = 1.0, 1.0, 4


def _images(task: str, n: int = 12):
    c, side, classes, _ = SETTINGS[task]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n + 1, c, side, side, generator=g)
    y = (x[:, :1] > 0.5).long() if task == "lungs" else torch.randint(0, classes, (n + 1,), generator=g)
    return x, y


def _trained(task: str, swap: bool, steps: int, private_parts):
    """A target trained ``steps`` steps; with ``swap`` the first batch's first image is another one."""
    c, _, classes, profile = SETTINGS[task]
    x, y = _images(task)
    torch.manual_seed(0)
    model = build_target(task, profile, c, classes)
    dp = DPSGD(model, SIGMA, CLIP, sample_rate=BATCH / 12, delta=1e-5, lr=1e-2, batch_size=BATCH,
               private_parts=private_parts)
    for step in range(steps):
        i = torch.arange(step * BATCH, (step + 1) * BATCH) % 12
        xb, yb = x[i].clone(), y[i].clone()
        if step == 0 and swap:
            xb[0], yb[0] = x[12], y[12]  # the one image the two runs differ in
        torch.manual_seed(100 + step)  # the same noise draws in both runs
        model.train_step(xb, yb)
    return model, dp


def _clipped_per_sample(model, dp: DPSGD, x, y) -> dict[str, torch.Tensor]:
    """Each private part's per-sample gradients, clipped as its DP optimiser clips them."""
    for party in model.parties:
        party.zero_grad()
    model.train()
    model.forward_backward(x, y)
    out = {}
    for name in dp.private_parts:
        params = [p for p in dp.modules[name].parameters() if p.requires_grad]
        g = torch.cat([p.grad_sample.reshape(x.shape[0], -1) for p in params], 1)
        out[name] = g * (dp.part_clip / (g.norm(dim=1, keepdim=True) + 1e-6)).clamp(max=1.0)
    return out


def _movement(task: str, steps: int, private_parts) -> float:
    """Largest change (in units of C) of a later sample's clipped gradient between the two runs."""
    a, dp_a = _trained(task, False, steps, private_parts)
    b, dp_b = _trained(task, True, steps, private_parts)
    released = set(dp_a.private_parts)
    with torch.no_grad():  # condition on the release: every covered part's weights equal
        for (pa, _), (pb, _) in zip(a.chain, b.chain):
            if pa.name in released:
                for wa, wb in zip(pa.parameters(), pb.parameters()):
                    wb.copy_(wa)
    x, y = _images(task)
    later = torch.arange(4, 4 + BATCH)  # not the swapped image, not the first batch's
    ga, gb = _clipped_per_sample(a, dp_a, x[later], y[later]), _clipped_per_sample(b, dp_b, x[later], y[later])
    return max(float((ga[n] - gb[n]).norm(dim=1).max()) for n in ga) / CLIP


@pytest.mark.parametrize("task", ["retinopathy", "lungs"])
def test_dp_on_every_part_leaves_later_clipped_gradients_exactly_unchanged(task):
    assert _movement(task, steps=3, private_parts=None) == 0.0


@pytest.mark.parametrize("task", ["retinopathy", "lungs"])
def test_client_only_dp_carries_the_image_into_later_gradients(task):
    first = "client" if task == "retinopathy" else "client_encoder"
    assert _movement(task, steps=3, private_parts=[first]) > 1e-3


def test_every_part_is_private_clipped_jointly_and_accounted_once():
    c, _, classes, profile = SETTINGS["lungs"]
    torch.manual_seed(0)
    model = build_target("lungs", profile, c, classes)
    dp = DPSGD(model, SIGMA, CLIP, sample_rate=0.25, delta=1e-5, lr=1e-3, batch_size=BATCH)
    assert dp.private_parts == [p.name for p, _ in model.chain] and len(dp.private_parts) == 4  # U-Net: 4 parts
    assert not [m for p, _ in model.chain for m in p.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    # the per-part clips combine to C, every part adds noise of std sigma * C
    assert sum(dp.optimizers[n].max_grad_norm ** 2 for n in dp.private_parts) == pytest.approx(CLIP ** 2)
    for n in dp.private_parts:
        opt = dp.optimizers[n]
        assert opt.noise_multiplier * opt.max_grad_norm == pytest.approx(SIGMA * CLIP)
    x, y = _images("lungs")
    for _ in range(3):
        model.train_step(x[:BATCH], y[:BATCH])
    from opacus.accountants import RDPAccountant

    fresh = RDPAccountant()
    for _ in range(3):
        fresh.step(noise_multiplier=SIGMA, sample_rate=0.25)
    assert dp.steps == 3 and dp.epsilon() == pytest.approx(fresh.get_epsilon(1e-5))


def test_client_only_mode_reports_no_epsilon_and_says_it_is_nominal():
    c, _, classes, profile = SETTINGS["retinopathy"]
    model = build_target("retinopathy", profile, c, classes)
    dp = DPSGD(model, SIGMA, CLIP, sample_rate=0.25, delta=1e-5, lr=1e-3, batch_size=BATCH, private_parts=["client"])
    x, y = _images("retinopathy")
    model.train_step(x[:BATCH], y[:BATCH])
    assert dp.epsilon() is None and dp.patient_epsilon() is None
    assert "nominal, not a guarantee" in dp.scope()["covers"]


def test_patient_epsilon_is_group_privacy_at_the_same_delta():
    # a toy accountant: eps(d) = sqrt(2 log(1.25/d)) / 2 (the Gaussian mechanism at sigma 2)
    eps_at = lambda d: (2 * torch.log(torch.tensor(1.25 / d, dtype=torch.float64))).sqrt().item() / 2  # noqa: E731
    assert patient_epsilon(eps_at, 1, 1e-5) == (eps_at(1e-5), 1e-5)
    eps2, d = patient_epsilon(eps_at, 2, 1e-5)
    assert group_delta(eps_at(d), d, 2) <= 1e-5 * (1 + 1e-9)  # the group's delta is the target's
    assert group_delta(eps_at(d * 1.01), d * 1.01, 2) > 1e-5  # and the image delta is the largest that gets it
    assert eps2 == pytest.approx(2 * eps_at(d)) and eps2 > 2 * eps_at(1e-5)


def test_harness_reports_image_and_patient_epsilon_with_their_scope_and_rng_caveat():
    c, side, classes, profile = SETTINGS["lungs"]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(48, c, side, side, generator=g)
    data = AttackData(x[:16], (x[:16, :1] > 0.5).long(), x[16:32], (x[16:32, :1] > 0.5).long(), x[32:],
                    (x[32:, :1] > 0.5).long(), classes, "test", images_per_patient=2)
    torch.manual_seed(0)
    model = build_target("lungs", profile, c, classes)
    facts, dp = apply_defence(model, "lungs", "dpsgd", 1.0, data, profile, g)
    assert facts["sample_rate"] == profile.batch_size / 16  # the client's own images only, not the auxiliary ones
    train_target(model, data, replace(profile, target_steps=4), g, dp=dp)
    eps, eps_patient = dp.epsilon(), dp.patient_epsilon()
    assert 0 < eps < eps_patient < float("inf")
    assert "every part" in facts["covers"]
    assert "does NOT cover the activations the server sees during training" in facts["not_covered"]
    assert "not cryptographically secure" in facts["rng"] and "patient" in facts["unit"]


def test_secure_mode_refuses_without_a_csprng(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torchcsprng", None)  # not installed
    model = build_target("lungs", SETTINGS["lungs"][3], 1, 1)
    with pytest.raises(ValueError, match="torchcsprng"):
        DPSGD(model, SIGMA, CLIP, sample_rate=0.25, delta=1e-5, lr=1e-3, batch_size=BATCH, secure_mode=True)
