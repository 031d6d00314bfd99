"""Attacks: FSHA returns the adversarial gradient (not the task's) through the channel, model
inversion beats the mean image, label leakage, the hijack detector, names, the tiny report."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from medsplit.attacks import check_attack_names, resolve_attack_names
from medsplit.attacks.fsha import FSHAConfig, FSHAServer, evaluate
from medsplit.attacks.fsha_protocol import HijackedSplitModel, run_fsha_protocol
from medsplit.attacks.inversion import InversionConfig, run_inversion
from medsplit.attacks.label_leakage import label_private_parts, leakage_scores
from medsplit.attacks.tap import Recorder, gradient_to_first_part, observed_activations
from medsplit.defences import HijackDetector
from medsplit.models import build_model
from medsplit.split import cut, two_party
from medsplit.split.channel import NonFiniteError
from medsplit.train.device import device_label

torch.set_num_threads(1)
DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def _split(table, cut_at, loss, channel=None, lr=1e-3):
    make = lambda ps: torch.optim.Adam(ps, lr=lr)  # noqa: E731
    return two_party(cut(table, cut_at), loss, channel, make)


def _images(n=48, size=16, seed=0):
    """Smooth random images in [0, 1] (blurred noise: structure a decoder can learn)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size // 4, size // 4, generator=g)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def _hijacked(size=16, cut_at=1, **cfg):
    """An honest two-party U-Net split, and the same split (shared parts, channel, hooks) with an FSHA server."""
    table = build_model("unet-classic", num_classes=1, in_channels=1, base_channels=4)
    config = FSHAConfig(batch_size=8, lr_client=1e-4, lr_pilot=1e-3, lr_decoder=1e-3, width=8, **cfg)
    model = _split(table, cut_at, lambda o, y: F.binary_cross_entropy_with_logits(o, y.float()), lr=config.lr_client)
    hijacked = HijackedSplitModel.against(model, torch.rand(2, 1, size, size), _images(4, size, seed=9), config)
    assert hijacked.sent_key == f"enc{cut_at}"
    return model, hijacked, config


def test_fsha_returns_adversarial_not_task_gradient():
    model, hijacked, _ = _hijacked()
    first = hijacked.chain[0][0]
    params = list(first.parameters())
    x = _images(8)
    masks = (x > 0.5).long()
    # the adversarial gradient -d mean D(z) / dz, computed before the server's own update
    z = first({"x": x})["enc1"]
    expected = hijacked.fsha.client_gradient(z.detach())
    with Recorder(hijacked.channel, "gradient", receiver="client0", link_prefix="server_encoder->") as rec:
        received = gradient_to_first_part(hijacked, x, masks)
    assert len(rec.transfers) == 1 and torch.equal(rec.transfers[-1].tensors["enc1"], received)
    assert torch.allclose(received, expected, atol=1e-7)
    hijacked_grads = [p.grad.clone() for p in params]
    # the honest server's gradient for the same client, images and masks
    with Recorder(model.channel, "gradient", receiver="client0", link_prefix="server_encoder->") as rec:
        for party in model.parties:
            party.zero_grad()
        model.forward_backward(x, masks)
    honest = rec.transfers[-1].tensors["enc1"]
    cos = F.cosine_similarity(received.flatten(), honest.flatten(), dim=0)
    assert abs(float(cos)) < 0.5
    # what crossed is what the client used: its encoder's gradients differ from the honest round's
    # by exactly the backward of (hijacked - honest) through it (the skip-path gradient is the same)
    honest_grads = [p.grad.clone() for p in params]
    by_hand = torch.autograd.grad(z, params, grad_outputs=received - honest)
    for h, o, d in zip(hijacked_grads, honest_grads, by_hand):
        assert torch.allclose(h - o, d, atol=1e-5, rtol=1e-4)


