"""Running a sweep's points: train, resume or read back each one, alone or side by side in
worker processes, and check that a run found on disk is the run planned.

* a point whose ``metrics.json`` exists is finished and is read back, not rerun (its
  checkpoint is deleted once it finishes; the selected weights stay in ``model.safetensors``);
* a point with a checkpoint but no metrics was interrupted and is resumed;
* a point that raises is recorded as failed (with its error) and the sweep goes on; the
  next invocation retries it.

:func:`run_sweep` plans the points (:mod:`medsplit.sweep.plan`), runs them, summarises
each (:mod:`medsplit.sweep.summarise`) and writes the report
(:mod:`medsplit.report.sweep_report`). The benchmarks reuse :func:`train_points`, :func:`check_run_matches` and
:func:`threads_per_job` for their own grids.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from medsplit.config import Config, load_config
from medsplit.sweep.plan import check_grid, plan_points, point_config, same_run_key
from medsplit.sweep.summarise import summarise_run
from medsplit.yaml_file import load_yaml

__all__ = ["Outcome", "TrainFn", "check_run_matches", "read_metrics", "run_sweep", "threads_per_job", "train_points"]

TrainFn = Callable[..., Path]  # train(cfg, resume=None, quiet=False) -> run_dir


def _config_diff(saved: dict, planned: dict, defaults: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts.

    A key missing from ``saved`` whose planned value is the schema default is not a
    difference: runs saved before that key existed were trained with that behaviour.
    """
    keys = []
    for k in sorted(set(saved) | set(planned)):
        a, b = saved.get(k), planned.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _config_diff(a, b, defaults.get(k) or {}, f"{prefix}{k}.")
        elif k not in saved and k in defaults and b == defaults[k]:
            continue
        elif a != b:
            keys.append(f"{prefix}{k}")
    return keys


