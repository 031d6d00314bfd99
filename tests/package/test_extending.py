"""docs/extending.md's code is real: each `<!-- file: ... -->` block is copied into place and run.

Plug-ins (protocol, defence, attack) are written into the package for the length of one test and
run in a child process, which finds them the way a user's would (module discovery); the
files are removed in ``finally`` whatever happens.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "extending.md"
TINY_RETINOPATHY = ["task=retinopathy", "data.source=synthetic", "data.synthetic_size=48", "data.img_size=32",
                    "train.batch_size=16", "train.epochs=2", "train.eval_batch_size=64", "train.device=cpu",
                    "train.threads=1", "output.tensorboard=false"]


def doc_blocks() -> dict[str, str]:
    """path -> code of every block the page marks with ``<!-- file: path -->``."""
    text = DOC.read_text()
    blocks = dict(re.findall(r"<!-- file: (\S+) -->\n```python\n(.*?)```", text, flags=re.S))
    assert blocks, "docs/extending.md has no file blocks"
    return blocks


@contextmanager
def installed(*paths: str):
    """The doc's blocks for ``paths`` written into the repository, removed afterwards."""
    blocks = doc_blocks()
    written = []
    try:
        for rel in paths:
            target = REPO / rel
            assert not target.exists(), f"{rel} already exists; the doc's example must be a new file"
            target.write_text(blocks[rel])
            written.append(target)
        yield
    finally:
        for target in written:
            target.unlink(missing_ok=True)
            for cached in (target.parent / "__pycache__").glob(f"{target.stem}.*.pyc"):
                cached.unlink(missing_ok=True)


def run_medsplit(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "medsplit", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**__import__("os").environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_every_plugin_path_in_the_doc_is_a_new_module_of_its_package():
    blocks = doc_blocks()
    assert set(blocks) == {"make_lung_folder.py", "medsplit/models/tiny_cnn.py", "medsplit/train/protocols/zigzag.py",
                           "medsplit/defences/quantise.py", "medsplit/attacks/nearest_neighbour.py"}
    for rel in blocks:
        assert rel == "make_lung_folder.py" or not (REPO / rel).exists()


def test_the_dataset_script_writes_a_folder_the_lung_loader_reads(tmp_path):
    from medsplit.data.lungs import load_lungs

    namespace: dict = {}
    exec(compile(doc_blocks()["make_lung_folder.py"], "make_lung_folder.py", "exec"), namespace)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 48, 40), dtype=np.uint8)
    masks = np.zeros((20, 48, 40), dtype=np.uint8)
    masks[:, 10:38, 5:35] = 1
    patients = [f"p{i // 2}" for i in range(20)]  # two images per patient
    namespace["write_lung_folder"](tmp_path / "my-set", images, masks, patients)
    data = load_lungs(str(tmp_path / "my-set"), tmp_path, img_size=32, seed=0)
    splits = (data.train, data.val, data.test)
    assert sum(len(s) for s in splits) == 20 and not data.synthetic
    seen = [set(s.patients) for s in splits]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])  # the manifest's patients were used
    assert set(data.train.groups) == {"my-hospital"}


@pytest.mark.slow
def test_the_model_example_splits_and_trains(tmp_path, monkeypatch):
    import medsplit.config as config
    from medsplit.models import registry
    from medsplit.split import cut
    from medsplit.train.loop import train

    namespace: dict = {}
    exec(compile(doc_blocks()["medsplit/models/tiny_cnn.py"], "tiny_cnn.py", "exec"), namespace)
    build = namespace["tiny_cnn_table"]
    monkeypatch.setitem(registry.MODELS, "tiny-cnn", lambda num_classes, in_channels=3, **kw: build(num_classes, in_channels))
    monkeypatch.setitem(config.TASK_MODELS, "retinopathy", (*config.TASK_MODELS["retinopathy"], "tiny-cnn"))
    table = registry.build_model("tiny-cnn", num_classes=2)
    assert [p.name for p in cut(table, 1)] == ["client", "server"]
    cfg = config.load_config(None, [*TINY_RETINOPATHY, "model.name=tiny-cnn", "split.cut=1",
                                    f"output.runs_dir={tmp_path}/runs", f"output.reports_dir={tmp_path}/reports"])
    m = json.loads((train(cfg, quiet=True) / "metrics.json").read_text())
    assert m["config"]["model"]["name"] == "tiny-cnn"
    assert 0.0 <= m["test"]["auc"] <= 1.0
    assert any(r["kind"] == "activation" and r["bytes"] > 0 for r in m["bytes"])  # something crossed the cut


@pytest.mark.slow
def test_the_protocol_example_is_a_choice_and_alternates_direction(tmp_path):
    with installed("medsplit/train/protocols/zigzag.py"):
        run_medsplit(["train", *TINY_RETINOPATHY, "split.protocol=zigzag", "split.clients=3", "split.cut=2",
                      "model.name=resnet18", f"output.runs_dir={tmp_path}/runs",
                      f"output.reports_dir={tmp_path}/reports"], cwd=tmp_path)
    m = json.loads(next((tmp_path / "runs").glob("*/metrics.json")).read_text())
    assert m["protocol"] == "zigzag"
    # who handed weights to whom in each epoch: 0->1->2, then 2->1->0 (no hand-over at the turn;
    # the plain relay's second epoch would be 2->0->1->2)
    handovers = {e: sorted((r["sender"], r["receiver"]) for r in m["bytes"] if r["link"] == "weights" and r["epoch"] == e)
                 for e in (0, 1)}
    assert handovers == {0: [("client0", "client1"), ("client1", "client2")],
                         1: [("client1", "client0"), ("client2", "client1")]}


@pytest.mark.slow
def test_the_defence_and_attack_examples_run_in_the_harness(tmp_path, shared_data):
    with installed("medsplit/defences/quantise.py", "medsplit/attacks/nearest_neighbour.py"):
        run_medsplit(["attack", "--profile", "tiny", "--task", "retinopathy", "--data-root", str(shared_data),
                      "--attacks", "nearest-neighbour",
                      "--defences", "none,quantise", "--set", "strengths.quantise=[4]", "--out", str(tmp_path / "out")],
                     cwd=tmp_path)
    summary = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    rows = [r for r in summary["rows"] if r["attack"] == "nearest-neighbour"]
    assert {(r["defence"], r["strength"]) for r in rows} == {("none", 0), ("quantise", 4)}
    assert all(0.0 <= r["ssim"] <= 1.0 and r["mse"] >= 0 for r in rows)
    quantised = next(r for r in rows if r["defence"] == "quantise")
    assert quantised.get("privacy.levels") == 4  # the installer's facts reach the report's row
