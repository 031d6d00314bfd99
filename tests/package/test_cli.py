"""The command line without rough edges (issue 29 item 5): --version, no ==SUPPRESS==, help on
every argument, what split.cut's N means, "did you mean" for a mistyped key, and --help of
every command without importing torch (what made `attack --help` take 7-10 s)."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from medsplit import __version__, cli_choices
from medsplit.cli import build_parser, main
from medsplit.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ["train", "serve", "join", "evaluate", "data", "sweep", "attack", "flare"]


def _subparsers(parser: argparse.ArgumentParser):
    """Every (name, parser) below ``parser``, depth first (flare's sub-commands included)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from _subparsers(sub)


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"medsplit {__version__}"


def test_top_level_help_lists_the_commands_and_nothing_suppressed(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "SUPPRESS" not in out
    assert "party" not in out  # internal: what `train` starts per party, not a user command
    for command in COMMANDS:
        assert f"\n    {command} " in out, command


def test_every_argument_of_every_command_has_help():
    missing = []
    for command in [*COMMANDS, "party"]:
        for name, sub in _subparsers(build_parser(command)):
            for action in sub._actions:
                if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                    continue
                if not action.help or action.help == argparse.SUPPRESS:
                    missing.append(f"{name} {action.dest}")
    assert not missing, f"arguments without help: {sorted(set(missing))}"


def test_evaluate_help_explains_run_dir_and_device(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "run_dir a finished run folder" in out
    assert "--device DEVICE auto (cuda when a GPU is present" in out


def test_the_internal_party_command_still_parses():
    args = build_parser("party").parse_args(["party", "cfg.yaml", "--rank", "1", "--address", "h:1", "--run-dir", "r"])
    assert (args.command, args.rank, args.address, args.run_dir) == ("party", 1, "h:1", "r")


def test_split_cut_help_says_what_n_means_for_each_model(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    start = out.index("split.cut=3 (int)")
    cut = out[start:out.index("split.clients=2 (int)", start)]
    assert "children()[0..N]" in cut and "0 conv1" in cut and "4-7 layer1-layer4" in cut  # ResNet
    assert "first N encoder blocks and the last N decoder blocks" in cut  # U-Net
    assert "legal 0-7" in cut and "legal 1-3" in cut


@pytest.mark.parametrize("override, suggestion", [
    ("split.cuts=3", "did you mean 'split.cut'?"),
    ("train.cut=3", "did you mean 'split.cut'?"),        # the right key in another section
    ("spilt.cut=3", "did you mean 'split'?"),            # a mistyped section
    ("data.img_sise=64", "did you mean 'data.img_size'?"),
])
def test_a_mistyped_key_gets_a_suggestion(override, suggestion, capsys):
    assert main(["train", override]) == 2
    err = capsys.readouterr().err
    assert suggestion in err and "valid keys under" in err


def test_a_key_like_no_other_gets_no_suggestion():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["split.xyzzy=1"])
    assert "did you mean" not in str(e.value) and "valid keys under split are" in str(e.value)


def test_a_shipped_config_by_name():
    assert load_config("retinopathy") == load_config(ROOT / "configs" / "retinopathy.yaml")
    assert load_config("unet-seg", {"split.cut": 2}).split.cut == 2
    with pytest.raises(ConfigError, match="did you mean 'retinopathy'"):
        load_config("retinopaty")


def test_train_help_names_the_shipped_configs(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "the name of a shipped config: eyepacs," in out and "unet-seg" in out
    assert "python -m medsplit train retinopathy split.cut=3" in out


def test_help_of_every_command_imports_no_torch():
    """What makes --help slow is torch (and torchmetrics, the attack code) imported before
    argparse answers; timings are in benchmarks/, this checks the cause."""
    code = ("import json, sys\nfrom medsplit.cli import main\nseen = {}\n"
            f"for argv in {[[c, '--help'] for c in COMMANDS] + [['--help'], ['flare', 'simulate', '--help']]!r}:\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "    seen[' '.join(argv)] = sorted(m for m in ('torch', 'torchmetrics', 'monai', 'medsplit.attacks.fsha')"
            " if m in sys.modules)\n"
            "print(json.dumps(seen))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(seen) == len(COMMANDS) + 2
    assert all(not heavy for heavy in seen.values()), seen


def test_the_torch_free_choices_equal_the_registries():
    from medsplit import sweep
    from medsplit.attacks import ALIASES, ATTACKS
    from medsplit.attacks.profiles import DEVICES, PROFILES
    from medsplit.attacks.tasks import ATTACK_TASKS
    from medsplit.defences import DEFENCES

    assert cli_choices.attack_names() == tuple(ATTACKS)
    assert cli_choices.attack_aliases() == ALIASES
    assert cli_choices.defence_names() == tuple(DEFENCES)
    assert cli_choices.ATTACK_TASKS == tuple(ATTACK_TASKS)
    assert cli_choices.ATTACK_PROFILES == tuple(PROFILES)
    assert cli_choices.ATTACK_DEVICES == tuple(DEVICES)
    assert cli_choices.SWEEP_AXES == tuple(sweep.AXES)
    assert tuple(cli_choices.SWEEP_PARTITIONS) == tuple(sweep.PARTITIONS)
    assert cli_choices.sweep_baselines() == sweep.baseline_protocols()
    assert cli_choices.sweep_protocols() == sweep.split_protocols()


def test_a_spec_whose_name_is_not_a_literal_is_named(tmp_path, monkeypatch):
    (tmp_path / "attacks").mkdir()
    (tmp_path / "attacks" / "odd.py").write_text("NAME = 'odd'\nSPEC = AttackSpec(NAME, 'x')\n")
    monkeypatch.setattr(cli_choices, "PACKAGE", tmp_path)
    with pytest.raises(ValueError, match="odd.py: SPEC's name"):
        cli_choices.attack_names()


def test_attack_rejects_an_unknown_choice_before_importing_anything(capsys):
    with pytest.raises(SystemExit) as e:
        main(["attack", "--task", "kidneys"])
    assert e.value.code == 2
    assert "invalid choice: 'kidneys'" in capsys.readouterr().err