def check_run_matches(run_dir: Path, cfg: Config, remedy: str = "give the sweep another --out") -> None:
    """Raise if ``run_dir`` holds a run (finished or not) of a config other than ``cfg``:
    reusing it would put wrong numbers in a report."""
    saved = Path(run_dir) / "config.yaml"
    if saved.exists():
        try:
            values = load_yaml(saved.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise RuntimeError(f"{saved} is not a readable config ({str(e).splitlines()[0]}); remove {run_dir} or {remedy}") from e
        if not isinstance(values, dict):
            raise RuntimeError(f"{saved} does not hold a config mapping; remove {run_dir} or {remedy}")
        differ = _config_diff(values, cfg.to_dict(), Config().to_dict())
        if differ:
            raise RuntimeError(f"{run_dir} holds a run of a different config (differs in {differ[:5]}); "
                               f"remove it or {remedy}")

def read_metrics(run_dir: Path) -> dict | None:
    """A run's metrics.json, or ``None`` when it has none. A file that exists but does not parse
    (a kill mid-write before writes were atomic, a disk that filled up) raises, naming the file."""
    path = Path(run_dir) / "metrics.json"
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is unreadable ({e})") from e
    if not isinstance(record, dict):
        raise ValueError(f"{path} is unreadable (holds {type(record).__name__}, not a JSON object)")
    return record


def _finished(run_dir: Path) -> bool:
    try:
        return read_metrics(run_dir) is not None
    except ValueError:
        return False


def _run_point(cfg: Config, train_fn: TrainFn, quiet: bool) -> tuple[str, Path]:
    """Train, resume or skip one point; returns (what happened, run directory)."""
    # imports torch: a sweep worker loads this module and sets its threads before torch loads
    from medsplit.train.checkpoint import CHECKPOINT

    run_dir = Path(cfg.output.runs_dir) / cfg.run_name()
    check_run_matches(run_dir, cfg)
    try:
        if read_metrics(run_dir) is not None:
            return "skipped", run_dir
    except ValueError as e:  # a finished-looking point whose result cannot be read: train it again
        print(f"sweep: {e}; retraining {cfg.run_name()}", file=sys.stderr, flush=True)
        (run_dir / "metrics.json").unlink()
    if (run_dir / CHECKPOINT).exists():
        status, run_dir = "resumed", Path(train_fn(cfg, resume=run_dir, quiet=quiet))
    elif run_dir.is_dir() and any(run_dir.iterdir()):
        # what a run killed before its first checkpoint (or an unreadable result) left: the config
        # matched above, so the point starts afresh in its own folder
        status, run_dir = "ran", Path(train_fn(cfg, quiet=quiet, overwrite=True))
    else:
        status, run_dir = "ran", Path(train_fn(cfg, quiet=quiet))
    # A finished point is never resumed (its metrics.json marks it done) and keeps its weights in
    # model.safetensors, so its checkpoint (weights plus optimiser state, ~330 MB for ResNet-34)
    # is dead weight: a 100-run sweep that kept them filled a 60 GB disk.
    if (run_dir / "metrics.json").exists():
        (run_dir / CHECKPOINT).unlink(missing_ok=True)
    return status, run_dir


Outcome = tuple[str, Path | None, tuple[str, str] | None]  # (status, run dir, (error, traceback) or None)


def threads_per_job(jobs: int) -> int:
    """Each of ``jobs`` side-by-side runs gets an equal share of the cores (at least one)."""
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


def _failed(e: BaseException) -> Outcome:
    return "failed", None, (f"{type(e).__name__}: {e}", "".join(traceback.format_exception(e)[-6:]))


def _try_point(cfg: Config, train_fn: TrainFn, quiet: bool) -> Outcome:
    try:
        status, run_dir = _run_point(cfg, train_fn, quiet)
        return status, run_dir, None
    except Exception as e:  # one broken point must not cost the others
        return _failed(e)


def _limit_threads(threads: int) -> None:
    """Worker start-up: each run gets its share of the cores, so N runs do not fight over them."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch  # imports torch: a sweep worker loads this module and sets its threads before torch loads

    torch.set_num_threads(threads)


def train_points(configs: list[Config], train_fn: TrainFn | None = None, quiet: bool = True, jobs: int = 1,
                 threads: int | None = None):
    """Train, resume or read back every config (one run each); yield ``(index, outcome)``, where
    an outcome is ``(status, run_dir, None)`` or ``("failed", None, (error, traceback))``.

    With ``jobs <= 1`` the runs go in order in this process. Otherwise they run in ``jobs`` worker
    processes and are yielded as they finish. Workers are spawned (not forked: a forked torch
    with live threads can deadlock) and take ``threads`` threads each (default
    ``cpu_count // jobs``). Their training progress bars are hidden, since several would overwrite each
    other; each run still writes its checkpoint every epoch, so an interrupted batch resumes.
    """
    if train_fn is None:
        # imports torch: a sweep worker loads this module and sets its threads before torch loads
        from medsplit.train.loop import train as train_fn
    if jobs <= 1 or len(configs) <= 1:
        for k, cfg in enumerate(configs):
            yield k, _try_point(cfg, train_fn, quiet)
        return

    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_limit_threads, initargs=(threads or threads_per_job(jobs),)) as pool:
        futures = {pool.submit(_try_point, cfg, train_fn, True): k for k, cfg in enumerate(configs)}
        for future in as_completed(futures):
            k = futures[future]
            try:
                yield k, future.result()
            except Exception as e:  # the worker itself died (killed for memory, say)
                yield k, _failed(e)


def run_sweep(base_config: Path, axis: str, values: list[int], seeds: list[int], protocols: list[str],
              partitions: list[str], baselines: bool, out_dir: Path, overrides: list[str], *,
              train_fn: TrainFn | None = None, quiet: bool = True, report_only: bool = False,
              jobs: int = 1) -> Path:
    """Run (or finish) a sweep and write its report; returns the HTML report's path.

    Args:
        base_config: YAML training config every point starts from.
        axis: ``"cut"`` or ``"clients"``.
        values: cut numbers or numbers of clients.
        seeds: ``train.seed`` values; the report shows mean and std over them.
        protocols: split protocols (``sequential``, ``splitfed``, ...: any registered protocol
            that is not a baseline).
        partitions: client partition schemes (``iid``, ``dirichlet``, ...).
        baselines: also run the registered baselines (centralised, FedAvg).
        out_dir: folder for the points' runs (``out_dir/runs/<name>``) and per-run reports.
        overrides: ``key=value`` overrides applied to every point (not the keys the sweep sets).
        train_fn: the training function, ``train(cfg, resume=None, quiet=...) -> run_dir``;
            defaults to :func:`medsplit.train.loop.train` (tests pass a fake).
        quiet: hide each run's progress bars and prints.
        report_only: train nothing; points without a finished run are reported as "not run".
        jobs: points trained side by side, each in its own process with ``cpu_count // jobs``
            threads (``train_fn`` must then be picklable: a module-level function).
    """
    values, seeds = list(dict.fromkeys(values)), list(dict.fromkeys(seeds))
    protocols, partitions = list(dict.fromkeys(protocols)), list(dict.fromkeys(partitions))
    overrides = list(overrides)
    check_grid(axis, values, seeds, protocols, partitions, overrides)
    base = load_config(base_config, overrides)
    out_dir = Path(out_dir)
    points = plan_points(base.task, axis, values, seeds, protocols, partitions, baselines)
    # Build every config before training anything: a bad key fails now, not an hour in.
    configs = [point_config(Path(base_config), overrides, p, out_dir) for p in points]

    # Decide every point's fate first, so the points to train can run side by side.
    results: list[dict[str, Any]] = []
    to_train: list[int] = []
    twin_of: dict[int, int] = {}  # row -> the earlier row that holds the same run
    first_of: dict[tuple, int] = {}  # same_run_key -> the first row with that key
    for i, (point, cfg) in enumerate(zip(points, configs)):
        row: dict[str, Any] = {**asdict(point), "baseline": point.baseline, "run_dir": str(Path(cfg.output.runs_dir) / cfg.run_name())}
        row.pop("overrides")
        finished = _finished(Path(row["run_dir"]))
        key = same_run_key(point, axis)
        if key is not None and key in first_of and not finished:
            twin_of[i] = first_of[key]
        elif report_only and not finished:
            row.update(status="not run", error=None)
        else:
            to_train.append(i)
        if key is not None:
            first_of.setdefault(key, i)
        results.append(row)

    print(f"sweep: {len(points)} points; {len(to_train)} to train or read back"
          + (f", {len(twin_of)} the same run as another point" if twin_of else "")
          + (f", {len(points) - len(to_train) - len(twin_of)} not run (--report-only)" if report_only else "")
          + (f"; {jobs} side by side, {threads_per_job(jobs)} thread(s) each" if jobs > 1 and len(to_train) > 1 else ""),
          flush=True)
    outcomes = train_points([configs[i] for i in to_train], train_fn, quiet, jobs)
    for done, (k, (status, run_dir, error)) in enumerate(outcomes, 1):
        row = results[to_train[k]]
        if error is None:
            try:
                record = read_metrics(run_dir)
                if record is None:
                    raise ValueError(f"{run_dir / 'metrics.json'} is missing after training")
            except ValueError as e:
                status, error = "failed", (str(e), "")
        if error is None:
            row.update(status=status, error=None, **summarise_run(record))
            shown = row["metric"]
            what = f"{status}, {row['metric_name']}={shown:.4f}" if shown is not None else f"{status}, {row['metric_name']} undefined"
        else:  # one broken point must not cost the rest of the sweep
            row.update(status="failed", error=error[0], traceback=error[1])
            what = f"FAILED: {row['error']}"
        print(f"[{done}/{len(to_train)}] {row['name']}: {what}", flush=True)
    for i, j in twin_of.items():
        row, twin = results[i], results[j]
        shared = {k: v for k, v in twin.items() if k not in row or k == "run_dir"}
        unfinished = twin["status"] in ("failed", "not run")
        row.update(shared, status=twin["status"] if unfinished else f"same as {twin['name']}",
                   same_as=twin["name"], error=twin.get("error"))

    # imported here: the report module imports this package's summaries (and matplotlib)
    from medsplit.report.sweep_report import write_sweep_report

    return write_sweep_report(base, axis, values, seeds, protocols, partitions, baselines, Path(base_config),
                              overrides, out_dir, results)
