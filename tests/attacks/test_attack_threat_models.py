"""The attacks run under their published threat models (issue 27): the target never trains on
the server's auxiliary images (SDAR), SDAR learns from the traffic the tap captured in the last
training steps, FSHA is scored without moving the client's BatchNorm statistics, and every
reconstruction row carries the trivial baselines."""

from dataclasses import replace

import pytest
import torch
from torch import nn

from medsplit.attacks.profiles import PROFILES
from medsplit.attacks.quality import reconstruction_quality, trivial_baselines
from medsplit.attacks.targets import train_defended_target
from medsplit.attacks.tasks import AttackData

torch.set_num_threads(1)

TINY = PROFILES["tiny"]


def _data(n: int = 16) -> AttackData:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3 * n, 1, 16, 16, generator=g)
    y = (x[:, :1] > 0.5).long()
    return AttackData(x[:n], y[:n], x[n:2 * n], y[n:2 * n], x[2 * n:], y[2 * n:], 1, "test")


def test_the_target_never_trains_on_the_auxiliary_images_and_sdar_gets_the_last_steps_traffic(monkeypatch):
    from medsplit.split.split_model import SplitModel

    data = _data()
    seen = []
    step = SplitModel.train_step
    monkeypatch.setattr(SplitModel, "train_step", lambda self, x, y, step_=True: seen.append(x) or step(self, x, y))
    profile = replace(TINY, target_steps=6, batch_size=4)
    target = train_defended_target("lungs", "none", 0, 0, data, profile)
    trained_on = torch.cat(seen)
    aux = data.x_aux.reshape(data.x_aux.shape[0], -1)
    # no auxiliary image in any training batch: each training row is one of the client's own
    assert torch.cdist(trained_on.reshape(trained_on.shape[0], -1), aux).min() > 0
    # the traffic window: the last ceil(16 / 4) = 4 steps of 4 images (the detector's probes add rows)
    assert target.seen.shape[0] >= 4 * 4 and target.seen.shape[0] < 6 * 4 * 3
    # it is what crossed during training (training-mode rows of the last batches), not a fresh eval pass
    from medsplit.attacks.tap import crossing_key

    first = target.model.chain[0][0]
    with torch.no_grad():
        first.eval()
        fresh = first({"x": seen[-1]})[crossing_key(target.model)]
    assert target.seen.shape[1:] == fresh.shape[1:]
    assert not torch.allclose(target.seen[-seen[-1].shape[0]:], fresh, atol=1e-4)


def test_fsha_scores_in_eval_mode_and_leaves_the_running_statistics_alone():
    from medsplit.attacks.fsha import FSHAConfig, FSHAServer
    from medsplit.attacks.fsha_protocol import HijackedSplitModel
    from medsplit.attacks.tap import crossing_key
    from medsplit.attacks.targets import build_target

    torch.manual_seed(0)
    model = build_target("lungs", TINY, 1, 1)
    key = crossing_key(model)
    shape = tuple(model.chain[0][0]({"x": torch.rand(2, 1, 16, 16)})[key].shape[1:])
    hijacked = HijackedSplitModel(model, FSHAServer(1, 16, shape, FSHAConfig(width=8), nonnegative=True), key)
    norms = [m for m in model.chain[0][0].modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms
    before = [m.running_mean.clone() for m in norms]
    hijacked.train()
    x = torch.rand(8, 1, 16, 16)
    a = hijacked.sent_features(x)
    b = torch.cat([hijacked.sent_features(x[:4]), hijacked.sent_features(x[4:])])
    assert all(torch.equal(m.running_mean, r) for m, r in zip(norms, before))  # running statistics untouched
    assert torch.allclose(a, b, atol=1e-6)  # each image's features are its own (no batch statistics)
    assert model.chain[0][0].training  # the client goes on training afterwards


def test_trivial_baselines_are_the_mean_and_the_nearest_auxiliary_image():
    g = torch.Generator().manual_seed(0)
    aux = torch.rand(10, 1, 16, 16, generator=g)
    victims = aux[[3, 7]] * 0.9 + 0.05  # close to two auxiliary images
    b = trivial_baselines(aux, victims)
    assert b["baseline_nearest_mse"] == pytest.approx(reconstruction_quality(aux[[3, 7]], victims)["mse"])
    assert b["baseline_mse"] == pytest.approx(reconstruction_quality(aux.mean(0, keepdim=True).expand(2, -1, -1, -1),
                                                                     victims)["mse"])
    assert b["baseline_nearest_mse"] < b["baseline_mse"]


@pytest.mark.slow  # the tiny harness on the real lung images: about a minute on two cores
def test_every_reconstruction_row_and_the_report_carry_the_baselines(shared_data, tmp_path):
    import json

    from medsplit.attacks.harness import evaluate
    from medsplit.report.attack_report import write_attack_report

    res = evaluate("lungs", TINY, shared_data, ["inversion", "sdar", "fsha"], ["none", "dpsgd"], log=lambda *a: None)
    rows = [r for r in res["rows"] if "mse" in r]
    assert {r["attack"] for r in rows} == {"inversion", "sdar", "fsha"}
    for r in rows:
        assert r["baseline_nearest_mse"] <= r["baseline_mse"] + 1e-9
        assert r["baseline_nearest_mse"] == res["trivial_baselines"][r["seed"]]["baseline_nearest_mse"]
    dp = [r for r in rows if r["defence"] == "dpsgd"]
    assert dp and all(0 < r["privacy.epsilon"] <= r["privacy.epsilon_patient"] for r in dp)
    html = write_attack_report(res, tmp_path)
    record = json.loads(html.with_suffix(".json").read_text())
    assert record["trivial_baselines"]
    text = html.read_text()
    assert "nearest-aux MSE" in text and "does NOT cover the activations" in text
    assert "not cryptographically secure" in text and "best logged point" not in text.replace(
        "not its best logged point", "")
