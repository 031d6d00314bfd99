"""The training loop, visible in one screen: epochs -> protocol.run_epoch -> validate ->
checkpoint; then test the selected model once and write the run's outputs."""

from __future__ import annotations

import copy
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from medsplit.atomic import write_atomic
from medsplit.config import Config, ConfigError, validate
from medsplit.split import Channel
from medsplit.split.codecs import codecs_for
from medsplit.tracking import start_tracking
from medsplit.train.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint, save_weights
from medsplit.train.console import RunEstimate, announce_data
from medsplit.train.device import device_label, resolve_device
from medsplit.train.precision import autocast_for
from medsplit.train.protocols import protocol_class
from medsplit.train.schedule import augmentation_generator, client_indices, hospital_batches, learning_rate, make_optimizer_factory
from medsplit.train.tasks import Task, make_task

__all__ = ["check_cut", "evaluate_split", "train"]


@torch.no_grad()
def evaluate_split(model, task: Task, split: str, batch_size: int, autocast) -> tuple[dict, float]:
    model.eval()
    metrics = task.new_metrics()
    losses = []
    n = len(task.split(split))
    for idx in torch.arange(n).split(batch_size):
        batch = task.batch(split, idx, train=False, generator=None)
        with autocast():
            out = model(batch.x)
        losses.append(float(task.loss(out, batch.y)) * len(idx))
        task.update_metrics(metrics, out.float(), batch)
    model.train()
    return metrics.aggregate(), sum(losses) / n


def check_cut(cfg: Config) -> None:
    """Reject an illegal ``split.cut`` from the model's stage table built on the meta device (no
    memory, no weights read), before any image is decoded."""
    if not protocol_class(cfg.split.protocol).split:  # the unsplit baselines have no cut
        return
    from medsplit.models import build_model

    from medsplit.tasks import TASKS

    kwargs = TASKS[cfg.task].model_kwargs(cfg, TASKS[cfg.task].num_outputs(cfg))
    with torch.device("meta"):
        table = build_model(cfg.model.name, **kwargs)
    try:
        table.plan(cfg.split.cut)
    except ValueError as e:
        raise ConfigError(f"config key 'split.cut': {e}") from None