def test_fsha_logs_quality_and_feature_space_moves_to_pilot():
    _, hijacked, cfg = _hijacked(iterations=60, log_every=30)
    x = _images(40)
    y = (x > 0.5).long()
    result = run_fsha_protocol(hijacked, x[:24], y[:24], x[24:36], x[36:], cfg, generator=torch.Generator().manual_seed(0))
    assert [h["iteration"] for h in result.history] == [0, 30, 60]
    assert all(0 <= h["mse"] < 1 for h in result.history)
    assert result.reconstructions.shape == x[36:].shape
    # the server's diagnostics: its autoencoder learns on the auxiliary images (the ceiling rises)
    assert {"pilot_mse", "pilot_ssim", "critic_gap"} <= set(result.history[0])
    assert result.history[-1]["pilot_mse"] < result.history[0]["pilot_mse"]


def test_fsha_ceiling_is_the_attack_when_the_client_sends_the_pilots_features():
    _, hijacked, _ = _hijacked()
    x = _images(12)
    server = hijacked.fsha
    with torch.no_grad():
        z = server.pilot(x)
    quality = evaluate(server, z, x)
    assert quality["mse"] == pytest.approx(quality["pilot_mse"]) and quality["ssim"] == pytest.approx(quality["pilot_ssim"])
    assert quality["critic_gap"] == pytest.approx(0.0, abs=1e-6)
    assert evaluate(server, torch.zeros_like(z), x)["critic_gap"] != pytest.approx(0.0, abs=1e-6)


def test_fsha_stops_on_non_finite_activation_naming_party_and_step():
    _, hijacked, cfg = _hijacked(iterations=3, log_every=3)
    # a client-side send transform, installed as every defence is: on the split model's hook
    hijacked.send_transforms[hijacked.chain[0][0].name] = lambda t: {k: v * float("nan") for k, v in t.items()}
    x = _images(24)
    with pytest.raises(NonFiniteError, match=r"client0 .* step 0"):
        run_fsha_protocol(hijacked, x[:8], (x[:8] > 0.5).long(), x[8:16], x[16:], cfg)


def test_detector_flags_fsha_and_not_honest_training():
    _, hijacked, cfg = _hijacked(iterations=30, log_every=30)
    x = _images(40)
    y = (x > 0.5).long()
    det = HijackDetector(probe_every=3, min_probes=3)
    run_fsha_protocol(hijacked, x[:24], y[:24], x[24:32], x[32:], cfg, detector=det, num_classes=1,
                      generator=torch.Generator().manual_seed(0))
    assert det.summary()["flagged"]

    from dataclasses import replace

    from medsplit.attacks.profiles import PROFILES
    from medsplit.attacks.targets import build_target, train_target
    from medsplit.attacks.tasks import AttackData

    profile = replace(PROFILES["tiny"], target_steps=12)  # 4 probes: enough for the alarm to be possible
    data = AttackData(x[:24], y[:24], x[24:32], y[24:32], x[32:], y[32:], 1, "test")
    honest = HijackDetector(probe_every=3, min_probes=3)
    model = build_target("lungs", profile, 1, 1)
    train_target(model, data, profile, torch.Generator().manual_seed(0), honest)
    assert len(honest.scores) >= honest.min_probes and not honest.summary()["flagged"], honest.scores


def test_model_inversion_beats_mean_image():
    table = build_model("unet-classic", num_classes=1, in_channels=1, base_channels=4)
    model = _split(table, 1, lambda o, y: F.binary_cross_entropy_with_logits(o, y.float()))
    x = _images(72, size=16)
    aux, victims = x[:56], x[56:]
    res = run_inversion(aux, observed_activations(model, aux), victims, observed_activations(model, victims),
                        InversionConfig(steps=150, batch_size=16, width=8, lr=3e-3, log_every=75),
                        torch.Generator().manual_seed(0))
    assert res.final["mse"] < res.baseline["mse"]
    # The attacker standardises what it sees: shrinking the activations (as the Laplace clip
    # does) must not hide them; before, 1e-5 x the activations left the decoder untrained.
    small = run_inversion(aux, 1e-5 * observed_activations(model, aux), victims,
                          1e-5 * observed_activations(model, victims),
                          InversionConfig(steps=150, batch_size=16, width=8, lr=3e-3, log_every=75),
                          torch.Generator().manual_seed(0))
    assert small.final["mse"] < res.baseline["mse"] and small.final["mse"] == pytest.approx(res.final["mse"], rel=0.15)


