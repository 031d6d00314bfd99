"""Defences: dCor is true distance correlation, the Laplace mechanism's epsilon and clip,
mixing keeps shapes and mixes labels like activations, DP-SGD accounting, the hijack detector."""

import pytest
import torch
import torch.nn.functional as F

from medsplit.defences import (
    DefenceNotApplicable,
    LaplaceMechanism,
    Mixing,
    NoPeek,
    ProxyAdversary,
    check_defence_names,
)
from medsplit.defences.dcor import bias_corrected_dcor2, distance_correlation
from medsplit.models import build_model
from medsplit.split import cut, two_party

torch.set_num_threads(1)


def _distance_lists(z):
    """Euclidean distances between the flattened samples of ``z``, pair by pair, as nested lists."""
    z = z.reshape(len(z), -1).double()
    return [[float(torch.linalg.norm(z[i] - z[j])) for j in range(len(z))] for i in range(len(z))]


def _reference_dcor(x, y):
    """Straight from Szekely et al. (2007): Euclidean distances, double centring, V-statistics."""

    def centred(z):
        d = torch.tensor(_distance_lists(z), dtype=torch.float64)
        return d - d.mean(0) - d.mean(1, keepdim=True) + d.mean()

    a, b = centred(x), centred(y)
    return float(((a * b).mean() / ((a * a).mean() * (b * b).mean()).sqrt()).sqrt())


def test_dcor_matches_reference_and_properties():
    torch.manual_seed(0)
    x = torch.randn(20, 3, 4, 4)
    y = torch.tanh(x.reshape(20, -1)[:, :5]) + 0.3 * torch.randn(20, 5)
    assert distance_correlation(x, y).item() == pytest.approx(_reference_dcor(x, y), abs=1e-4)
    assert distance_correlation(x, x).item() == pytest.approx(1.0, abs=1e-4)
    assert distance_correlation(x, 7.5 * y).item() == pytest.approx(distance_correlation(x, y).item(), abs=1e-4)
    big = torch.randn(400, 2)
    assert distance_correlation(big, torch.randn(400, 2)).item() < 0.15  # independent -> near 0
    # squared distances would give the RV coefficient: for y = x^2 (dependent, uncorrelated) dCor sees it
    u = torch.linspace(-1, 1, 200).unsqueeze(1)
    assert distance_correlation(u, u**2).item() > 0.4


def _reference_dcor2_u(x, y):
    """Szekely and Rizzo (2014), section 2: U-centred distance matrices, sums over i != j."""
    n = len(x)

    def u_centred(z):
        d = _distance_lists(z)
        u = [[0.0] * n for _ in range(n)]
        for i in range(n):
            for j in range(n):
                if i != j:
                    u[i][j] = (d[i][j] - sum(d[i]) / (n - 2) - sum(r[j] for r in d) / (n - 2)
                               + sum(map(sum, d)) / ((n - 1) * (n - 2)))
        return torch.tensor(u, dtype=torch.float64)

    a, b = u_centred(x), u_centred(y)
    cov = lambda p, q: float((p * q).sum()) / (n * (n - 3))  # noqa: E731
    return cov(a, b) / (cov(a, a) * cov(b, b)) ** 0.5


def test_bias_corrected_dcor2_matches_reference_and_is_near_zero_for_independent_high_dim_data():
    torch.manual_seed(0)
    x = torch.randn(12, 3, 4, 4)
    y = torch.tanh(x.reshape(12, -1)[:, :5]) + 0.3 * torch.randn(12, 5)
    assert bias_corrected_dcor2(x, y) == pytest.approx(_reference_dcor2_u(x, y), abs=1e-9)
    assert bias_corrected_dcor2(x, 3 * x + 1) == pytest.approx(1.0, abs=1e-9)
    # the case that misled the attack report: images against independent noise of a cut's size
    images, noise = torch.rand(64, 1, 64, 64), torch.randn(64, 16, 32, 32)
    assert distance_correlation(images, noise).item() > 0.95  # the V-statistic says "leaks"
    assert abs(bias_corrected_dcor2(images, noise)) < 0.05  # the corrected one says independent
    with pytest.raises(ValueError, match="at least 4 samples"):
        bias_corrected_dcor2(x[:3], y[:3])


