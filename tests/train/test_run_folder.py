"""Run folders are never overwritten or mixed without a word, outputs are written atomically,
and a bad config stops before any image is decoded, leaving nothing behind (issue 15, items 2-4
and 12-14)."""

import inspect
import json
import os
from pathlib import Path

import pytest
import yaml

import medsplit.train.loop as loop
from medsplit.cli import main
from medsplit.config import ConfigError, load_config
from medsplit.train.checkpoint import CHECKPOINT

RunFolderError = ConfigError  # medsplit.train.run_folder.RunFolderError subclasses it (imports kept old-code safe)

TINY = [
    "task=retinopathy", "data.source=synthetic", "data.synthetic_size=64", "data.img_size=32", "model.name=resnet18",
    "train.epochs=2", "train.batch_size=16", "train.eval_batch_size=64", "output.tensorboard=false", "train.device=cpu",
]


def _overrides(tmp_path, *extra):
    return TINY + [f"output.runs_dir={tmp_path}/runs", f"output.reports_dir={tmp_path}/reports",
                   f"data.cache_dir={tmp_path}/cache", *extra]


def _cfg(tmp_path, *extra):
    return load_config(None, _overrides(tmp_path, *extra))


@pytest.fixture
def no_data(monkeypatch):
    """Fails the test if anything loads (decodes) data."""
    def refuse(*a, **k):
        raise AssertionError("data was loaded before the config was rejected")
    monkeypatch.setattr(loop, "make_task", refuse)


@pytest.fixture
def interrupted(tmp_path):
    """A run interrupted after its first of two epochs."""
    run_dir = loop.train(_cfg(tmp_path, "output.name=r"), stop_after_epoch=1, quiet=True)
    assert (run_dir / CHECKPOINT).exists() and not (run_dir / "metrics.json").exists()
    return run_dir


# --- item 14 / 12 / 13: fail fast, nothing left behind -----------------------------------------

@pytest.mark.parametrize("override, message", [
    ("split.cut=99", r"'split.cut': CUT=99 is not a legal cut for resnet18; valid cuts are \[0, 1, 2, 3, 4, 5, 6, 7\]"),
    ("split.clients=9", r"'split.clients' = 9 is impossible: data.synthetic_size = 64 images cannot give every hospital 8"),
])
def test_illegal_cut_or_client_count_stops_before_any_image_is_decoded(tmp_path, no_data, override, message):
    with pytest.raises(ConfigError, match=message):
        loop.train(_cfg(tmp_path, "output.name=bad", override) if "clients" not in override else
                   _built(tmp_path, override), quiet=True)
    assert not (tmp_path / "runs").exists()


def _built(tmp_path, override):
    # load_config already refuses the client count; a Config edited in code is checked by train too
    cfg = _cfg(tmp_path, "output.name=bad")
    cfg.split.clients = int(override.split("=")[1])
    return cfg


