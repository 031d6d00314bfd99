"""Hostile peers and hostile job authors on FLARE (issue 30, findings 7 and 9): a site's policy
bounds the guarantees a job actually gets (a job that meets it on paper only is refused); who
sent a message is FLARE's authenticated caller; the inbox is bounded. Provisioning and the
guard each site installs: test_flare_site_guard.py. Tests that need nvflare skip without it."""

import json
import sys
from pathlib import Path

import pytest
import torch

from medsplit.flare.job_defences import JobDefences, PolicyError
from medsplit.flare.policy import PolicyRefused, load_policy
from flare_jobs import ON_PAPER_ONLY, POLICY, SITES, policy_file, tiny_job_config

torch.set_num_threads(1)


# ---- finding 7: the policy bounds the effective guarantees ----------------------------------

def test_policy_refuses_a_job_that_meets_it_on_paper_only(tmp_path):
    policy = load_policy(policy_file(tmp_path), "hospital-a")
    with pytest.raises(PolicyRefused) as e:
        policy.enforce(JobDefences(**ON_PAPER_ONLY), job_name="job red-team", batch_size=16)
    msg = str(e.value)
    assert "site hospital-a refuses job red-team" in msg and "policy-a.yaml" in msg
    # each loophole is named by the job field and the policy bound it breaks
    assert "require.detector_max_probe_every=20: the job's probe_every=1000000000" in msg
    assert "require.detector_threshold_range=[0.01, 1.0]: the job's detector_threshold=-1e+09 is outside it" in msg
    assert ("require.laplace_max_epsilon=2 (per inference release, C/b): the job's laplace_sensitivity=1e+09 and "
            "laplace_scale=0.5 give epsilon C/b=2e+09 per inference release") in msg
    # an honest job with the same knobs passes; the bounds can be set in the file
    policy.enforce(JobDefences(hijack_detector=True, probe_every=10, laplace_scale=0.5), batch_size=16)
    strict = load_policy(policy_file(tmp_path, POLICY + "  laplace_max_epsilon_per_training_batch: 8\n"
                                      "  detector_max_probe_every: 5\n"), "hospital-a")
    with pytest.raises(PolicyRefused, match=r"detector_max_probe_every=5: the job's probe_every=10.*"
                                            r"laplace_max_epsilon_per_training_batch=8 \(B\*C/b\): the job's "
                                            r"train.batch_size=16.*B\*C/b=32 per training batch"):
        strict.enforce(JobDefences(hijack_detector=True, probe_every=10, laplace_scale=0.5), batch_size=16)


def test_non_finite_or_fractional_job_numbers_are_refused_by_name():
    # NaN compares false with every bound: it must never reach the comparison
    with pytest.raises(PolicyError, match="detector_threshold=nan must be a finite number"):
        JobDefences(hijack_detector=True, detector_threshold=float("nan"))
    with pytest.raises(PolicyError, match="laplace_sensitivity=inf must be a finite number"):
        JobDefences(laplace_scale=0.5, laplace_sensitivity=float("inf"))
    with pytest.raises(PolicyError, match="probe_every=2.5 must be a whole number"):
        JobDefences(probe_every=2.5)


def test_laplace_epsilons_say_what_each_covers():
    from medsplit.flare.job_defences import laplace_epsilons

    eps = laplace_epsilons(1.0, 0.5, batch_size=16, training_batches=10)
    assert eps["epsilon_per_inference_release"] == 2.0  # C/b
    assert eps["epsilon_per_training_batch"] == 32.0  # B*C/b
    assert eps["epsilon_whole_training"] == 320.0  # T*B*C/b
    # a hospital counts T as the releases it makes under autograd (training batches, probes),
    # not the evaluation releases (no_grad)
    from medsplit.flare.hospital_guard import HospitalGuard

    guard = HospitalGuard.build("hospital-a", JobDefences(laplace_scale=0.5, laplace_sensitivity=1.0))
    z = {"a": torch.ones(4, 8, requires_grad=True)}
    guard.send_transform(z)
    guard.send_transform(z)
    with torch.no_grad():
        guard.send_transform(z)
    assert guard.laplace_summary(batch_size=4) == laplace_epsilons(1.0, 0.5, 4, training_batches=2)
    assert guard.laplace_summary(batch_size=4)["epsilon_whole_training"] == 2 * 4 * 2.0
    import medsplit.flare.job_defences as defences_module

    doc = defences_module.__doc__
    assert "epsilon per release = C/b" not in doc
    assert "``T*B*C/b``" in doc and "``B*C/b``" in doc and "inference release" in doc


