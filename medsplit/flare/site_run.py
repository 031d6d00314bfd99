"""What one site (the server, or one hospital) runs: the training loop of
:func:`medsplit.train.loop.train`, restricted to its own parties, parts and data.

Every site builds the same protocol from the same seed and walks the same schedule; the
:class:`~medsplit.flare.party_engine.PartySplitModel` computes only local parts and exchanges the
rest over the transport. The server never opens an image folder: it builds its parts from the
config alone and learns the schedule (how many training rows each hospital has, how many
validation/test images the evaluating hospital has) from the hospitals' hello messages.

Equality with the in-process run (same seed, same data, CPU): the same parties compute the same
operations on the same tensors in the same order, so the weights and test metrics are equal
bit for bit, with two documented exceptions, both switched off in the equality tests:

* data augmentation: in one process every hospital draws its augmentations from ONE generator in
  schedule order; a hospital on its own site cannot advance that generator for batches of other
  hospitals without their images, so each hospital draws from its own (same seed, so a
  one-hospital run is still equal; with several hospitals the runs agree in distribution only);
* the hijack detector's fake rounds (see :mod:`medsplit.flare.policy`): not run here yet.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
import types

import numpy as np
import torch

from medsplit.config import Config
from medsplit.flare.party_engine import PartyChannel, PartySplitModel
from medsplit.flare.policy import HospitalGuard
from medsplit.split.codecs import codecs_for
from medsplit.train.loop import (client_indices, epoch_batches, learning_rate, make_optimizer_factory,
                                 resolve_device)
from medsplit.train.protocols import PROTOCOLS
from medsplit.train.tasks import task_model

SPLIT_PROTOCOLS = ("sequential", "splitfed")
SERVER_PARTIES = frozenset({"server", "aggregator"})
# torch's global RNG initialises the model: sites that share a process (tests, the simulator's
# threads) must not interleave their seeding and building.
_INIT_LOCK = threading.Lock()


def client_party(k: int) -> str:
    return f"client{k}"


def config_fingerprint(cfg: Config) -> str:
    """Hash of what every site must agree on (model, split, training, task, image size); a
    hospital's own data location and output folders are its own business and excluded."""
    d = cfg.to_dict()
    shared = {"task": d["task"], "model": d["model"], "split": d["split"],
              "train": {k: v for k, v in d["train"].items() if k not in ("device", "threads")},
              "data": {k: v for k, v in d["data"].items() if k not in ("root", "source", "cache_dir")}}
    return hashlib.sha256(json.dumps(shared, sort_keys=True).encode()).hexdigest()[:16]


def num_classes_of(cfg: Config) -> int:
    """The model's output width, known from the config alone (the server has no data)."""
    if cfg.task == "lungs":
        return 1
    return 5 if cfg.data.target == "grade" else 2


def server_loss(cfg: Config):
    """The task loss for a site without data: the Task's own loss method, on a minimal self."""
    from medsplit.train.tasks import LungSegmentationTask, RetinopathyTask

    if cfg.task == "lungs":
        from monai.losses import DiceLoss

        holder = types.SimpleNamespace(_dice=DiceLoss(sigmoid=True))
        return lambda o, t: LungSegmentationTask.loss(holder, o, t)
    return lambda o, t: RetinopathyTask.loss(None, o, t)


def check_flare_config(cfg: Config) -> None:
    if cfg.split.protocol not in SPLIT_PROTOCOLS:
        raise ValueError(f"split.transport=flare runs the split protocols {list(SPLIT_PROTOCOLS)}; "
                         f"split.protocol={cfg.split.protocol!r} (a whole-model baseline) runs in-process only")


