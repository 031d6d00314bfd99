"""The tiny runs the process-level tests share (dropout and rejoin over gloo, FLARE and
serve/join; the gloo equality and failure tests): hospitals on tiny synthetic images, one thread
per process, so a run across processes and its in-process twin can be compared number for
number."""

import json
from pathlib import Path

from medsplit.config import load_config


def tiny_federation(tmp_path, task, protocol, *extra, clients=3, epochs=3):
    """A ``clients``-hospital run of ``task`` (retinopathy: ResNet-18 at CUT 3; lungs: the smp
    U-Net at CUT 1) on 32 px synthetic images for ``epochs`` epochs; ``extra`` overrides go last."""
    return load_config(None, tiny_federation_overrides(tmp_path, task, protocol, *extra, clients=clients, epochs=epochs))


def tiny_federation_overrides(tmp_path, task, protocol, *extra, clients=3, epochs=3) -> list[str]:
    """:func:`tiny_federation`'s settings as command-line overrides (``serve``, ``join``)."""
    if task == "retinopathy":
        base = ["task=retinopathy", "data.synthetic_size=72", "data.img_size=32", "model.name=resnet18",
                "train.batch_size=8", "train.eval_batch_size=64", "split.cut=3"]
    else:
        base = ["task=lungs", "data.synthetic_size=48", "data.img_size=32", "model.name=unet-smp",
                "train.batch_size=4", "train.eval_batch_size=16", "split.cut=1"]
    return base + [
        "data.source=synthetic", "data.augment=true", f"train.epochs={epochs}", "train.threads=1",
        "output.tensorboard=false", f"output.runs_dir={tmp_path}/runs", f"output.reports_dir={tmp_path}/reports",
        f"data.cache_dir={tmp_path}/cache", f"split.protocol={protocol}", f"split.clients={clients}",
        "split.timeout_s=60", *extra]


def run_metrics(run_dir) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def history_rows(m: dict) -> list[tuple]:
    """What a dropout changes in the history: each row's epoch, hospital, losses and hospitals present."""
    return [(r["epoch"], r["client"], r.get("train_loss"), r.get("val_loss"), r.get("hospitals")) for r in m["history"]]