@pytest.mark.parametrize("overrides, message", [
    (["train.eval_batch_size=0"], r"'train.eval_batch_size' = 0 must be >= 1"),
    (["train.lr=nan"], r"'train.lr' = nan must be a finite number > 0"),
    (["train.weight_decay=-1"], r"'train.weight_decay' = -1.0 must be a finite number >= 0"),
    (["train.threads=-2"], r"'train.threads' = -2 must be >= 0"),
    (["data.max_images=0"], r"'data.max_images' = 0 must be >= 3 \(one image per split\) or null"),
    (["data.val_fraction=0.5", "data.test_fraction=0.5"], r"leave no training images"),
    (["model.base_channels=0"], r"'model.base_channels' = 0 must be >= 1"),
    (["output.name=../../escape_run"], r"'output.name' = '../../escape_run' must be a plain folder name inside output.runs_dir"),
    (["output.name=/tmp/abs"], r"'output.name' = '/tmp/abs' must be a plain folder name"),
    (["output.name=.."], r"'output.name' = '..' must be a plain folder name"),
    (["task=lungs", "model.name=resnet18"], r"'model.name' = 'resnet18' cannot train task='lungs'; valid models for lungs are \['unet-smp', 'unet-classic'\]"),
    (["task=retinopathy", "model.name=unet-smp"], r"cannot train task='retinopathy'"),
    (["task=lungs", "model.name=unet-classic", "data.img_size=40"], r"'data.img_size' = 40 does not suit model.name='unet-classic', which needs a multiple of 16"),
    (["split.clients=100", "data.max_images=500"], r"'split.clients' = 100 is impossible: data.max_images = 500"),
])
def test_numeric_ranges_names_and_pairs_are_checked_up_front(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_min_images_per_client_agrees_with_the_partition_default():
    from medsplit.config import MIN_IMAGES_PER_CLIENT
    from medsplit.data.partition import partition

    assert inspect.signature(partition).parameters["min_per_client"].default == MIN_IMAGES_PER_CLIENT


def test_escaping_run_name_writes_nothing_outside_runs_dir(tmp_path, no_data):
    cfg = _cfg(tmp_path, "output.name=ok")
    cfg.output.name = "../escape_run"  # edited in code, after load_config's check
    with pytest.raises(ConfigError, match="must be a plain folder name"):
        loop.train(cfg, quiet=True)
    assert not (tmp_path / "escape_run").exists() and not (tmp_path / "runs").exists()


# --- item 2: occupied folders, config hash, resume on another config ------------------------------

def test_rejected_run_does_not_touch_an_interrupted_run_of_the_same_name(tmp_path, interrupted, no_data):
    before = {p.name: p.read_bytes() for p in interrupted.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match="CUT=99"):
        loop.train(_cfg(tmp_path, "output.name=r", "split.cut=99"), quiet=True)
    assert {p.name: p.read_bytes() for p in interrupted.iterdir() if p.is_file()} == before


def test_new_run_refuses_an_occupied_folder_unless_overwrite(tmp_path, interrupted, no_data):
    with pytest.raises(RunFolderError, match=rf"run folder {interrupted} already holds a run \(checkpoint.pt, config.yaml\); "
                                             rf"pass --resume {interrupted} to continue it, --overwrite to replace it"):
        loop.train(_cfg(tmp_path, "output.name=r"), quiet=True)


@pytest.mark.slow
def test_overwrite_replaces_the_old_run_without_mixing(tmp_path, interrupted):
    (interrupted / "stale.txt").write_text("left by the old run")
    run_dir = loop.train(_cfg(tmp_path, "output.name=r", "train.epochs=1"), overwrite=True, quiet=True)
    assert run_dir == interrupted and not (run_dir / "stale.txt").exists()
    assert (run_dir / "metrics.json").exists() and (run_dir / "model.safetensors").exists()


def test_resume_refuses_another_config_and_lists_the_keys(tmp_path, interrupted, no_data):
    ck = loop.load_checkpoint(interrupted)
    assert ck["config"] == _cfg(tmp_path, "output.name=r").to_dict() and len(ck["config_sha256"]) == 64
    with pytest.raises(RunFolderError, match=r"differing keys: data.synthetic_size \(64 -> 80\), train.lr \(0.001 -> 0.01\); "
                                             r"only .* may change on resume"):
        loop.train(_cfg(tmp_path, "output.name=r", "train.lr=1e-2", "data.synthetic_size=80"), resume=interrupted, quiet=True)
    # another client count used to die with KeyError: 'client2'
    with pytest.raises(RunFolderError, match=r"differing keys: split.clients \(2 -> 3\)"):
        loop.train(_cfg(tmp_path, "output.name=r", "split.clients=3"), resume=interrupted, quiet=True)
    with pytest.raises(RunFolderError, match=r"train.epochs \(2 -> 3\); to continue anyway pass --allow-change for \['train.epochs'\]"):
        loop.train(_cfg(tmp_path, "output.name=r", "train.epochs=3"), resume=interrupted, quiet=True)
    with pytest.raises(RunFolderError, match=r"--allow-change split.clients: this key changes what was already trained"):
        loop.train(_cfg(tmp_path, "output.name=r", "split.clients=3"), resume=interrupted, allow_change=("split.clients",), quiet=True)


@pytest.mark.slow
def test_allow_change_continues_with_more_epochs_from_the_cli(tmp_path, interrupted, capsys):
    assert main(["train", "--resume", str(interrupted), "train.epochs=3"]) == 2
    assert "needs --allow-change" in capsys.readouterr().err
    assert main(["train", "--resume", str(interrupted), "train.epochs=3", "--allow-change", "train.epochs"]) == 0
    m = json.loads((interrupted / "metrics.json").read_text())
    assert [r["epoch"] for r in m["history"] if "val_loss" in r] == [1, 2, 3]
    assert yaml.safe_load((interrupted / "config.yaml").read_text())["train"]["epochs"] == 3
    # finished, output.keep_checkpoint=false: the checkpoint is gone, and a continuation says why
    assert not (interrupted / CHECKPOINT).exists()
    assert main(["train", "--resume", str(interrupted), "train.epochs=4", "--allow-change", "train.epochs"]) == 2
    assert "finished run whose checkpoint was not kept (output.keep_checkpoint=false)" in capsys.readouterr().err


def test_cli_refuses_an_occupied_folder(tmp_path, capsys, monkeypatch):
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("old")
    monkeypatch.setattr(loop, "make_task", lambda *a, **k: (_ for _ in ()).throw(AssertionError("data loaded")))
    assert main(["train", *_overrides(tmp_path, "output.name=r")]) == 2
    assert "already holds a run (config.yaml)" in capsys.readouterr().err and (run / "config.yaml").read_text() == "old"


def test_malformed_saved_config_names_the_file(tmp_path, interrupted, capsys):
    (interrupted / "config.yaml").write_text("task: [retinopathy\nsplit: {cut: 3")
    assert main(["train", "--resume", str(interrupted)]) == 2
    err = capsys.readouterr().err
    assert f"config file {interrupted / 'config.yaml'} is not valid YAML" in err
    (interrupted / "config.yaml").write_text("task: retinopathy\nsplit: {cutt: 3}\n")
    assert main(["train", "--resume", str(interrupted)]) == 2
    assert f"{interrupted / 'config.yaml'}: unknown config key 'split.cutt'" in capsys.readouterr().err


@pytest.mark.slow
def test_kept_checkpoint_lets_a_finished_run_continue_exactly(tmp_path):
    three = json.loads((loop.train(_cfg(tmp_path, "output.name=three", "train.epochs=3"), quiet=True) / "metrics.json").read_text())
    run = loop.train(_cfg(tmp_path, "output.name=two", "output.keep_checkpoint=true"), quiet=True)
    assert (run / CHECKPOINT).exists()
    more = _cfg(tmp_path, "output.name=two", "output.keep_checkpoint=true", "train.epochs=3")
    cont = json.loads((loop.train(more, resume=run, allow_change=("train.epochs",), quiet=True) / "metrics.json").read_text())
    val = lambda m: [r["val_loss"] for r in m["history"] if "val_loss" in r]  # noqa: E731
    assert val(cont) == pytest.approx(val(three), abs=1e-6)


# --- items 3 and 4: atomic outputs, test bytes after a kill during the test step --------------------

def test_write_atomic_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    from medsplit.atomic import write_atomic

    path = tmp_path / "metrics.json"
    path.write_text('{"old": 1}')

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, '{"new": 2}')
    assert path.read_text() == '{"old": 1}' and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


