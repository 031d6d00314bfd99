"""`medsplit train --help` documents the settings; config mistakes answer fast and clearly."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medsplit.cli import main
from medsplit.config import describe_keys

ROOT = Path(__file__).resolve().parents[2]


def test_train_help_lists_every_key_with_default_and_choices(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "split.protocol=sequential   (sequential | splitfed | splitfed-v1 | centralised | fedavg)" in out
    assert "train.epochs=6   (int)" in out and "data.max_images=null   (int | null)" in out
    assert "relay, as in the original study" in out  # the schema's docstrings come along
    assert "the name of a shipped config:" in out and "unet-seg" in out and "retinopathy" in out
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


_HELP_OF_EVERY_BENCHMARK = """
import contextlib, io, json, runpy, sys
from pathlib import Path
sys.path.insert(0, "benchmarks")  # the scripts import their siblings
failed = {}
for path in sorted(Path("benchmarks").glob("*.py")):
    source = path.read_text()
    if "argparse" not in source or '__name__ == "__main__"' not in source:
        continue
    sys.argv, out = [str(path), "--help"], io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            runpy.run_path(str(path), run_name="__main__")
        failed[path.name] = "ran instead of printing its help"
    except SystemExit as e:
        if e.code not in (0, None) or "usage:" not in out.getvalue():
            failed[path.name] = f"exit {e.code}: {out.getvalue()[-500:]}"
    except Exception as e:  # a help text argparse cannot format (a bare %), an import that fails
        failed[path.name] = f"{type(e).__name__}: {e}"
print(json.dumps(failed))
"""


def test_every_benchmark_script_answers_help():
    # benchmarks/wan.py --help once died formatting a profile name with a bare "%" in its help.
    out = subprocess.run([sys.executable, "-c", _HELP_OF_EVERY_BENCHMARK], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {}


@pytest.mark.slow
def test_console_names_the_data_and_ends_with_epoch_and_interval(tmp_path, capsys):
    """Issue 18 item 7: no synthetic banner before a settings error; the data named; the last
    line gives the tested epoch and the 95% interval."""
    from medsplit.config import load_config
    from medsplit.data.images import DataError
    from medsplit.train.loop import train

    tiny = ["task=retinopathy", "data.source=synthetic", "data.synthetic_size=96", "data.img_size=32",
            "model.name=resnet18", "train.epochs=1", "train.batch_size=16", "output.tensorboard=false",
            f"output.runs_dir={tmp_path}/runs", f"output.reports_dir={tmp_path}/reports", f"data.cache_dir={tmp_path}/c"]
    with pytest.raises(DataError):
        train(load_config(None, tiny + ["split.clients=12"]))
    assert "SYNTHETIC DATA" not in capsys.readouterr().out
    train(load_config(None, tiny + ["train.threads=1"]))
    out = capsys.readouterr().out
    assert "SYNTHETIC DATA" in out
    assert "data: synthetic fundus generator (96 images" in out and "training images per client:" in out
    final = out.strip().splitlines()[-1]  # the result is the last thing printed
    assert "model of epoch 1 of 1, best validation auc" in final and "[95% CI " in final
    assert "bootstrap resamples of" in final