@pytest.mark.slow
def test_label_leakage_norm_attack_on_imbalanced_labels():
    table = build_model("resnet18", num_classes=2, in_channels=3)
    parts = label_private_parts(table, 3)
    assert [p.name for p in parts] == ["client", "server", "client_head"]
    make = lambda ps: torch.optim.Adam(ps, lr=1e-3)  # noqa: E731
    model = two_party(parts, F.cross_entropy, make_optimizer=make)
    g = torch.Generator().manual_seed(0)
    grads, labels = [], []
    with Recorder(model.channel, "gradient", receiver="server") as rec:
        for _ in range(8):
            x = torch.rand(16, 3, 32, 32, generator=g)
            y = (torch.rand(16, generator=g) < 0.15).long()
            y[0] = 1  # every batch holds one positive (the cosine attack's known example)
            model.train_step(x, y)
            grads.append(rec.transfers[-1].tensors["pool"])
            labels.append(y)
    scores = leakage_scores(grads, labels, positive=1)
    assert scores["norm_auc"] > 0.9
    assert scores["cosine_auc"] > 0.5


def test_unknown_attack_lists_valid_ones_and_adra_is_the_inversion():
    with pytest.raises(ValueError, match=r"valid attacks are \['fsha', 'inversion', 'label-leakage', 'sdar'\].*adra"):
        check_attack_names(["fhsa"])
    assert resolve_attack_names(["adra", "sdar", "inversion"]) == ["inversion", "sdar"]
    with pytest.raises(ValueError, match="valid attacks"):
        resolve_attack_names(["adr"])


@pytest.mark.slow
def test_tiny_profile_writes_report_and_json(tmp_path):
    if not (DATA / "lungs" / "covid-cxr-v7").exists():
        pytest.skip("real lung data not found")
    from medsplit.cli import main

    rc = main(["attack", "--profile", "tiny", "--task", "lungs", "--out", str(tmp_path), "--data-root", str(DATA),
               "--defences", "none,nopeek,laplace,proxy"])
    assert rc == 0
    html = tmp_path / "attack-lungs-tiny.html"
    record = json.loads(html.with_suffix(".json").read_text())
    assert html.exists() and "Threat models" in html.read_text()
    assert "Split: the lung U-Net cut U-shaped" in html.read_text()  # the task states its own split
    assert "pilot ceiling" in html.read_text()  # FSHA's curves beside the attacker's own autoencoder
    assert record["kind"] == "attack" and "inversion SSIM (no defence)" in record["headline"]
    inversion = {r["defence"]: r for r in record["rows"] if r["attack"] == "inversion"}
    assert set(inversion) == {"none", "nopeek", "laplace", "proxy"}
    assert inversion["proxy"]["privacy.proxy_mse"] > 0  # the proxy's own score, beside the fresh attacker's
    text = html.read_text()
    assert "What each privacy number covers" in text and "in the clear" in text  # the Laplace scope, per run
    assert "ADRA (model inversion)" in text and "SDAR" in text
    assert {r["defence"] for r in record["rows"] if r["attack"] == "sdar"} == set(inversion)  # every defence
    assert inversion["laplace"]["privacy.epsilon_per_training_batch"] == pytest.approx(
        8 * inversion["laplace"]["privacy.epsilon_per_release_inference"])  # tiny: batch 8
    assert any(s["attack"] == "label-leakage" for s in record["skipped"])
    assert record["device"] == device_label(torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def _numbers(rows: list[dict]) -> list[dict]:
    """Rows without wall-clock times (the only entries that may differ between identical runs)."""
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]


@pytest.mark.slow
def test_evaluate_on_explicit_cpu_equals_default(shared_data):
    from medsplit.attacks.harness import evaluate
    from medsplit.attacks.profiles import PROFILES

    args = ("lungs", PROFILES["tiny"], shared_data, ["inversion", "fsha"], ["none", "laplace"])
    default = evaluate(*args, log=lambda *a: None)
    cpu = evaluate(*args, log=lambda *a: None, device=torch.device("cpu"))
    assert _numbers(cpu["rows"]) == _numbers(default["rows"]) and len(cpu["rows"]) == 3
    for key, extra in cpu["extras"].items():
        assert torch.equal(extra["recon"], default["extras"][key]["recon"]), key
    assert cpu["device"] == default["device"] == device_label(torch.device("cpu"))