def train(cfg: Config, resume: Path | None = None, stop_after_epoch: int | None = None, quiet: bool = False,
          overwrite: bool = False, allow_change: tuple[str, ...] = ()) -> Path:
    """Train ``cfg`` (or continue the run in ``resume``); returns the run directory.

    Everything that can be checked without data (config ranges, cut, run folder, resume
    compatibility) is checked before any image is decoded, and nothing is written before the
    data has loaded: a rejected run leaves no folder behind and never touches another run's files.

    Args:
        cfg: the resolved config.
        resume: a run folder whose checkpoint to continue; ``cfg`` must equal the config the
            checkpoint was trained under, except for keys named in ``allow_change``.
        stop_after_epoch: interrupt the run after that epoch's checkpoint (used by tests to show
            that resuming reaches the same result).
        quiet: no progress bars or summary lines.
        overwrite: start afresh in a run folder that already holds files (they are removed first).
        allow_change: keys (from :data:`medsplit.train.run_folder.RESUMABLE`) that may differ from
            the checkpoint's config on resume, e.g. ``("train.epochs",)``.
    """
    from medsplit.train import run_folder

    t0 = time.time()
    validate(cfg)  # a Config built in code gets the checks a loaded one had
    check_cut(cfg)
    run_dir = Path(resume) if resume else Path(cfg.output.runs_dir) / cfg.run_name()
    if cfg.split.transport == "flare":  # FLARE sites in FLARE's simulator: see medsplit.flare
        from medsplit.flare import require_nvflare

        require_nvflare()
        from medsplit.flare.simulate import train_with_flare

        return train_with_flare(cfg, quiet=quiet, resume=resume is not None)
    if cfg.split.transport != "inprocess":  # one process per party: see medsplit.train.parties
        from medsplit.train.launch import launch_local

        if not resume:
            run_folder.check_fresh(run_dir, overwrite)
            if overwrite:
                run_folder.clear(run_dir)
        launch_local(cfg, run_dir, resume=resume is not None, quiet=quiet)
        return run_dir
    device = resolve_device(cfg.train.device)
    ck = None
    if resume:
        if overwrite:
            raise ConfigError("--overwrite starts a run afresh and --resume continues one; pass only one")
        ck = load_checkpoint(run_dir)
        saved = ck.get("config") or _saved_config(run_dir)
        run_folder.check_resume(run_dir, saved, cfg, allow_change)
        if ck["epoch"] + 1 > cfg.train.epochs:
            raise ConfigError(f"cannot resume {run_dir} with train.epochs={cfg.train.epochs}: it has already trained {ck['epoch'] + 1} epochs")
    else:
        run_folder.check_fresh(run_dir, overwrite)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)

    task = make_task(cfg, device)
    clients = client_indices(cfg, task)
    announce_data(task, clients, quiet)  # after the partition, so a setting that cannot work fails first
    torch.manual_seed(cfg.train.seed)  # one init, shared by split and unsplit protocols
    table = task.build_table().to(device)
    if device.type == "cuda" and cfg.train.channels_last:
        table = table.to(memory_format=torch.channels_last)
    channel = Channel(serialise=cfg.split.serialise, codecs=codecs_for(cfg.split.compress_activations, cfg.split.compress_gradients))
    protocol = protocol_class(cfg.split.protocol)(table, cfg.split.cut, cfg.split.clients, make_optimizer_factory(cfg), task.loss, channel,
                                                      optimizer_handover=cfg.split.optimizer_handover,
                                                      labels_may_cross=task.labels_may_cross)
    autocast = autocast_for(cfg.train, device)

    # Data, partition and cut are good: only now is anything written (an overwritten run is cleared first, so its
    # files and the new run's never mix).
    if not resume and overwrite:
        run_folder.clear(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(run_dir / "config.yaml", cfg.to_yaml())

    history: list[dict] = []
    best = {"epoch": -1, "score": -float("inf"), "weights": None}
    start_epoch = 0
    if ck is not None:
        protocol.load_state(ck["protocol"])
        channel.load_byte_rows(ck["bytes"])
        history, best, start_epoch = ck["history"], ck["best"], ck["epoch"] + 1
        t0 -= ck["elapsed_s"]
    tracker = start_tracking(cfg, run_dir)  # TensorBoard and/or MLflow (output.tensorboard, output.mlflow)

    pooled = protocol.training_rows(clients)  # one array per training party (centralised pools them)
    estimate = None  # the run's size and estimated time, printed once after its first batches
    epochs = tqdm(range(start_epoch, cfg.train.epochs), desc=f"{cfg.run_name()}", unit="epoch", disable=quiet, initial=start_epoch, total=cfg.train.epochs)
    for epoch in epochs:
        t_epoch = time.time()
        channel.epoch = epoch
        lr = learning_rate(cfg, epoch)
        for party in protocol.parties:
            for group in party.optimizer.param_groups if party.optimizer else []:
                group["lr"] = lr
        batches = [hospital_batches(cfg, task, idx, epoch, k) for k, idx in enumerate(pooled)]
        # Every random draw of an epoch is a function of (seed, epoch, hospital): each hospital
        # augments from its own generator, anything on torch's global generator (dropout, say)
        # draws from this reseed, so a resumed run replays the epochs an uninterrupted one trains,
        # and a hospital in its own process draws what it draws here.
        aug_gens = [augmentation_generator(cfg, epoch, k, device) for k in range(len(pooled))]
        torch.manual_seed(cfg.train.seed * 104_729 + epoch + 1)
        losses = {k: [] for k in range(len(pooled))}
        bar = tqdm(total=sum(len(b) for b in batches), desc=f"epoch {epoch + 1}", unit="batch", leave=False, disable=quiet)
        estimate = estimate or RunEstimate(sum(len(b) for b in batches), cfg.train.epochs - epoch, cfg.train.batch_size,
                                           cfg.data.img_size, str(task.data.summary().get("source", cfg.data.source)).split(" (")[0],
                                           out=None if quiet else tqdm.write)

        def step(model, k, idx):
            batch = task.batch("train", idx, train=True, generator=aug_gens[k])
            with autocast():
                loss, _ = model.train_step(batch.x, batch.y)
            losses[k].append(loss)
            estimate.batch_done()
            bar.update(1)
            bar.set_postfix(client=k, loss=f"{loss:.4f}")

        protocol.run_epoch(batches, step)
        bar.close()
        val, val_loss = evaluate_split(protocol.eval_model(), task, "val", cfg.train.eval_batch_size, autocast)
        scores = task.summarise(val)
        seconds = time.time() - t_epoch
        for k, ls in losses.items():
            history.append({"epoch": epoch + 1, "client": protocol.history_name(k, len(pooled)), "train_loss": float(np.mean(ls)) if ls else None})
        history.append({"epoch": epoch + 1, "client": "all", "lr": lr, "val_loss": val_loss, **{f"val_{k}": v for k, v in scores.items()}, "seconds": seconds})
        score = scores.get(task.select_metric, -val_loss)
        if score is not None and score > best["score"]:
            best = {"epoch": epoch + 1, "score": float(score), "weights": copy.deepcopy(protocol.eval_state_dict())}
        tracker.epoch(history, epoch + 1)
        epochs.set_postfix(val_loss=f"{val_loss:.4f}", **{task.select_metric: f"{scores.get(task.select_metric, float('nan')):.4f}"})
        save_checkpoint(run_dir, {"protocol": protocol.state(), "bytes": channel.byte_rows(None), "history": history,
                                  "best": best, "epoch": epoch, "elapsed_s": time.time() - t0,
                                  "config": cfg.to_dict(), "config_sha256": run_folder.config_hash(cfg.to_dict())})
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < cfg.train.epochs:
            tracker.close()
            return run_dir

    # Test once, with the model selected on validation; nothing before touched the test split.
    # Its bytes belong to the last epoch, also when a resumed run trains no epoch before testing.
    channel.epoch = cfg.train.epochs - 1
    final = protocol.eval_model()
    test_model_state = best["weights"] or protocol.eval_state_dict()
    _load_eval_weights(final, test_model_state)
    test, test_loss = evaluate_split(final, task, "test", cfg.train.eval_batch_size, autocast)
    from medsplit.train.by_group import evaluate_by_group  # per-site test metrics of a multi-site set

    test_by_group = evaluate_by_group(final, task, "test", cfg.train.eval_batch_size, autocast)
    save_weights(run_dir, test_model_state)
    wall = time.time() - t0
    result = {
        "task": cfg.task, "run": cfg.run_name(), "protocol": cfg.split.protocol,
        "cut": cfg.split.cut if protocol.split else None, "clients": cfg.split.clients,
        "device": device_label(device), "wall_time_s": wall, "selected_epoch": best["epoch"],
        "test": test, "test_loss": test_loss, **({"test_by_group": test_by_group} if test_by_group else {}), "history": history, "bytes": channel.byte_rows("train"),
        "bytes_eval": channel.byte_rows("eval"), "data": _data_summary(task, clients, pooled),
        "normalisation": task.normalisation(),
        "config": cfg.to_dict(),
    }
    write_atomic(run_dir / "metrics.json", json.dumps(result, indent=2, default=_json_default))
    from medsplit.train.outputs import write_outputs

    write_outputs(cfg, run_dir, result, task, final, quiet=quiet)
    tracker.finish(result, task.report_examples(final, test) if tracker.backends else None)  # after the report: MLflow stores it
    if not cfg.output.keep_checkpoint:
        # Finished: the weights are in model.safetensors; the checkpoint (every party's weights and
        # optimiser state) would only let the run continue, which output.keep_checkpoint asks for.
        (run_dir / CHECKPOINT).unlink(missing_ok=True)
    return run_dir


def _saved_config(run_dir: Path) -> dict:
    """The config of a run whose checkpoint predates configs stored in checkpoints."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    try:
        values = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read {path} ({e}); the checkpoint there stores no config to check the resume against") from e
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    return values


def _load_eval_weights(model, state: dict) -> None:
    for part, _ in model.chain:
        own = part.state_dict()
        part.load_state_dict({k: state[k] for k in own})


def _data_summary(task: Task, clients, pooled) -> dict:
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


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
