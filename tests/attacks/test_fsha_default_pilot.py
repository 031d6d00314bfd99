"""FSHA runs at its strongest by default: the pilot ends in BatchNorm as the client's block does
(issue 27). The free pilot stays reachable with ``--set fsha.pilot_batch_norm=false``, and the
results page's reproduce-commands say which pilot each committed file ran, since the default
changed under the old free-pilot files."""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict
from pathlib import Path

import pytest
from torch import nn

from medsplit.attacks.fsha import FSHAConfig, FSHAServer
from medsplit.attacks.profiles import PROFILES, customise
from medsplit.results.attack_studies import attack_studies

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def _has_batch_norm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def test_the_default_pilot_is_the_matched_one_in_every_profile():
    assert FSHAConfig().pilot_batch_norm is True
    for name, profile in PROFILES.items():
        assert profile.fsha.pilot_batch_norm is True, name
    assert _has_batch_norm(FSHAServer(1, 16, (4, 8, 8), FSHAConfig(width=8)).pilot)


def test_the_free_pilot_is_one_set_away():
    free = customise(PROFILES["paper-cpu"], ["fsha.pilot_batch_norm=false"])
    assert free.fsha.pilot_batch_norm is False
    assert not _has_batch_norm(FSHAServer(1, 16, (4, 8, 8), free.fsha).pilot)


def _fsha_file(fsha: dict, command: str | None = None) -> dict:
    profile = asdict(PROFILES["paper-cpu"])
    profile["name"] = "paper-cpu-x"
    profile["fsha"] = fsha
    data = {"kind": "attack", "task": "lungs", "profile": "paper-cpu-x", "profile_config": profile,
            "rows": [{"attack": "fsha", "defence": "none", "strength": 0, "mse": 0.05, "ssim": 0.2, "iterations": 4000}]}
    if command:
        data["command"] = command
    return data


def _command(data: dict) -> str:
    (study,) = attack_studies([(Path("fsha-x.json"), data)])
    (row,) = study.rows
    return row["command"]


def _rerun_fsha(command: str) -> FSHAConfig:
    """The FSHA configuration ``medsplit attack`` builds from a page command (its profile and --set words)."""
    words = shlex.split(command)
    profile = PROFILES[words[words.index("--profile") + 1]]
    return customise(profile, [words[i + 1] for i, w in enumerate(words) if w == "--set"]).fsha


@pytest.mark.parametrize("fsha, pilot", [
    ({"iterations": 4000, "width": 16, "log_every": 250}, False),  # written before the field existed: the free pilot
    ({"iterations": 4000, "width": 16, "log_every": 250, "pilot_batch_norm": False}, False),
    ({"iterations": 4000, "width": 16, "log_every": 250, "pilot_batch_norm": True}, True),
])
def test_a_derived_command_reruns_the_files_pilot(fsha, pilot):
    command = _command(_fsha_file(fsha))
    assert f"--set fsha.pilot_batch_norm={str(pilot).lower()}" in command
    rerun = _rerun_fsha(command)
    assert rerun.pilot_batch_norm is pilot and rerun.iterations == 4000


def test_a_recorded_command_that_predates_the_flag_gets_the_free_pilot_added():
    recorded = "python -m medsplit attack --task lungs --profile paper-cpu --attacks fsha --defences none --set name=x"
    command = _command(_fsha_file({"iterations": 10000, "width": 16}, recorded))
    assert command.endswith("--set name=x --set fsha.pilot_batch_norm=false")
    assert _rerun_fsha(command).pilot_batch_norm is False
    # a recorded command that names the pilot is left as it is
    named = recorded + " --set fsha.pilot_batch_norm=true"
    assert _command(_fsha_file({"pilot_batch_norm": True}, named)).count("pilot_batch_norm") == 1


def test_every_committed_fsha_file_reruns_with_the_pilot_and_length_it_ran():
    files = [(p, json.loads(p.read_text())) for p in sorted(RESULTS.glob("fsha-*.json"))]
    files = [(p, d) for p, d in files if any(r.get("attack") == "fsha" for r in d.get("rows") or [])]
    assert len(files) >= 8
    study = next(s for s in attack_studies(files) if "FSHA" in s.title)
    by_file = {r["file"]: r for r in study.rows}
    for path, data in files:
        ran = data["profile_config"]["fsha"]
        rerun = _rerun_fsha(by_file[path.name]["command"])
        assert rerun.pilot_batch_norm is ran.get("pilot_batch_norm", False), path.name
        assert rerun.iterations == ran["iterations"], path.name
        assert ("pilot ends in BatchNorm" in by_file[path.name]["variant"]) is rerun.pilot_batch_norm, path.name
    # the 10,000-iteration rows ran the free pilot and were scored in training mode
    assert by_file["fsha-paper-cpu-lungs.json"]["command"].endswith("--set fsha.pilot_batch_norm=false")
    assert by_file["fsha-paper-cpu-lungs.json"]["client scored in"].startswith("training mode")
    assert by_file["fsha-paper-cpu-lungs.json"]["mean image / nearest auxiliary image MSE"] == "— / —"
    # the old DP-SGD row covered the client encoder only; its epsilon is labelled so
    old_dp = by_file["fsha-paper-cpu-lungs-dpsgd.json"]
    assert "client encoder only" in old_dp["defence"] and "nominal" in old_dp["privacy"]


def test_a_file_with_the_trivial_baselines_was_scored_in_eval_mode_and_shows_them():
    data = _fsha_file({"pilot_batch_norm": True, "iterations": 4000})
    data["rows"][0].update({"baseline_mse": 0.0252, "baseline_nearest_mse": 0.0157})
    data["trivial_baselines"] = {"0": {"baseline_mse": 0.0252}}
    (study,) = attack_studies([(Path("fsha-x.json"), data)])
    (row,) = study.rows
    assert row["client scored in"] == "eval mode"
    assert row["mean image / nearest auxiliary image MSE"] == "0.0252 / 0.0157"
    data["rows"][0].update({"defence": "dpsgd", "strength": 1.0, "privacy.epsilon": 937.0})
    (row,) = attack_studies([(Path("fsha-x.json"), data)])[0].rows
    assert row["defence"] == "dpsgd (1.0)" and row["privacy"] == "epsilon 937 per image (weights of every part)"