@pytest.mark.slow
def test_no_output_is_written_in_place(tmp_path, monkeypatch):
    """metrics.json, config.yaml, the report and its JSON go through a temporary file and a rename:
    a kill mid-write (which once left metrics.json empty) leaves the old file or the new one."""
    real_write_text, real_write_bytes = Path.write_text, Path.write_bytes

    def guard(real):
        def write(self, *a, **k):
            if str(self).startswith(str(tmp_path / "runs")) or str(self).startswith(str(tmp_path / "reports")):
                raise AssertionError(f"{self} written in place")
            return real(self, *a, **k)
        return write

    monkeypatch.setattr(Path, "write_text", guard(real_write_text))
    monkeypatch.setattr(Path, "write_bytes", guard(real_write_bytes))
    monkeypatch.setattr("shutil.copyfile", lambda *a, **k: (_ for _ in ()).throw(AssertionError("copied in place")))
    run = loop.train(_cfg(tmp_path, "output.name=atomic", "train.epochs=1"), quiet=True)
    assert json.loads((run / "metrics.json").read_text())["run"] == "atomic"
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["atomic.html", "atomic.json"]
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_kill_during_the_test_step_then_resume_counts_test_bytes_under_the_last_epoch(tmp_path, monkeypatch):
    full = json.loads((loop.train(_cfg(tmp_path, "output.name=full"), quiet=True) / "metrics.json").read_text())
    real = loop.evaluate_split

    def killed_in_test(model, task, split, *a):
        if split == "test":
            raise KeyboardInterrupt("killed during the test step")
        return real(model, task, split, *a)

    monkeypatch.setattr(loop, "evaluate_split", killed_in_test)
    with pytest.raises(KeyboardInterrupt):
        loop.train(_cfg(tmp_path, "output.name=killed"), quiet=True)
    monkeypatch.setattr(loop, "evaluate_split", real)
    run = tmp_path / "runs" / "killed"
    assert not (run / "metrics.json").exists()
    resumed = json.loads((loop.train(_cfg(tmp_path, "output.name=killed"), resume=run, quiet=True) / "metrics.json").read_text())
    assert {r["epoch"] for r in full["bytes_eval"] if r["phase"] == "eval"} == {0, 1}
    assert resumed["bytes_eval"] == full["bytes_eval"]
    assert resumed["bytes"] == full["bytes"]


def test_atomic_writes_keep_the_permissions_of_a_plain_write(tmp_path):
    from medsplit.atomic import write_atomic

    (tmp_path / "plain.txt").write_text("x")
    write_atomic(tmp_path / "atomic.txt", "x")
    assert (tmp_path / "atomic.txt").stat().st_mode == (tmp_path / "plain.txt").stat().st_mode