# ---- finding 9, without FLARE: the inbox is bounded -------------------------------------------

def test_inbox_is_bounded_and_refuses_replays_naming_the_sender():
    from medsplit.flare.transport import Inbox, InboxOverflow, InboxRefused
    from medsplit.transport.base import TransportError

    inbox = Inbox("hospital-a", max_messages=4, max_bytes=100)
    inbox.put("server", 0, b"x" * 10)
    with pytest.raises(InboxRefused, match="message #0 from site server repeats a sequence number already waiting"):
        inbox.put("server", 0, b"y")
    with pytest.raises(InboxOverflow, match=r"site hospital-a: message #4 from site server is 4 ahead .* at most 4 messages"):
        inbox.put("server", 4, b"z")
    with pytest.raises(InboxOverflow, match="over its bound of 100 bytes"):
        inbox.put("hospital-b", 0, b"w" * 95)
    with pytest.raises(InboxRefused, match="sequence number '1', not an integer"):
        inbox.put("server", "1", b"v")
    assert inbox.take("server", 1.0, "client0") == b"x" * 10  # what was accepted is still delivered in order
    # a refused message ends the site's waits, naming the sender (its link lost a message)
    with pytest.raises(TransportError, match="client0: stopped because site server sent a message this site refused"):
        inbox.take("server", 1.0, "client0")


# ---- with NVIDIA FLARE ----------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.flare
def test_flare_site_refuses_the_on_paper_only_job(tmp_path, nvflare):
    from medsplit.flare.simulate import run_simulator

    status = run_simulator(tiny_job_config(tmp_path), SITES, tmp_path / "out", tmp_path / "ws", timeout_s=30,
                           policies={"hospital-a": policy_file(tmp_path)}, defences=ON_PAPER_ONLY)
    assert status["status"] == "failed", status  # today's code: ok, with 0 probes
    message = status["errors"]["hospital-a"]
    assert "site hospital-a refuses job" in message
    assert "the job's probe_every=1000000000" in message and "epsilon C/b=2e+09 per inference release" in message
    assert not (tmp_path / "out" / "metrics.json").exists()


# ---- finding 9: message origin from FLARE's authenticated caller ------------------------------

def _run_with_hostile_hospital(cfg, out: Path, workspace: Path) -> dict:
    """run_simulator with hospital-b replaced by tests/flare/flare_hostile_sites.py's hostile hospital."""
    from nvflare.collab import CollabRecipe
    from nvflare.recipe import SimEnv

    from flare_hostile_sites import HostileHospital
    from medsplit.flare.job import job_description
    from medsplit.flare.sites import MedsplitServer

    out.mkdir(parents=True, exist_ok=True)
    job = job_description(cfg, SITES, out_dir=str(out), timeout_s=60)
    job["sites_root"] = str(out / "sites")
    recipe = CollabRecipe(job_name=job["name"], server=MedsplitServer(job), client=HostileHospital(job),
                          min_clients=len(SITES), sync_task_timeout=60)
    try:
        recipe.run(SimEnv(clients=list(SITES), workspace_root=str(workspace), num_threads=len(SITES)))
    except RuntimeError:
        pass  # the server site's result file says what failed
    return json.loads((out / "medsplit_result.json").read_text())


@pytest.mark.slow
@pytest.mark.flare
def test_flare_hospital_cannot_pass_as_the_server_nor_stop_or_start_another(tmp_path, nvflare):
    sys.path.insert(0, str(Path(__file__).parent))
    status = _run_with_hostile_hospital(tiny_job_config(tmp_path), tmp_path / "out", tmp_path / "ws")
    tries = json.loads((tmp_path / "out" / "hostile_tries.json").read_text())
    assert tries["forged_deliver"].startswith("refused") and "MessageOriginError" in tries["forged_deliver"]
    assert "a message claiming to come from site 'server' was sent by site 'hospital-b'" in tries["forged_deliver"]
    for method in ("stop", "train"):
        assert tries[method].startswith("refused") and "CallerNotAllowed" in tries[method], tries
        assert f"only the server may call {method}(); site 'hospital-b' called it" in tries[method]
    # hospital-a never saw the forged message nor the forged stop: the run finished
    assert status["status"] == "ok", status