def test_nopeek_is_a_differentiable_regularizer():
    x = torch.randn(8, 1, 8, 8)
    z = torch.randn(8, 4, 4, 4, requires_grad=True)
    loss = NoPeek(2.0)({"x": x}, {"a": z})
    loss.backward()
    assert torch.isfinite(z.grad).all() and loss.item() > 0


def test_laplace_epsilon_and_clip():
    mech = LaplaceMechanism(sensitivity=2.0, scale=0.5, generator=torch.Generator().manual_seed(0))
    assert mech.epsilon == pytest.approx(2.0 / 0.5)
    t = {"a": 10 * torch.randn(16, 4, 3, 3), "b": torch.randn(16, 5)}
    clipped = mech.clip(t)
    norms = sum(v.reshape(16, -1).abs().sum(1) for v in clipped.values())
    assert (norms <= mech.clip_radius + 1e-5).all()
    noisy = mech(t)
    residual = torch.cat([(noisy[k] - clipped[k]).flatten() for k in t])
    assert residual.abs().mean().item() == pytest.approx(0.5, rel=0.15)  # E|Laplace(b)| = b


def test_laplace_noise_on_cpu_is_the_generators_own_stream():
    # CPU runs must draw exactly the numbers they drew before the harness ran on GPUs
    t = {"a": torch.randn(4, 3, 2, 2)}
    mech = LaplaceMechanism(1.0, 0.5, torch.Generator().manual_seed(3))
    u = torch.rand(2, 4, 3, 2, 2, generator=torch.Generator().manual_seed(3)).clamp_min(1e-12)
    expected = mech.clip(t)["a"] + 0.5 * (torch.log(u[0]) - torch.log(u[1]))
    assert torch.equal(mech(t)["a"], expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: noise drawn on the device")
def test_laplace_and_mixing_on_cuda_follow_a_cpu_generator():
    t = {"a": torch.randn(16, 4, 3, 3, device="cuda")}
    noisy = [LaplaceMechanism(2.0, 0.5, torch.Generator().manual_seed(0))(t)["a"] for _ in range(2)]
    assert noisy[0].device.type == "cuda" and torch.equal(noisy[0], noisy[1])  # reproducible from the seed
    residual = noisy[0] - LaplaceMechanism(2.0, 0.5).clip(t)["a"]
    assert residual.abs().mean().item() == pytest.approx(0.5, rel=0.15)
    mix = Mixing(3, num_classes=4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 0, 1], device="cuda")
    mixed = mix.activations({"a": F.one_hot(y, 4).float().view(6, 4, 1, 1)})["a"]
    assert torch.allclose(mixed.view(6, 4), mix.labels({"y": y})["y"], atol=1e-6)


def test_mixing_keeps_shape_and_mixes_labels_consistently():
    mix = Mixing(3, num_classes=4, generator=torch.Generator().manual_seed(0))
    # activation = one-hot label, so a mixed activation must equal the mixed label
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    act = F.one_hot(y, 4).float().view(6, 4, 1, 1)
    mixed = mix.activations({"a": act})["a"]
    soft = mix.labels({"y": y})["y"]
    assert mixed.shape == act.shape and soft.shape == (6, 4)
    assert torch.allclose(mixed.view(6, 4), soft, atol=1e-6)
    assert torch.allclose(soft.sum(1), torch.ones(6))
    assert (mix._weights[:, 0] >= mix._weights[:, 1]).all()


def _resnet_split(cut_at=3):
    table = build_model("resnet18", num_classes=2)
    make = lambda ps: torch.optim.Adam(ps, lr=1e-3)  # noqa: E731
    return two_party(cut(table, cut_at), F.cross_entropy, make_optimizer=make)


def test_dpsgd_reports_finite_growing_epsilon():
    from medsplit.defences.dpsgd import DPSGD

    model = _resnet_split(4)
    dp = DPSGD(model, noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.05, delta=1e-5, lr=1e-3, batch_size=4)
    eps = []
    for _ in range(3):
        model.train_step(torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 0, 1]))
        eps.append(dp.epsilon())
    assert all(e > 0 and e < float("inf") for e in eps)
    assert eps[0] < eps[1] < eps[2]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for p, _ in model.chain for m in p.modules())