def run_site(cfg: Config, local: frozenset[str], site_of: dict[str, str], transport, *, own_data: bool = False,
             guard: HospitalGuard | None = None, log=None) -> dict:
    """Run this site's share of the job; returns its result (JSON-able, no image-level data).

    Args:
        cfg: the job's config (the same on every site, bar data location and outputs).
        local: the parties this site runs: ``SERVER_PARTIES`` or ``{"client<k>"}``.
        site_of: party -> site name on the transport.
        transport: the site's endpoint (``send(site, bytes)``, ``recv(site, max_bytes)``).
        own_data: the hospital's data folder holds only its own images (production): it trains on
            all of its training rows. Off (simulator, POC, tests): every hospital loads the same
            dataset and keeps its partition, exactly as the in-process run splits it.
        guard: the hospital's defences (Laplace noise, NoPeek, alarm abort) from the job.
        log: progress lines (``None``: silent).
    """
    check_flare_config(cfg)
    t0 = time.time()
    say = log or (lambda *_: None)
    is_server = "server" in local
    device = resolve_device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    task = None
    if not is_server:
        from medsplit.train.tasks import make_task

        task = make_task(cfg, device)
    channel = PartyChannel(codecs=codecs_for(cfg.split.compress_activations, cfg.split.compress_gradients),
                           local=frozenset(local), site_of=dict(site_of), transport=transport)
    with _INIT_LOCK:
        torch.manual_seed(cfg.train.seed)  # the same initial weights on every site
        table = (task.build_table() if task is not None else task_model(cfg, num_classes_of(cfg))).to(device)
        loss_fn = task.loss if task is not None else server_loss(cfg)
        protocol = PROTOCOLS[cfg.split.protocol](table, cfg.split.cut, cfg.split.clients, make_optimizer_factory(cfg),
                                                 loss_fn, channel, optimizer_handover=cfg.split.optimizer_handover)
    protocol.models = [PartySplitModel.of(m) for m in protocol.models]
    n_clients = cfg.split.clients
    mine = [k for k in range(n_clients) if client_party(k) in local]

    # ---- hello: the schedule every site must walk -------------------------------------------
    fingerprint = config_fingerprint(cfg)
    if is_server:
        hellos = [channel.recv_json(client_party(k)) for k in range(n_clients)]
        for k, h in enumerate(hellos):
            if h.get("config") != fingerprint:
                raise ValueError(f"{client_party(k)} ({channel.site(client_party(k))}) runs a different job config "
                                 f"(fingerprint {h.get('config')} != server's {fingerprint}); every site must use the same job")
        schedule = {key: [h[key] for h in hellos] for key in ("n_train", "n_val", "n_test")}
        for k in range(n_clients):
            channel.send_json(client_party(k), schedule)
    else:
        (k_own,) = mine
        rows = np.arange(len(task.split("train"))) if own_data else client_indices(cfg, task)[k_own]
        channel.send_json("server", {"config": fingerprint, "n_train": int(len(rows)),
                                     "n_val": len(task.split("val")), "n_test": len(task.split("test"))})
        schedule = channel.recv_json("server")
    say(f"schedule: training rows per hospital {schedule['n_train']}")

    if guard is not None:
        for model in protocol.models:
            if model._local(model.data_owner):
                for part, owner in model.chain:
                    if owner is model.data_owner and any(o is not owner for _, o in model.chain):
                        model.send_transforms[part.name] = guard.send_transform
                        reg = guard.regularizer(tuple(n for n in part.sends))
                        if reg is not None:
                            model.regularizers[part.name] = reg
                        break  # the first part that sends to the server

    history: list[dict] = []
    train_losses: dict[int, dict[int, float]] = {}
    best = {"epoch": -1, "score": -float("inf"), "state": None}
    val_rows: list[dict] = []
    for epoch in range(cfg.train.epochs):
        t_epoch = time.time()
        channel.epoch = epoch
        lr = learning_rate(cfg, epoch)
        for party in protocol.parties:
            if channel.is_local(party.name) and party.optimizer is not None:
                for group in party.optimizer.param_groups:
                    group["lr"] = lr
        batches = [epoch_batches(rows if k in mine else np.arange(schedule["n_train"][k]), cfg.train.batch_size,
                                 cfg.train.seed, epoch, k) for k in range(n_clients)]
        aug_gen = torch.Generator(device=device).manual_seed(cfg.train.seed * 7919 + epoch)
        losses: dict[int, list[float]] = {k: [] for k in range(n_clients)}

        def step(model: PartySplitModel, k: int, idx: torch.Tensor) -> None:
            if not model.involves_site():
                channel.step += 1  # another site's step: keep the step counter in lockstep
                return
            x = y = None
            if model._local(model.data_owner):
                batch = task.batch("train", idx, train=True, generator=aug_gen)
                x, y = batch.x, batch.y
            loss, _ = model.train_step(x, y)
            if loss is not None:
                losses[k].append(loss)

        protocol.run_epoch(batches, step)
        train_losses[epoch + 1] = {k: float(np.mean(v)) for k, v in losses.items() if v}
        model = protocol.eval_model()
        evaluated = _evaluate(model, task, "val", schedule["n_val"], cfg.train.eval_batch_size)
        evaluator = model.data_owner.name
        improved = False
        if evaluated is not None:  # this site is the evaluating hospital
            val, val_loss = evaluated
            scores = task.summarise(val)
            score = scores.get(task.select_metric, -val_loss)
            improved = score is not None and score > best["score"]
            if improved:
                best["score"] = float(score)
            val_rows.append({"epoch": epoch + 1, "lr": lr, "val_loss": val_loss, **{f"val_{k}": v for k, v in scores.items()},
                             "seconds": time.time() - t_epoch})
            if not channel.is_local("server"):
                channel.send_json("server", {"improved": bool(improved)})
        elif channel.is_local("server"):
            improved = bool(channel.recv_json(evaluator)["improved"])
        if improved:
            best["epoch"] = epoch + 1
            best["state"] = _local_state(model)
        say(f"epoch {epoch + 1}/{cfg.train.epochs} done in {time.time() - t_epoch:.1f} s")

    final = protocol.eval_model()
    if best["state"] is not None:
        for part, owner in final.chain:
            if final._local(owner):
                part.load_state_dict(best["state"][part.name])
    tested = _evaluate(final, task, "test", schedule["n_test"], cfg.train.eval_batch_size)
    result = {
        "site": channel.site(next(iter(sorted(local)))), "parties": sorted(local), "train_losses": train_losses,
        "bytes": channel.sent_rows(None), "control_bytes": channel.control_bytes, "wall_time_s": time.time() - t0,
        "config": fingerprint, "schedule": schedule,
    }
    if task is not None:  # what this hospital trained on, in counts (as the in-process report shows)
        labels = task.partition_labels()[rows]
        n_classes = getattr(task.data, "num_classes", 1)
        result["client_summary"] = {"name": client_party(mine[0]), "site": result["site"], "n": int(len(rows)),
                                    "class_counts": np.bincount(labels, minlength=n_classes).tolist()}
    if tested is not None:
        test, test_loss = tested
        result.update({"evaluator": True, "val": val_rows, "selected_epoch": best["epoch"], "test_loss": test_loss,
                       "test": test, "headline": task.summarise(test), "data": task.data.summary()})
    return result


