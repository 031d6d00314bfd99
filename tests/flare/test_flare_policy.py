"""Site policy: a hospital reads its requirements from its own files and refuses a job that does
not meet them; under FSHA its hijack detector fires and the hospital stops sending activations.
(No FLARE needed: the policy is plain YAML checked by the hospital's own code.)"""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from medsplit.attacks.fsha import FSHAConfig
from medsplit.attacks.fsha_protocol import HijackedSplitModel, run_fsha_protocol
from medsplit.flare.hospital_guard import HijackAbort, HospitalGuard
from medsplit.flare.job_defences import JobDefences, PolicyError
from medsplit.flare.policy import POLICY_FILE, PolicyRefused, load_policy, policy_for_site
from medsplit.models import build_model
from medsplit.split import Channel, cut, two_party

torch.set_num_threads(1)


def _write_policy(root: Path, text: str) -> Path:
    path = root / POLICY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_job_without_detector_is_refused_by_a_hospital_that_requires_it(tmp_path):
    path = _write_policy(tmp_path / "hospital-a", "site: hospital-a\nrequire:\n  hijack_detector: abort\n  laplace_min_scale: 0.5\n")
    policy = policy_for_site(tmp_path / "hospital-a", "hospital-a")
    with pytest.raises(PolicyRefused) as e:
        policy.enforce(JobDefences(laplace_scale=1.0), job_name="job retino")
    msg = str(e.value)
    assert "hospital-a refuses job retino" in msg and str(path) in msg
    assert "require.hijack_detector=abort" in msg and "without the hijack detector" in msg
    # a detector that only warns does not meet `abort`; too little noise is named with its value
    with pytest.raises(PolicyRefused, match=r"on_alarm='warn'.*laplace_min_scale=0.5: the job has Laplace scale b=0.1"):
        policy.enforce(JobDefences(hijack_detector=True, on_alarm="warn", laplace_scale=0.1))
    policy.enforce(JobDefences(hijack_detector=True, on_alarm="abort", laplace_scale=0.5))  # meets it: no error
    # a hospital without a policy file has no requirements (and says so by returning None)
    assert policy_for_site(tmp_path / "hospital-b", "hospital-b") is None


def test_nopeek_requirement_and_policy_file_errors_name_file_and_key(tmp_path):
    path = _write_policy(tmp_path, "site: hospital-a\nrequire:\n  nopeek_min_alpha: 0.2\n")
    with pytest.raises(PolicyRefused, match="nopeek_min_alpha=0.2: the job has no NoPeek"):
        load_policy(path).enforce(JobDefences())
    with pytest.raises(PolicyError, match="belongs to site 'hospital-a', but site 'hospital-b'"):
        load_policy(path, site="hospital-b")
    _write_policy(tmp_path, "site: hospital-a\nrequire:\n  laplace_scale: 0.5\n")
    with pytest.raises(PolicyError, match=r"medsplit_policy.yaml: unknown key require.laplace_scale"):
        load_policy(path)
    _write_policy(tmp_path, "site: hospital-a\nrequire:\n  hijack_detector: sometimes\n")
    with pytest.raises(PolicyError, match="require.hijack_detector='sometimes'"):
        load_policy(path)
    with pytest.raises(PolicyError, match="unknown key 'detector'"):
        JobDefences.from_dict({"detector": True})


def _hijacked(site: str, x: torch.Tensor, x_aux: torch.Tensor) -> tuple[HijackedSplitModel, FSHAConfig]:
    """The hospital's two-party U-Net split with an FSHA server."""
    config = FSHAConfig(batch_size=8, lr_client=1e-4, lr_pilot=1e-3, lr_decoder=1e-3, width=8, iterations=60, log_every=60)
    table = build_model("unet-classic", num_classes=1, in_channels=1, base_channels=4)
    model = two_party(cut(table, 1), lambda o, y: F.binary_cross_entropy_with_logits(o, y.float()), Channel(),
                      lambda ps: torch.optim.Adam(ps, lr=config.lr_client), client_name=site)
    return HijackedSplitModel.against(model, x, x_aux, config), config