def test_device_flag_resolution_and_cuda_without_gpu_names_the_flag(monkeypatch, capsys):
    from medsplit.attacks.profiles import default_profile, resolve_device
    from medsplit.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda" and default_profile(resolve_device("auto")) == "full"
    assert resolve_device("cpu").type == "cpu" and default_profile(resolve_device("cpu")) == "reduced"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(RuntimeError, match="--device cuda .* no CUDA GPU"):
        resolve_device("cuda")
    assert main(["attack", "--device", "cuda", "--profile", "tiny", "--data-root", "/nonexistent"]) == 2
    assert "--device cuda" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: runs the tiny profile on cuda")
def test_tiny_profile_on_cuda_is_finite_and_returns_cpu_tensors(shared_data):
    import math

    from medsplit.attacks.harness import evaluate
    from medsplit.attacks.profiles import PROFILES

    cuda = torch.device("cuda")
    # lungs: every defence but mixing, and FSHA; retinopathy: mixing and label leakage
    runs = [evaluate("lungs", PROFILES["tiny"], shared_data, ["inversion", "fsha"], None, log=lambda *a: None, device=cuda),
            evaluate("retinopathy", PROFILES["tiny"], shared_data, ["inversion", "label-leakage"], ["none", "mixing"],
                     log=lambda *a: None, device=cuda)]
    for res in runs:
        assert res["rows"] and res["device"] == device_label(cuda)
        for row in res["rows"]:
            numbers = {k: v for k, v in row.items() if isinstance(v, float)}
            assert all(math.isfinite(v) for v in numbers.values()), row
        assert res["originals"].device.type == "cpu"
        assert all(e["recon"].device.type == "cpu" for e in res["extras"].values())
    defences = {(r["attack"], r["defence"]) for res in runs for r in res["rows"]}
    assert {("inversion", d) for d in ("none", "nopeek", "laplace", "proxy", "dpsgd", "mixing")} <= defences
    assert {("fsha", "none"), ("fsha", "nopeek"), ("label-leakage", "none")} <= defences


def test_profile_overrides_change_one_field_rename_the_report_and_name_bad_keys(capsys):
    from medsplit.attacks.profiles import PROFILES, customise
    from medsplit.cli import main
    from medsplit.config import ConfigError

    tiny = PROFILES["tiny"]
    custom = customise(tiny, ["fsha.iterations=30", "img_size=24", "strengths.nopeek=[0.5, 3]"])
    assert (custom.fsha.iterations, custom.img_size, custom.strengths["nopeek"]) == (30, 24, [0.5, 3])
    assert custom.name == "tiny-custom" and custom.fsha.gp_weight == tiny.fsha.gp_weight
    assert tiny.fsha.iterations == 12 and tiny.name == "tiny"  # the stock profile is untouched
    assert customise(tiny, ["name=long-fsha", "fsha.iterations=40"]).name == "long-fsha"
    with pytest.raises(ConfigError, match="fsha.iters"):
        customise(tiny, ["fsha.iters=30"])
    with pytest.raises(ConfigError, match="'fsha.iterations' must be int"):
        customise(tiny, ["fsha.iterations=many"])
    with pytest.raises(ConfigError, match="img_size: must be >= 16"):
        customise(tiny, ["img_size=8"])
    assert main(["attack", "--profile", "tiny", "--set", "cut_lung=2", "--data-root", "/nonexistent"]) == 2
    assert "cut_lungs" in capsys.readouterr().err  # the error lists the fields


def test_fundus_validator_score_is_balanced_so_a_constant_answer_scores_one_half():
    from medsplit.attacks.targets import validator_score

    always_healthy = lambda images: torch.tensor([[5.0, -5.0]]).repeat(images.shape[0], 1)  # noqa: E731
    y = torch.tensor([0] * 8 + [1] * 2)  # 80 % non-referable: plain accuracy would be 0.8
    assert validator_score(always_healthy, "retinopathy", torch.zeros(10, 3, 8, 8), y) == pytest.approx(0.5)
    perfect = lambda images: F.one_hot(y, 2).float()  # noqa: E731
    assert validator_score(perfect, "retinopathy", torch.zeros(10, 3, 8, 8), y) == pytest.approx(1.0)


