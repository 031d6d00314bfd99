"""Sweeps: train a grid of configurations over the cut or the number of clients, then report.

A sweep point is one training run: (axis value, protocol, partition, seed) for the split
protocols, plus the unsplit baselines (centralised, FedAvg). Each point is an ordinary
:func:`medsplit.train.loop.train` run with its own name under the sweep's folder, so a
sweep is resumable point by point:

* a point whose ``metrics.json`` exists is finished and is read back, not rerun (its
  checkpoint is deleted once it finishes; the selected weights stay in ``model.safetensors``);
* a point with a checkpoint but no metrics was interrupted and is resumed;
* a point that raises is recorded as failed (with its error) and the sweep goes on; the
  next invocation retries it;
* ``--report-only`` trains nothing: it writes the report from the points finished so far and
  lists the others as "not run" (to look at a long sweep while it runs, or to report one
  that ran out of time honestly);
* ``--jobs N`` trains N points side by side, each in its own process with its share of the
  cores, and reports each as it finishes.

At the end one HTML report (``<reports_dir>/sweep-<axis>-<task>.html``) and a JSON summary
beside it are written: the test metric (AUC for retinopathy, Dice for lungs) as mean and
standard deviation over seeds against the axis, bytes per epoch, wall time, and a table
of every point.

Command line (hooked into ``python -m medsplit`` by :func:`add_sweep_parser`)::

    python -m medsplit sweep configs/sweep-cut-retinopathy.yaml --axis cut --values 1,3,5 \\
        --seeds 0,1 --protocols sequential,splitfed --partitions iid,dirichlet [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from medsplit.atomic import write_atomic
from medsplit.config import CHOICES, Config, load_config, parse_override
from medsplit.original_study import (
    ORIGINAL_STUDY,
    ORIGINAL_STUDY_CAVEATS,
    ORIGINAL_STUDY_REPO,
)

__all__ = [
    "AXES",
    "BASELINES",
    "ORIGINAL_STUDY",
    "SPLIT_PROTOCOLS",
    "SweepPoint",
    "add_sweep_parser",
    "check_run_matches",
    "plan_points",
    "run_sweep",
    "run_sweep_command",
    "summarise_run",
    "train_points",
]

AXES = ("cut", "clients")
BASELINES = ("centralised", "fedavg")
SPLIT_PROTOCOLS = tuple(p for p in CHOICES["split.protocol"] if p not in BASELINES)
PARTITIONS = CHOICES["data.partition"]

# Config keys each point sets; an override of one of them would be silently replaced.
_SET_BY_SWEEP = {"split.protocol": "--protocols", "train.seed": "--seeds", "data.partition": "--partitions",
                 "output.name": "(named per point)", "output.runs_dir": "--out"}

TrainFn = Callable[..., Path]  # train(cfg, resume=None, quiet=False) -> run_dir


@dataclass
class SweepPoint:
    """One training run of a sweep.

    Args:
        name: run name (``output.name``), unique within the sweep.
        protocol: ``sequential`` | ``splitfed`` | ``centralised`` | ``fedavg``.
        partition: client partition scheme; ``None`` for the centralised baseline, which pools
            every client's rows and so does not depend on it.
        seed: ``train.seed``.
        value: the swept axis value; ``None`` for a baseline that does not vary with the axis
            (every baseline of a cut sweep, the centralised baseline of a clients sweep).
        overrides: the ``key=value`` overrides that make this point from the base config.
    """

    name: str
    protocol: str
    partition: str | None
    seed: int
    value: int | None
    overrides: list[str] = field(default_factory=list)

    @property
    def baseline(self) -> bool:
        return self.protocol in BASELINES


def plan_points(task: str, axis: str, values: list[int], seeds: list[int], protocols: list[str],
                partitions: list[str], baselines: bool) -> list[SweepPoint]:
    """Every point of a sweep, split points first (grouped by axis value), then baselines.

    Args:
        task: the config's task, used in run names.
        axis: ``"cut"`` or ``"clients"``.
        values, seeds, protocols, partitions: the grid.
        baselines: add the centralised (once per seed: it pools all clients, so neither the
            cut, the number of clients nor the partition changes it) and FedAvg baselines
            (per partition and seed, and per number of clients in a clients sweep).
    """
    points = []
    for v in values:
        for protocol in protocols:
            for part in partitions:
                for seed in seeds:
                    points.append(SweepPoint(
                        f"{task}-{protocol}-{axis}{v}-{part}-seed{seed}", protocol, part, seed, v,
                        [f"split.protocol={protocol}", f"split.{axis}={v}", f"data.partition={part}", f"train.seed={seed}"],
                    ))
    if baselines:
        for seed in seeds:
            points.append(SweepPoint(f"{task}-centralised-seed{seed}", "centralised", None, seed, None,
                                     ["split.protocol=centralised", f"train.seed={seed}"]))
        fedavg_values: list[int | None] = list(values) if axis == "clients" else [None]
        for v in fedavg_values:
            for part in partitions:
                for seed in seeds:
                    where = f"clients{v}-" if v is not None else ""
                    extra = [f"split.clients={v}"] if v is not None else []
                    points.append(SweepPoint(f"{task}-fedavg-{where}{part}-seed{seed}", "fedavg", part, seed, v,
                                             ["split.protocol=fedavg", *extra, f"data.partition={part}", f"train.seed={seed}"]))
    return points


# ---------------------------------------------------------------------------------------
# running


def _check_grid(axis: str, values: list[int], seeds: list[int], protocols: list[str], partitions: list[str],
                overrides: list[str]) -> None:
    if axis not in AXES:
        raise ValueError(f"unknown sweep axis {axis!r}; valid axes are {list(AXES)}")
    for what, items in (("values", values), ("seeds", seeds), ("protocols", protocols), ("partitions", partitions)):
        if not items:
            raise ValueError(f"sweep {what} must not be empty")
    if any(not isinstance(v, int) or isinstance(v, bool) for v in [*values, *seeds]):
        raise ValueError(f"sweep values and seeds must be integers, got values={values} seeds={seeds}")
    if axis == "clients" and min(values) < 1:
        raise ValueError(f"numbers of clients must be >= 1, got {values}")
    for p in protocols:
        if p not in SPLIT_PROTOCOLS:
            hint = " (baselines run by default; --no-baselines drops them)" if p in BASELINES else ""
            raise ValueError(f"unknown split protocol {p!r}; valid protocols are {list(SPLIT_PROTOCOLS)}{hint}")
    for p in partitions:
        if p not in PARTITIONS:
            raise ValueError(f"unknown partition {p!r}; valid partitions are {list(PARTITIONS)}")
    controlled = {**_SET_BY_SWEEP, f"split.{axis}": "--values"}
    for item in overrides:
        key, _ = parse_override(item)
        if key in controlled:
            raise ValueError(f"override {item!r} sets a key the sweep sets per point; use {controlled[key]} instead")


def _point_config(base_config: Path, overrides: list[str], point: SweepPoint, out_dir: Path) -> Config:
    cfg = load_config(base_config, [*overrides, *point.overrides])
    # Paths are set on the object, not as overrides, so no YAML parsing can mangle them.
    cfg.output.name = point.name
    cfg.output.runs_dir = str(out_dir / "runs")
    cfg.output.reports_dir = str(out_dir / "reports")  # per-run reports stay with the sweep
    return cfg


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
            values = yaml.safe_load(saved.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise RuntimeError(f"{saved} is not a readable config ({str(e).splitlines()[0]}); remove {run_dir} or {remedy}") from e
        if not isinstance(values, dict):
            raise RuntimeError(f"{saved} does not hold a config mapping; remove {run_dir} or {remedy}")
        differ = _config_diff(values, cfg.to_dict(), Config().to_dict())
        if differ:
            raise RuntimeError(f"{run_dir} holds a run of a different config (differs in {differ[:5]}); "
                               f"remove it or {remedy}")


def same_run_key(point: SweepPoint, axis: str) -> tuple | None:
    """Points with equal keys are the same computation. With one client, every partition scheme
    gives that client the whole training set (and batches depend only on seed, epoch and
    client), so a clients sweep's one-client points differ only by name across partitions:
    the sweep trains the first and reuses it for the others."""
    if axis == "clients" and point.value == 1 and point.partition is not None:
        return (point.protocol, point.seed)
    return None


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
    import torch

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
        from medsplit.train.loop import train as train_fn
    if jobs <= 1 or len(configs) <= 1:
        for k, cfg in enumerate(configs):
            yield k, _try_point(cfg, train_fn, quiet)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_limit_threads, initargs=(threads or threads_per_job(jobs),)) as pool:
        futures = {pool.submit(_try_point, cfg, train_fn, True): k for k, cfg in enumerate(configs)}
        for future in as_completed(futures):
            k = futures[future]
            try:
                yield k, future.result()
            except Exception as e:  # the worker itself died (killed for memory, say)
                yield k, _failed(e)


def summarise_run(record: dict) -> dict[str, Any]:
    """What a sweep (or a benchmark) keeps of a run's metrics.json: headline metrics, training
    bytes per epoch (in all and by kind), time."""
    from medsplit.report.index import run_headline

    headline = run_headline(record)
    (metric_name, metric), (second_name, second) = list(headline.items())[:2]
    interval = (record.get("test_intervals") or {}).get(metric_name.lower()) or {}
    epochs = int(((record.get("config") or {}).get("train") or {}).get("epochs") or 1)
    rows = [r for r in record.get("bytes") or [] if r.get("phase", "train") == "train"]
    by_kind: dict[str, float] = {}
    for r in rows:
        by_kind[r["kind"]] = by_kind.get(r["kind"], 0.0) + r["bytes"] / epochs
    return {
        "metric_name": metric_name, "metric": metric, "metric2_name": second_name, "metric2": second,
        # 95% patient-bootstrap interval of the test metric (medsplit.uncertainty); None in older runs
        "metric_low": interval.get("low"), "metric_high": interval.get("high"),
        "bytes_per_epoch": sum(by_kind.values()), "bytes_per_epoch_by_kind": by_kind,
        "wall_time_s": record.get("wall_time_s"), "selected_epoch": record.get("selected_epoch"),
        "device": record.get("device"), "synthetic": bool((record.get("data") or {}).get("synthetic")),
        "cut": record.get("cut"), "clients": record.get("clients"),
        "client_mix": client_mix(record),
    }


def client_mix(record: dict) -> str | None:
    """What each hospital held, in a few characters per client, so a non-IID point shows how
    skewed it was: images and the share of the positive class (binary targets), or images per
    group (site / view) when clients hold groups. ``None`` for a run that does not say."""
    clients = (record.get("data") or {}).get("clients") or []
    if len(clients) < 2:
        return None
    scheme = ((record.get("config") or {}).get("data") or {}).get("partition")
    cells = []
    for c in clients:
        counts = c.get("class_counts") or []
        if scheme == "group" and c.get("groups"):
            cells.append("+".join(f"{g} {n}" for g, n in c["groups"].items()))
        elif len(counts) == 2 and sum(counts):
            cells.append(f"{c['n']} ({counts[1] / sum(counts):.0%} pos)")
        else:
            cells.append(str(c["n"]))
    return " | ".join(cells)


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
        protocols: split protocols (``sequential``, ``splitfed``).
        partitions: client partition schemes (``iid``, ``dirichlet``, ...).
        baselines: also run the centralised and FedAvg baselines.
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
    _check_grid(axis, values, seeds, protocols, partitions, overrides)
    base = load_config(base_config, overrides)
    out_dir = Path(out_dir)
    points = plan_points(base.task, axis, values, seeds, protocols, partitions, baselines)
    # Build every config before training anything: a bad key fails now, not an hour in.
    configs = [_point_config(Path(base_config), overrides, p, out_dir) for p in points]

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

    return _write_outputs(base, axis, values, seeds, protocols, partitions, baselines, Path(base_config), overrides,
                          out_dir, results)


# ---------------------------------------------------------------------------------------
# aggregation and report


def _mean_std(xs: list[float | None]) -> tuple[float | None, float | None, int]:
    """Mean and sample standard deviation (ddof=1; ``None`` with a single value) of the defined values."""
    vals = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    if not vals:
        return None, None, 0
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
    return mean, std, len(vals)


def _groups(results: list[dict]) -> list[dict[str, Any]]:
    """Points pooled over seeds: one row per (protocol, partition, axis value)."""
    keyed: dict[tuple, list[dict]] = {}
    for r in results:
        keyed.setdefault((r["protocol"], r["partition"], r["value"]), []).append(r)
    rows = []
    for (protocol, partition, value), members in keyed.items():
        ok = [m for m in members if m["status"] not in ("failed", "not run")]
        metric, metric_std, n = _mean_std([m.get("metric") for m in ok])
        metric2, metric2_std, _ = _mean_std([m.get("metric2") for m in ok])
        bpe, _, _ = _mean_std([m.get("bytes_per_epoch") for m in ok])
        wall, wall_std, _ = _mean_std([m.get("wall_time_s") for m in ok])
        halfwidth, _, _ = _mean_std([(m["metric_high"] - m["metric_low"]) / 2 for m in ok
                                     if m.get("metric_low") is not None and m.get("metric_high") is not None])
        rows.append({
            "protocol": protocol, "partition": partition, "value": value, "baseline": protocol in BASELINES,
            "seeds": len(members), "finished": len(ok), "n_metric": n, "metric": metric, "metric_std": metric_std,
            "metric2": metric2, "metric2_std": metric2_std, "bytes_per_epoch": bpe,
            "mb_per_epoch": None if bpe is None else bpe / 1e6, "wall_time_s": wall,
            "wall_time_std": wall_std, "ci_halfwidth": halfwidth,
        })
    return rows


def compare_to(g: dict, ref: dict | None) -> str | None:
    """``"-0.012 (within test-set CI)"``: ``g``'s mean metric against ``ref``'s, judged by the
    points' 95% test-set intervals (mean half-widths over seeds, combined as independent:
    sqrt(w1^2 + w2^2)). Within: this test set cannot tell the two apart."""
    if ref is None or g["metric"] is None or ref["metric"] is None:
        return None
    diff = g["metric"] - ref["metric"]
    if g is ref:
        return "reference"
    if g.get("ci_halfwidth") is None or ref.get("ci_halfwidth") is None:
        return f"{diff:+.3f}"
    limit = math.hypot(g["ci_halfwidth"], ref["ci_halfwidth"])
    return f"{diff:+.3f} ({'within' if abs(diff) <= limit else 'beyond'} test-set CI)"


def _series_label(g: dict) -> str:
    return g["protocol"] if g["partition"] is None else f"{g['protocol']}, {g['partition']}"


def _axis_figure(groups: list[dict], xs: list[int], key: str, std_key: str | None, xlabel: str, ylabel: str,
                 title: str, logy: bool = False):
    """Split protocols (and baselines that vary with the axis) as lines with error bars over
    ``xs``; baselines that do not vary with it as horizontal lines with a +-std band."""
    from medsplit.report.figures import line_plot

    series: dict[str, list[float | None]] = {}
    yerr: dict[str, list[float | None]] = {}
    flat = []
    for g in groups:
        if g["value"] is None:
            flat.append(g)
            continue
        label = _series_label(g)
        series.setdefault(label, [None] * len(xs))[xs.index(g["value"])] = g[key]
        if std_key:
            yerr.setdefault(label, [None] * len(xs))[xs.index(g["value"])] = g[std_key]
    fig = line_plot(xs, series, xlabel, ylabel, title=title, yerr=yerr or None)
    ax = fig.axes[0]
    for k, g in enumerate(flat):
        if g[key] is None or (logy and g[key] <= 0):
            continue
        colour = f"C{(len(series) + k) % 10}"
        ax.axhline(g[key], color=colour, linestyle="--", linewidth=1.4, label=f"{_series_label(g)} (baseline)")
        if std_key and g.get(std_key):
            ax.axhspan(g[key] - g[std_key], g[key] + g[std_key], color=colour, alpha=0.12, linewidth=0)
    ax.set_xticks(xs)
    if logy and any(v is not None and v > 0 for vs in series.values() for v in vs):
        ax.set_yscale("log")
    if series or flat:
        # outside the axes: with error bars "best" placement still covered points
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
        w, h = fig.get_size_inches()
        fig.set_size_inches(w + 2.0, h)
    return fig


def _original_study_section(report, task: str, axis: str, metric_name: str, groups: list[dict]) -> None:
    report.section("The original study's numbers")
    rows = ORIGINAL_STUDY.get((task, axis), [])
    if not rows:
        report.banner(f"The original study ({ORIGINAL_STUDY_REPO}) published no number for a {task} sweep over "
                      f"the {axis}; there is nothing to set beside this one.", level="info")
        return
    if task in ORIGINAL_STUDY_CAVEATS:
        report.text(ORIGINAL_STUDY_CAVEATS[task])
    # The study's metric is named per row so the table never passes it off as ours.
    theirs = sorted({r.get("metric_name", metric_name) for r in rows})
    if theirs != [metric_name]:
        report.banner(f"Different metrics: the original study reports {', '.join(theirs)}; this sweep reports "
                      f"test {metric_name}. They stand side by side for reference only and are not comparable.")
    ours = {(g["protocol"], g["value"]): g for g in groups if g["partition"] in ("iid", None)}
    with_bytes = any(r.get("bytes_per_epoch") is not None for r in rows)
    table = []
    for r in rows:
        g = ours.get((r.get("protocol"), r.get("value")))
        row = {axis: r.get("value"), "protocol": r.get("protocol"),
               "original metric": r.get("metric_name", metric_name), "original value": r.get("metric"),
               "original epochs": r.get("epochs"), f"{metric_name} (medsplit, iid, mean)": g["metric"] if g else None}
        if with_bytes:
            row["bytes/epoch (original)"] = r.get("bytes_per_epoch")
        row.update({"printed (original)": r.get("printed"), "note": r.get("note"), "source": r.get("source")})
        table.append(row)
    report.table(table, caption=f"The original study's printed numbers ({ORIGINAL_STUDY_REPO}) beside this "
                                "sweep's (iid partition); each row is one printout.")


def _write_outputs(base: Config, axis: str, values: list[int], seeds: list[int], protocols: list[str],
                   partitions: list[str], baselines: bool, base_config: Path, overrides: list[str], out_dir: Path,
                   results: list[dict]) -> Path:
    from medsplit.report.html import Report

    task = base.task
    metric_name = next((r["metric_name"] for r in results if r.get("metric_name")),
                       "Dice" if task == "lungs" else "AUC")
    metric2_name = next((r["metric2_name"] for r in results if r.get("metric2_name")), "")
    xs = sorted(values)
    groups = _groups(results)
    failed = [r for r in results if r["status"] == "failed"]
    not_run = [r for r in results if r["status"] == "not run"]
    split_groups = [g for g in groups if not g["baseline"] and g["metric"] is not None]
    best = max(split_groups, key=lambda g: g["metric"], default=None)
    central = next((g for g in groups if g["protocol"] == "centralised"), None)
    xlabel = "cut (CUT=N)" if axis == "cut" else "number of clients"
    # Fixed keys (the metric named separately) so the index shows one set of columns for all sweeps.
    headline = {
        "task": task, "axis": axis, "metric": metric_name, "points": len(results), "failed": len(failed),
        "not run": len(not_run),
        "best split (mean)": best["metric"] if best else None,
        "best split at": f"{_series_label(best)}, {axis} {best['value']}" if best else None,
        "centralised (mean)": central["metric"] if central else None,
        "centralised vs best split": compare_to(central, best) if central and best else None,
    }

    report = Report(f"medsplit sweep: {task}, {metric_name} against {xlabel}",
                    subtitle=f"{base_config} | {len(results)} runs in {out_dir}")
    if failed:
        report.banner(f"{len(failed)} of {len(results)} runs failed; they are left out of every mean below and "
                      "listed under 'Failed runs'. Rerunning the same sweep retries only them.", level="danger")
    if not_run:
        report.banner(f"{len(not_run)} of {len(results)} planned runs have not been run (this report was written "
                      "with --report-only); means use the finished seeds only, and the table below says how many "
                      "each has.", level="warning")
    if any(r.get("synthetic") for r in results):
        report.banner("Synthetic data: these images were generated, not acquired. The numbers test the software; "
                      "they say nothing about real patients.")
    report.cards({k: v for k, v in {
        "runs": str(len(results)), "failed": str(len(failed)),
        **({"not run": str(len(not_run))} if not_run else {}),
        f"best split {metric_name} (mean, chosen on test results)": headline["best split (mean)"],
        "best split at (chosen on test results)": headline["best split at"],
        f"centralised {metric_name} (mean)": headline["centralised (mean)"],
    }.items() if v is not None}, caption="The best split is the setting with the highest mean test score: it is "
                                         "chosen on the test results themselves (no validation split), so its score "
                                         "is optimistic as an estimate for a new cohort.")
    if headline["centralised vs best split"]:
        report.text(f"Centralised minus best split: {headline['centralised vs best split']}. A difference 'within "
                    "test-set CI' is smaller than what this test set can resolve (see 'Mean over seeds').")
    report.section("What was run")
    join = lambda items: ", ".join(map(str, items)) or "none"
    report.kv({"task": task, "axis": axis, "values": join(xs), "seeds": join(seeds), "protocols": join(protocols),
               "partitions": join(partitions), "baselines": "centralised, fedavg" if baselines else "none",
               "base config": str(base_config), "overrides": " ".join(overrides) or "none",
               "runs folder": str(out_dir / "runs"),
               "devices": join(sorted({r["device"] for r in results if r.get("device")})),
               "model": base.model.name, "image size": base.data.img_size, "epochs": base.train.epochs})

    report.section(f"{metric_name} against {xlabel}")
    report.figure(_axis_figure(groups, xs, "metric", "metric_std", xlabel, f"test {metric_name}",
                               f"Test {metric_name}: mean \u00b1 std over {len(seeds)} seed(s)"),
                  caption="Lines: split protocols (and FedAvg in a clients sweep), error bars = sample std over seeds. "
                          "Dashed lines and bands: baselines that do not depend on the axis (mean \u00b1 std).")
    report.section("Bytes per training epoch")
    report.figure(_axis_figure(groups, xs, "mb_per_epoch", None, xlabel, "MB per epoch, all links (10^6 bytes)",
                               "Traffic per training epoch", logy=True),
                  caption="Every byte that crossed between parties during training (activations, gradients, labels, "
                          "weights), counted by the channel; the centralised baseline sends none.")
    report.section("Wall time")
    report.figure(_axis_figure(groups, xs, "wall_time_s", "wall_time_std", xlabel, "wall time per run (s)",
                               "Wall time of a whole run"),
                  caption="Includes data loading, validation every epoch and testing; in-process runs, so no "
                          "network time (see benchmarks/link_time.py for link estimates).")

    report.section("Mean over seeds")
    report.table([{"protocol": g["protocol"], "partition": g["partition"], axis: g["value"], "runs": g["seeds"],
                   "finished": g["finished"], metric_name: g["metric"], "std": g["metric_std"],
                   "test-set CI \u00b1": g["ci_halfwidth"], "vs best split": compare_to(g, best),
                   metric2_name: g["metric2"], f"{metric2_name} std": g["metric2_std"],
                   "MB/epoch": g["mb_per_epoch"],
                   "wall time (s)": g["wall_time_s"]} for g in groups],
                 caption="std: sample standard deviation over seeds (empty with one seed): training randomness. "
                         "test-set CI \u00b1: half-width of each run's 95% patient-bootstrap interval, mean over "
                         "seeds: how much the test set alone leaves open. vs best split: difference to the best "
                         f"split point ({headline['best split at']}); 'within test-set CI' when it is smaller than "
                         "the two points' half-widths combined (sqrt(w1\u00b2 + w2\u00b2)), i.e. this test set cannot "
                         "tell them apart. MB = 10^6 bytes.",
                 float_fmt="{:.4g}")
    report.section("Every run")
    report.table([{"run": r["name"], "protocol": r["protocol"], "partition": r["partition"], axis: r["value"],
                   "seed": r["seed"], "status": r["status"], metric_name: r.get("metric"),
                   "95% CI": None if r.get("metric_low") is None else f"{r['metric_low']:.3f}\u2013{r['metric_high']:.3f}",
                   metric2_name: r.get("metric2"), "tested epoch": r.get("selected_epoch"),
                   "clients hold": r.get("client_mix"),
                   "MB/epoch": None if r.get("bytes_per_epoch") is None else r["bytes_per_epoch"] / 1e6,
                   "wall time (s)": r.get("wall_time_s")} for r in results],
                 # one partition for the whole sweep: the column would repeat it on every row
                 columns=None if len(partitions) > 1 else [
                     "run", "protocol", axis, "seed", "status", metric_name, "95% CI", metric2_name, "tested epoch",
                     "clients hold", "MB/epoch", "wall time (s)"],
                 caption=f"Each run's folder is {out_dir / 'runs'}/<run>. 95% CI: the run's patient-bootstrap "
                         "interval of the test metric. tested epoch: the epoch whose model was tested (best on validation). status: ran (trained now), resumed (finished from a checkpoint), skipped (finished "
                         "earlier, read back), same as <run> (one client holds the whole training set under "
                         "every partition, so the point is that run), failed, not run (--report-only). "
                         "clients hold: images per hospital and their share of the positive class (or, split "
                         "by group, images per site or view): how non-IID the point was.",
                 float_fmt="{:.4g}")
    if failed:
        report.section("Failed runs")
        report.table([{"run": r["name"], "error": r["error"]} for r in failed])
        for r in failed:
            report.code(r.get("traceback") or r["error"], caption=r["name"])
    _original_study_section(report, task, axis, metric_name, groups)
    report.section("Base configuration")
    report.code(base.to_yaml(), caption=f"{base_config} with the sweep's overrides; each run's own config is "
                                        "saved in its run folder.")

    reports_dir = Path(base.output.reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    html = write_atomic(reports_dir / f"sweep-{axis}-{task}.html", report.render())
    summary = {
        "kind": "sweep", "title": report.title, "created": datetime.now().isoformat(timespec="seconds"),
        "task": task, "axis": axis, "metric": metric_name, "metric2": metric2_name, "values": xs, "seeds": seeds,
        "protocols": protocols, "partitions": partitions, "baselines": baselines, "base_config": str(base_config),
        "overrides": overrides, "out_dir": str(out_dir), "headline": headline, "groups": groups, "points": results,
        "original_study": ORIGINAL_STUDY.get((task, axis), []),
    }
    write_atomic(html.with_suffix(".json"), json.dumps(summary, indent=2, default=str))
    return html


# ---------------------------------------------------------------------------------------
# command line


class _IntermixedParser(argparse.ArgumentParser):
    """Lets ``key=value`` overrides come after the options (``sweep CFG --axis cut a=1``).

    Plain argparse fills a ``nargs='*'`` positional at the first positional it meets, so
    overrides placed after options are rejected as unrecognised; intermixed parsing
    collects them all.
    """

    _inner = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inner:  # parse_known_intermixed_args calls back into here
            return super().parse_known_args(args, namespace)
        self._inner = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,3,5, got {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _choice_list(valid: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in items if v not in valid]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; valid choices are {list(valid)}")
        return items

    return parse


def add_sweep_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``sweep`` command to ``python -m medsplit``'s sub-commands; returns its parser."""
    # add_parser() builds the sub-parser with the action's parser class; this one needs its own.
    default_class, subparsers._parser_class = subparsers._parser_class, _IntermixedParser
    try:
        p = subparsers.add_parser(
            "sweep", help="train a grid over the cut or the number of clients and report mean +- std over seeds",
            description=__doc__.split("\n\n")[0] + " Resumable: rerun the same command to finish or retry.",
        )
    finally:
        subparsers._parser_class = default_class
    p.add_argument("config", help="YAML training config every run starts from (configs/sweep-*.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides for every run, e.g. train.epochs=2")
    p.add_argument("--axis", required=True, choices=AXES, help="what varies: the cut or the number of clients")
    p.add_argument("--values", required=True, type=_int_list, help="comma-separated cuts or client counts, e.g. 1,3,5")
    p.add_argument("--seeds", type=_int_list, default=[0], help="comma-separated seeds (default 0)")
    p.add_argument("--protocols", type=_choice_list(SPLIT_PROTOCOLS), default=["sequential"],
                   help=f"comma-separated split protocols from {','.join(SPLIT_PROTOCOLS)} (default sequential)")
    p.add_argument("--partitions", type=_choice_list(PARTITIONS), default=["iid"],
                   help=f"comma-separated partitions from {','.join(PARTITIONS)} (default iid)")
    p.add_argument("--no-baselines", dest="baselines", action="store_false",
                   help="skip the centralised and FedAvg baselines")
    p.add_argument("--out", default=None, help="folder for the runs (default <output.runs_dir>/sweeps/<axis>-<task>)")
    p.add_argument("--jobs", type=_positive_int, default=1,
                   help="points trained side by side, each in its own process with cpu_count/jobs threads "
                        "(default 1; on a 2-core CPU, 2 finishes a sweep sooner)")
    p.add_argument("--verbose", action="store_true", help="show every run's progress bars (with --jobs 1)")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: report the finished points and list the others as not run")
    return p


def run_sweep_command(args: argparse.Namespace) -> int:
    """Run the sweep the parsed arguments describe; 0 when every run finished, 1 when some failed."""
    base = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path(base.output.runs_dir) / "sweeps" / f"{args.axis}-{base.task}"
    html = run_sweep(Path(args.config), args.axis, args.values, args.seeds, args.protocols, args.partitions,
                     args.baselines, out, list(args.overrides), quiet=not args.verbose, report_only=args.report_only,
                     jobs=args.jobs)
    summary = json.loads(html.with_suffix(".json").read_text())
    failed = summary["headline"]["failed"]
    print(f"report: {html}\nsummary: {html.with_suffix('.json')}\nruns: {out}")
    if failed:
        print(f"{failed} run(s) failed; see the report. Rerun the same command to retry them.")
    return 1 if failed else 0