def _local_state(model: PartySplitModel) -> dict:
    return {part.name: copy.deepcopy(part.state_dict()) for part, owner in model.chain if model._local(owner)}


@torch.no_grad()
def _evaluate(model: PartySplitModel, task, split: str, sizes: list[int], batch_size: int):
    """Score ``split`` at the model's data owner; other sites of the model take part, and
    sites outside it return at once. Returns ``(metrics, loss)`` at the data owner, else ``None``."""
    if not model.involves_site():
        return None
    k = int(model.data_owner.name.removeprefix("client"))
    n = sizes[k]
    owner_here = model._local(model.data_owner)
    model.eval()
    metrics = task.new_metrics() if owner_here else None
    losses = []
    for idx in torch.arange(n).split(batch_size):
        batch = task.batch(split, idx, train=False, generator=None) if owner_here else None
        out = model.predict(batch.x if batch is not None else None)
        if owner_here:
            losses.append(float(task.loss(out, batch.y)) * len(idx))
            task.update_metrics(metrics, out.float(), batch)
    model.train()
    if not owner_here:
        return None
    return metrics.aggregate(), sum(losses) / n


def assemble(cfg: Config, results: list[dict], wall_time_s: float, transport_name: str = "flare") -> dict:
    """The run's metrics (the shape of :func:`medsplit.train.loop.train`'s ``metrics.json``) from
    every site's result; each message's bytes come from its sender's site, so none counts twice."""
    evaluators = [r for r in results if r.get("evaluator")]
    if len(evaluators) != 1:
        raise RuntimeError(f"expected exactly one evaluating hospital, got {len(evaluators)}")
    ev = evaluators[0]
    losses: dict[int, dict[int, float]] = {}
    for r in results:
        for epoch, per in r["train_losses"].items():
            for k, v in per.items():
                losses.setdefault(int(epoch), {})[int(k)] = v
    history = []
    for row in ev["val"]:
        e = row["epoch"]
        for k in range(cfg.split.clients):
            name = f"client{k}" if cfg.split.clients > 1 else "client0"
            history.append({"epoch": e, "client": name, "train_loss": losses.get(e, {}).get(k)})
        history.append({"epoch": e, "client": "all", **row})
    rows = sorted((r for res in results for r in res["bytes"]),
                  key=lambda r: (r["phase"], r["epoch"], r["sender"], r["receiver"], r["kind"], r["link"]))
    test = dict(ev["test"])
    test.pop("per_image", None)  # image-level rows stay at the hospital
    return {
        "task": cfg.task, "run": cfg.run_name(), "protocol": cfg.split.protocol, "cut": cfg.split.cut,
        "clients": cfg.split.clients, "transport": transport_name, "wall_time_s": wall_time_s,
        "selected_epoch": ev["selected_epoch"], "test": test, "test_loss": ev["test_loss"], "history": history,
        "bytes": [r for r in rows if r["phase"] == "train"], "bytes_eval": [r for r in rows if r["phase"] == "eval"],
        "control_bytes": {r["site"]: r["control_bytes"] for r in results},
        "sites": [{"site": r["site"], "parties": r["parties"], "wall_time_s": r["wall_time_s"]} for r in results],
        "data": {**(ev.get("data") or {}), "clients": sorted((r["client_summary"] for r in results if "client_summary" in r),
                                                             key=lambda c: c["name"])},
        "config": cfg.to_dict(),
    }