@pytest.mark.slow
def test_sdar_beats_the_mean_image_on_the_tiny_profile(shared_data):
    """SDAR (passive, no colluder) at the tiny profile's scale (16 px lungs, tiny networks), with
    the target trained long enough for its server part to read features (60 steps). Under the
    published threat model (the target never trains on the auxiliary images; SDAR sees only the
    traffic of the last training steps) it needs 300 attacker steps: at 150 it ended at SSIM 0.472
    against the mean image's 0.534, at 300 at 0.539 (MSE 0.0168 against 0.0231). It does not reach
    the nearest auxiliary image (MSE 0.0128) at this scale."""
    from dataclasses import replace

    from medsplit.attacks.harness import evaluate
    from medsplit.attacks.profiles import PROFILES
    from medsplit.attacks.sdar import SDARConfig

    profile = replace(PROFILES["tiny"], target_steps=60, sdar=SDARConfig(steps=300, batch_size=8, lr=1e-3, width=8,
                                                                          log_every=150))
    res = evaluate("lungs", profile, shared_data, ["sdar"], ["none"], log=lambda *a: None)
    (row,) = res["rows"]
    assert row["attack"] == "sdar" and row["ssim"] > row["baseline_ssim"] and row["mse"] < row["baseline_mse"], row
    assert row["mask_dice"] > row["mask_dice_baseline"], row  # the masks it infers never crossed the channel


def test_attack_registry_specs_say_how_and_against_what_each_attack_runs():
    from medsplit.attacks import ATTACKS, AttackSpec
    from medsplit.attacks.profiles import PROFILES
    from medsplit.attacks.registry import OWN, SHARED, UNDEFENDED
    from medsplit.attacks.tasks import ATTACK_TASKS

    assert list(ATTACKS) == ["fsha", "inversion", "label-leakage", "sdar"]  # --attacks' default order
    assert all(isinstance(s, AttackSpec) and callable(s.run) for s in ATTACKS.values())
    assert [ATTACKS[a].target for a in ATTACKS] == [OWN, SHARED, UNDEFENDED, SHARED]
    reduced = PROFILES["reduced"]
    assert ATTACKS["fsha"].strengths(reduced) == reduced.fsha_defences  # --set fsha_defences=... still decides
    assert ATTACKS["sdar"].runs_at(reduced, "mixing", 4) and not ATTACKS["sdar"].runs_at(reduced, "mixing", 2)
    assert ATTACKS["inversion"].runs_at(reduced, "mixing", 2)
    assert "pixel masks" in ATTACKS["label-leakage"].applies_to(ATTACK_TASKS["lungs"])
    assert ATTACKS["label-leakage"].applies_to(ATTACK_TASKS["retinopathy"]) is None
    with pytest.raises(ValueError, match="target must be one of"):
        AttackSpec("x", "", "X", "sometimes", lambda ctx: {})


def test_cli_refuses_a_defence_the_task_cannot_take_before_loading_data(capsys):
    from medsplit.cli import main

    assert main(["attack", "--profile", "tiny", "--task", "lungs", "--defences", "none,mixing",
                 "--data-root", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "--task lungs --defences mixing" in err and "U-shaped" in err  # the spec's reason, not a data error


def test_a_batch_norm_pilot_sends_the_per_channel_scale_a_batch_norm_client_block_is_pinned_to():
    x = _images(16)
    free = FSHAServer(1, 16, (4, 8, 8), FSHAConfig(width=8, pilot_batch_norm=False)).pilot(x)
    pinned = FSHAServer(1, 16, (4, 8, 8), FSHAConfig(width=8)).pilot(x)  # the default: the matched pilot
    channels = pinned.transpose(0, 1).reshape(4, -1)
    assert torch.allclose(channels.mean(1), torch.zeros(4), atol=1e-5)
    assert torch.allclose(channels.std(1), torch.ones(4), atol=0.1)  # BatchNorm's eps shaves a tiny variance
    # a free pilot starts two orders of magnitude below that scale
    assert (free.transpose(0, 1).reshape(4, -1).std(1) < 0.1).all()