def test_proxy_zeroes_its_optimiser_and_returns_negated_loss():
    dec = torch.nn.Sequential(torch.nn.Conv2d(4, 1, 1), torch.nn.Sigmoid())
    proxy = ProxyAdversary(dec, lam=1.0, lr=1e-2, sent_key="a")
    x = torch.rand(4, 1, 4, 4)
    z = torch.rand(4, 4, 4, 4, requires_grad=True)
    term = proxy({"x": x}, {"a": z})
    assert term.item() < 0
    own_step = [p.grad.clone() for p in dec.parameters()]
    term.backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    # the client's term adds nothing to the proxy's gradients (frozen for it) ...
    assert all(torch.equal(p.grad, g) for p, g in zip(dec.parameters(), own_step))
    # ... and the proxy's next step starts from zeroed gradients, not accumulated ones
    proxy.optimizer.step = lambda: None
    proxy({"x": x}, {"a": z.detach()})
    fresh = [p.grad.clone() for p in dec.parameters()]
    dec.zero_grad(set_to_none=True)
    F.mse_loss(dec(z.detach()), x).backward()
    assert all(torch.allclose(p.grad, g) for p, g in zip(dec.parameters(), fresh))


def test_unknown_defence_lists_valid_ones_and_mixing_refuses_unet():
    with pytest.raises(ValueError, match="valid defences are"):
        check_defence_names(["noise"])
    from medsplit.attacks.profiles import PROFILES
    from medsplit.attacks.targets import apply_defence, build_target
    from medsplit.attacks.tasks import AttackData

    p = PROFILES["tiny"]
    model = build_target("lungs", p, 1, 1)
    data = AttackData(*(torch.rand(4, 1, 16, 16),) * 6, num_classes=1, source="x")
    with pytest.raises(DefenceNotApplicable, match="U-shaped"):
        apply_defence(model, "lungs", "mixing", 2, data, p, torch.Generator())


def test_mixing_a_batch_smaller_than_k_mixes_all_of_it():
    # the last batch of an inference pass can hold fewer samples than k (it crashed SDAR's pass)
    mix = Mixing(4, num_classes=3, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2])
    mixed = mix.activations({"a": F.one_hot(y, 3).float().view(3, 3, 1, 1)})["a"]
    assert mixed.shape == (3, 3, 1, 1) and torch.allclose(mixed.view(3, 3), mix.labels({"y": y})["y"], atol=1e-6)
    assert mix._perm.shape == (3, 3) and mix.activations({"a": torch.ones(1, 2)})["a"].shape == (1, 2)


def test_defence_registry_holds_installers_and_a_new_defence_is_one_spec(monkeypatch):
    from medsplit.attacks.profiles import PROFILES
    from medsplit.attacks.tap import crossing_key
    from medsplit.attacks.targets import apply_defence, build_target
    from medsplit.attacks.tasks import ATTACK_TASKS, AttackData
    from medsplit.defences import DEFENCES, DefenceSpec

    assert list(DEFENCES) == ["none", "dpsgd", "laplace", "mixing", "nopeek", "proxy"]  # "none", then module-name order
    assert all(isinstance(s, DefenceSpec) and callable(s.install) for s in DEFENCES.values())
    # where a defence applies is data on its spec, asked of the task
    assert "U-shaped" in DEFENCES["mixing"].applies_to(ATTACK_TASKS["lungs"])
    assert DEFENCES["mixing"].applies_to(ATTACK_TASKS["retinopathy"]) is None
    assert DEFENCES["nopeek"].applies_to(ATTACK_TASKS["lungs"]) is None
    calls = []

    def install(model, strength, setting):
        calls.append((strength, setting.part, setting.sent_key, setting.batch_size, setting.train_size))
        return {"k": strength}, "hook"

    monkeypatch.setitem(DEFENCES, "scale", DefenceSpec("scale", "a test defence", install))
    p = PROFILES["tiny"]
    model = build_target("lungs", p, 1, 1)
    data = AttackData(*(torch.rand(4, 1, 16, 16),) * 6, num_classes=1, source="x")
    assert apply_defence(model, "lungs", "scale", 3.0, data, p, torch.Generator()) == ({"k": 3.0}, "hook")
    # train_size: the client's own 4 images (the auxiliary ones are the server's: SDAR's threat model)
    assert calls == [(3.0, model.chain[0][0].name, crossing_key(model), p.batch_size, 4)]
