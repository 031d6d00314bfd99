"""One runner for every placement (issue 26): the epoch is written once, so a change made in one
place reaches the in-process run, the gloo party processes and the FLARE sites; the config knows
the protocols without torch; ``medsplit.train`` imports nothing of ``medsplit.flare``; finished
runs keep no checkpoint unless asked to, whatever the placement."""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from medsplit import protocol_names
from medsplit.config import load_config
from medsplit.train import runner
from medsplit.train.protocols import PROTOCOLS

ROOT = Path(__file__).resolve().parents[2]

# The one place the test changes: the history rows of an epoch gain a column.
HISTORY_PATCH = '''
import medsplit.train.runner as runner

_rows = runner.epoch_rows


def epoch_rows(protocol, epoch, losses, *args, **kwargs):
    rows = _rows(protocol, epoch, losses, *args, **kwargs)
    rows[-1]["train_steps"] = sum(len(ls) for ls in losses.values())  # every step's loss reached the history
    return rows


runner.epoch_rows = epoch_rows
'''


def _tiny(tmp_path: Path, name: str, *extra: str):
    return load_config(None, [
        "task=retinopathy", "data.source=synthetic", "data.synthetic_size=48", "data.img_size=32", "model.name=resnet18",
        "split.cut=3", "train.batch_size=16", "train.eval_batch_size=32", "train.epochs=2", "train.threads=1",
        "output.tensorboard=false", "split.protocol=sequential", "split.clients=2", "split.timeout_s=60",
        f"output.runs_dir={tmp_path}/runs", f"output.reports_dir={tmp_path}/reports", f"data.cache_dir={tmp_path}/cache",
        f"output.name={name}", *extra])


