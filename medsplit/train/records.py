"""The run record (``metrics.json``) of a finished run, whatever its placement: what it trained,
the history (one epoch's rows: :func:`epoch_rows`), the tested epoch, test metrics, byte counts
and the data each hospital held."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from medsplit.train.device import device_label

__all__ = ["data_summary", "epoch_rows", "json_default", "run_record"]


def run_record(runner, test: tuple[dict, float], byte_rows, test_by_group: dict | None = None) -> dict:
    """The run record of ``runner``'s finished run.

    Args:
        runner: the reporting party's :class:`~medsplit.train.runner.Runner` (config, protocol,
            history, tested epoch, data).
        test: ``(test metrics, test loss)`` of the tested model.
        byte_rows: ``phase -> rows`` of every party's byte counts (``Channel.byte_rows``).
        test_by_group: test metrics per image group (multi-site sets), when measured.
    """
    cfg, protocol = runner.cfg, runner.protocol
    test_metrics, test_loss = test
    clients = runner.coordinator.all_clients
    return {
        "task": cfg.task, "run": cfg.run_name(), "protocol": cfg.split.protocol,
        "cut": cfg.split.cut if protocol.split else None, "clients": cfg.split.clients,
        "device": device_label(runner.device), "threads": torch.get_num_threads(), "wall_time_s": time.time() - runner.t0,
        "selected_epoch": runner.best["epoch"], "test": test_metrics, "test_loss": test_loss,
        **({"test_by_group": test_by_group} if test_by_group else {}), "history": runner.history,
        "bytes": byte_rows("train"), "bytes_eval": byte_rows("eval"), "data": data_summary(runner.task, clients),
        "normalisation": runner.task.normalisation(), "config": cfg.to_dict(),
        # split.min_hospitals: who left (and came back), when and why
        **({"dropouts": [d.as_dict() for d in runner.roster.departures], "min_hospitals": runner.roster.minimum}
           if runner.roster.tolerant else {}),
    }


def epoch_rows(protocol, epoch: int, losses: dict[int, list[float]], n_trainers: int, lr: float, val_loss: float,
               scores: dict, seconds: float, roster) -> list[dict]:
    """The history rows of ``epoch``: each hospital's mean training loss, then the epoch's row
    (with the hospitals present at its end where hospitals may drop out)."""
    rows = [{"epoch": epoch + 1, "client": protocol.history_name(k, n_trainers), "train_loss": float(np.mean(ls)) if ls else None}
            for k, ls in losses.items()]
    present = {"hospitals": len(roster.members())} if roster.tolerant else {}
    rows.append({"epoch": epoch + 1, "client": "all", "lr": lr, "val_loss": val_loss,
                 **{f"val_{k}": v for k, v in scores.items()}, **present, "seconds": seconds})
    return rows


def data_summary(task, clients) -> dict:
    """The data set's summary plus, per hospital, its row count, class counts and (multi-site
    sets) image groups."""
    summary = task.data.summary()
    labels = task.partition_labels()
    n_classes = getattr(task.data, "num_classes", 1)
    groups = getattr(task.split("train"), "groups", None)
    summary["clients"] = []
    for k, idx in enumerate(clients):
        row = {"name": f"client{k}", "n": int(len(idx)), "class_counts": np.bincount(labels[idx], minlength=n_classes).tolist()}
        if groups is not None:  # image source / view: what a non-IID lung partition splits on
            row["groups"] = dict(sorted(Counter(groups[i] for i in idx).items()))
        summary["clients"].append(row)
    return summary


def json_default(o):
    """``json.dumps(default=...)`` for the numpy scalars, arrays and paths a run record holds."""
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
