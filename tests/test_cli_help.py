"""`medsplit train --help` documents the settings; config mistakes answer fast and clearly."""

import subprocess
import sys
from pathlib import Path

import pytest

from medsplit.cli import main
from medsplit.config import describe_keys

ROOT = Path(__file__).resolve().parent.parent


def test_train_help_lists_every_key_with_default_and_choices(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "split.protocol=sequential   (sequential | splitfed | centralised | fedavg)" in out
    assert "train.epochs=6   (int)" in out and "data.max_images=null   (int | null)" in out
    assert "relay, as in the original study" in out  # the schema's docstrings come along
    assert "configs/ holds" in out and "unet-seg.yaml" in out and "retinopathy.yaml" in out
    for row in describe_keys():
        assert f"    {row['key']}=" in out, row["key"]


def test_an_override_in_the_config_position_is_taken_as_a_setting(capsys):
    assert main(["train", "split.protocol=bogus"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" not in err
    assert "'split.protocol' is 'bogus'; valid choices are" in err


def test_help_and_config_errors_do_not_import_torch():
    """What makes --help take seconds: torch (and the attack code) imported up front."""
    code = ("import sys\nfrom medsplit.cli import main\n"
            "rc = main(['train', 'split.protocol=bogus'])\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO TORCH', rc)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip().endswith("NO TORCH 2"), out.stdout + out.stderr