def _child_env(patch_dir: Path) -> dict:
    """The environment of party processes and FLARE site processes: the patch loads at start-up."""
    return {"PYTHONPATH": os.pathsep.join([str(patch_dir), str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
@pytest.mark.flare
def test_a_history_column_added_once_reaches_every_placement(tmp_path, monkeypatch):
    pytest.importorskip("nvflare")
    from medsplit.train.loop import train

    patch_dir = tmp_path / "patch"
    patch_dir.mkdir()
    (patch_dir / "history_patch.py").write_text(HISTORY_PATCH)
    # every Python process started below (party processes, FLARE's site processes) loads the patch first
    (patch_dir / "sitecustomize.py").write_text("import history_patch  # noqa: F401\n")
    for key, value in _child_env(patch_dir).items():
        monkeypatch.setenv(key, value)
    monkeypatch.syspath_prepend(str(patch_dir))
    real_rows = runner.epoch_rows
    importlib.import_module("history_patch")  # its import patches the history (this process: the in-process run)

    try:
        records = {}
        for placement in ("inprocess", "gloo", "flare"):
            cfg = _tiny(tmp_path, placement, f"split.transport={placement}", "output.keep_checkpoint=false")
            run_dir = train(cfg, quiet=True)
            records[placement] = json.loads((run_dir / "metrics.json").read_text())
            # a finished run keeps no checkpoint (output.keep_checkpoint=false), whichever party wrote it
            assert not list(run_dir.rglob("checkpoint.pt")), placement
    finally:
        runner.epoch_rows = real_rows
        sys.modules.pop("history_patch", None)
    steps = {p: [r.get("train_steps") for r in m["history"] if r["client"] == "all"] for p, m in records.items()}
    assert len(steps["inprocess"]) == 2 and all(n and n > 0 for n in steps["inprocess"])
    assert steps["gloo"] == steps["flare"] == steps["inprocess"]
    pick = lambda m: [(r["epoch"], r["client"], r.get("train_loss"), r.get("val_loss")) for r in m["history"]]  # noqa: E731
    assert pick(records["gloo"]) == pick(records["flare"]) == pick(records["inprocess"])
    # equality holds at equal CPU thread counts, so every record says what each party used
    assert records["inprocess"]["threads"] == 1
    for placement in ("gloo", "flare"):
        assert [p["threads"] for p in records[placement]["transport"]["parties"]] == [1, 1, 1], placement


def test_protocol_facts_of_the_config_agree_with_the_protocol_classes():
    """medsplit.config reads the protocols' facts without torch; they must be the classes' own."""
    assert protocol_names.protocol_names() == tuple(PROTOCOLS)
    for name, cls in PROTOCOLS.items():
        facts = protocol_names.protocol_facts(name)
        assert (facts.split, facts.runs_as_processes, facts.pooled, facts.baseline) == \
            (cls.split, cls.runs_as_processes, cls.pooled, cls.baseline), name


def test_protocol_facts_of_a_new_module_come_from_its_source(tmp_path, monkeypatch):
    (tmp_path / "zigzag.py").write_text(textwrap.dedent('''
        from medsplit.train.protocols.base import register
        from medsplit.train.protocols.sequential import SequentialRelay

        @register
        class ZigZagRelay(SequentialRelay):
            name = "zigzag"
            runs_as_processes = False
    '''))
    (tmp_path / "pooled_mean.py").write_text(textwrap.dedent('''
        from medsplit.train.protocols import base
        from medsplit.train.protocols.fedavg import FedAvg

        @base.register
        class PooledMean(FedAvg):
            name = "pooled-mean"
    '''))
    monkeypatch.setattr(protocol_names, "PROTOCOLS_DIR", tmp_path)
    assert protocol_names.protocol_facts("zigzag") == protocol_names.ProtocolFacts(split=True, runs_as_processes=False)
    assert protocol_names.protocol_facts("pooled-mean") == protocol_names.ProtocolFacts(split=False, baseline=True)
    assert protocol_names.known_protocol_facts("ring") is None
    assert protocol_names.protocol_names() == ("pooled-mean", "zigzag")


def test_the_config_imports_neither_torch_nor_the_training_code():
    code = ("import sys; from medsplit.config import load_config, validate; "
            "cfg = load_config(None, ['split.protocol=fedavg']); validate(cfg); assert '-whole-clients2-seed0-' in cfg.run_name(); "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('medsplit.train')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         timeout=120, check=True).stdout
    assert out.strip() == "[]"


def test_training_code_imports_nothing_of_flare():
    """medsplit.train dispatches to FLARE through medsplit.transport's registry, never by import."""
    for path in sorted((ROOT / "medsplit" / "train").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.startswith("medsplit.flare") for n in names), f"{path.relative_to(ROOT)} imports {names}"


def test_the_epoch_reseed_is_a_function_of_seed_and_epoch_only():
    runner.reseed_epoch(3, 1)
    a = torch.rand(3)
    torch.rand(5)  # whatever ran before
    runner.reseed_epoch(3, 1)
    assert torch.equal(torch.rand(3), a)
    torch.manual_seed(3 * 104_729 + 1 + 1)  # the formula every placement shares
    assert torch.equal(torch.rand(3), a)


def test_the_tested_epoch_is_the_best_validation_score_and_the_first_of_equals():
    best = {"epoch": -1, "score": -float("inf")}
    chosen = []
    for epoch, auc in enumerate([0.6, 0.7, 0.7, 0.65]):
        is_best, best = runner.select_epoch(best, epoch, {"auc": auc}, val_loss=1.0, metric="auc")
        chosen.append(is_best)
    assert chosen == [True, True, False, False] and best == {"epoch": 2, "score": 0.7}
    # without the metric, the lowest validation loss wins
    is_best, best = runner.select_epoch({"epoch": 1, "score": -0.5}, 1, {}, val_loss=0.4, metric="dice")
    assert is_best and best == {"epoch": 2, "score": -0.4}


def test_bit_identical_compare_finds_every_difference_and_ignores_the_clock():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bit_identical
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    before = {"runs": {"a": {"metrics": {"test_loss": 0.5, "history": [{"seconds": 1.0, "val_loss": float("nan")}],
                                         "auc": 1, "wall_time_s": 3.0}}}}
    same = {"runs": {"a": {"metrics": {"test_loss": 0.5, "history": [{"seconds": 9.0, "val_loss": float("nan")}],
                                       "auc": 1, "wall_time_s": 7.0}}}}
    assert bit_identical.compare(before, same)["differing_runs"] == []
    changed = {"runs": {"a": {"metrics": {"test_loss": 0.5000000001, "history": [{"seconds": 1.0}], "auc": 1.0}}}}
    diffs = {d["path"] for d in bit_identical.compare(before, changed)["runs"]["a"]["differences"]}
    assert diffs == {"/metrics/test_loss", "/metrics/history[0]/val_loss", "/metrics/auc"}  # value, missing key, int -> float