def test_under_fsha_the_detector_fires_and_the_hospital_stops_sending_activations():
    from types import SimpleNamespace

    from medsplit.flare.site_run import install_guard

    g = torch.Generator().manual_seed(0)
    x = F.interpolate(torch.rand(40, 1, 4, 4, generator=g), size=(16, 16), mode="bilinear", align_corners=False)
    y = (x > 0.5).long()
    model, config = _hijacked("hospital-a", x[:24], x[24:32])
    guard = HospitalGuard.build("hospital-a", JobDefences(hijack_detector=True, on_alarm="abort", probe_every=3))
    guard.detector.min_probes = 3
    install_guard(SimpleNamespace(models=[model]), "hospital-a", guard)  # as the hospital's FLARE site does
    channel = model.channel
    sent_steps = []  # the training step of every activation the hospital sent (the server's replies aside)
    channel.tap(lambda t: sent_steps.append(t.step)
                if t.kind == "activation" and t.phase == "train" and t.sender == "hospital-a" else None)
    with pytest.raises(HijackAbort, match=r"site hospital-a: the hijack detector raised the alarm at step \d+"):
        run_fsha_protocol(model, x[:24], y[:24], x[24:32], x[32:], config, detector=guard.detector, num_classes=1,
                          generator=torch.Generator().manual_seed(0))
    alarm = guard.detector.flagged_at
    assert alarm is not None and alarm < config.iterations  # fired before the attack ran its course
    # channel.step counts completed training steps; a probe is two rounds without a step, at the
    # step it precedes. The alarm's probe completed and then the step at the alarm was refused:
    # its activation never reached the channel (nothing crossed after the probe's two rounds)
    assert channel.step == alarm - 1
    assert max(sent_steps) == channel.step and sent_steps.count(channel.step) == 2
    # one activation per completed step and two per probe, none for the refused step
    assert len(sent_steps) == channel.step + 2 * len(guard.detector.scores)
    # the refusal is sticky: any further send is refused too
    with pytest.raises(HijackAbort):
        guard.send_transform({"enc1": torch.zeros(1)})


def test_guard_adds_the_jobs_laplace_noise_and_nopeek():
    guard = HospitalGuard.build("hospital-a", JobDefences(laplace_scale=0.5, nopeek_alpha=0.3), seed=1)
    z = {"a": torch.ones(4, 8)}
    noisy = guard.send_transform(z)
    assert not torch.equal(noisy["a"], z["a"]) and noisy["a"].shape == z["a"].shape
    reg = guard.regularizer()
    assert reg is not None and reg.alpha == 0.3
    assert HospitalGuard.build("h", JobDefences()).regularizer() is None


def test_install_guard_noises_what_the_hospital_sends_and_only_that():
    from medsplit.flare.site_run import install_guard
    from medsplit.train.protocols import PROTOCOLS

    torch.manual_seed(0)
    table = build_model("resnet18", num_classes=2)
    channel = Channel()
    protocol = PROTOCOLS["sequential"](table, 2, 2, lambda ps: torch.optim.Adam(ps, lr=1e-3), F.cross_entropy, channel)
    guard = HospitalGuard.build("hospital-a", JobDefences(laplace_scale=0.5, nopeek_alpha=0.1), seed=0)
    install_guard(protocol, "client0", guard)
    own, other = protocol.models[0], protocol.models[1]
    sending = own.chain[0][0].name
    assert own.send_transforms == {sending: guard.send_transform} and sending in own.regularizers
    assert other.send_transforms == {} and other.regularizers == {}  # hospital-b's model is not hospital-a's to change
    seen = []
    channel.tap(lambda t: seen.append(t.tensors) if t.kind == "activation" else None)
    x = torch.rand(4, 3, 32, 32)
    clean = own.chain[0][0]({"x": x})
    own.train_step(x, torch.tensor([0, 1, 0, 1]))
    (name,) = seen[0]
    # what crossed is the clipped, noised activation, not what the part computed
    assert not torch.allclose(seen[0][name], clean[name].detach(), atol=1e-3)


def test_policy_names_stay_importable_from_policy_and_flare_modules_stay_small():
    """policy.py was split by concept (site policy / job defences / hospital guard): the names the
    sites import from medsplit.flare.policy are the same objects, and no FLARE module is over 400 lines."""
    import medsplit.flare as flare
    import medsplit.flare.policy as policy
    from medsplit.flare import hospital_guard, job_defences

    for name in ("JobDefences", "PolicyError", "laplace_epsilons"):
        assert getattr(policy, name) is getattr(job_defences, name)
    for name in ("HospitalGuard", "HijackAbort"):
        assert getattr(policy, name) is getattr(hospital_guard, name)
    too_long = {p.name: n for p in Path(flare.__file__).parent.glob("*.py")
                if (n := len(p.read_text().splitlines())) > 400}
    assert not too_long, f"modules over 400 lines: {too_long}"
