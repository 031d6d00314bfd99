"""Protocols compared on real data: split (sequential relay, SplitFed) against centralised and
FedAvg, several seeds each, mean +- std of the test metrics of the model selected on validation.

    MEDSPLIT_DATA=../shared/data python benchmarks/results_protocols.py --config configs/results-retinamnist.yaml --tag retinamnist
    MEDSPLIT_DATA=../shared/data python benchmarks/results_protocols.py --config configs/results-lungs-sites.yaml --tag lungs-sites

Each (protocol, seed) is one ordinary medsplit run (with its report) under ``--runs-dir``;
the sweeps' runner reads a finished run back and resumes an interrupted one, so the study can
be stopped and restarted. Runs go one after another (``--jobs 1``) on ``--threads`` threads.
Retinopathy runs report test AUC and accuracy; lung runs the mean test Dice, pooled and per
site (``test_by_group``, when the data source combines sites). Prints a table and writes
``benchmarks/results/results-<tag>.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from medsplit.config import load_config
from medsplit.sweep.study_file import exit_code, finished_runs, plan_run, train_study, write_study
from medsplit.tasks import TASKS
from medsplit.train.protocols import PROTOCOL_NAMES

RESULTS = Path(__file__).resolve().parent / "results"


def _list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def run_scores(metrics: dict) -> dict[str, float]:
    """The test numbers a study keeps of one run: ``auc``/``accuracy`` (classification) or
    ``dice`` pooled and ``dice@<site>`` per site (segmentation)."""
    test = metrics["test"]
    task = TASKS[metrics["task"]]
    if not task.per_image_metric:  # classification: the index's columns (AUC, accuracy)
        return {key: float(test[key]) for _, key in task.index_columns}
    key = task.primary_metric  # segmentation: the per-image mean, pooled and per site
    out = {key: float(test[key]["mean"])}
    for site, m in (metrics.get("test_by_group") or {}).items():
        out[f"{key}@{site}"] = float(m[key]["mean"])
    return out


def run_intervals(metrics: dict) -> dict[str, dict]:
    """The run's 95% bootstrap intervals over test patients (``test_intervals`` of its
    ``metrics.json``), per metric: ``{"low", "high", "level", "n_patients"}``; empty if none."""
    found = metrics.get("test_intervals") or {}
    return {k: {"low": v["low"], "high": v["high"], "level": found.get("level"), "n_patients": found.get("n_patients")}
            for k, v in found.items() if isinstance(v, dict) and v.get("low") is not None}


def run_validation(metrics: dict) -> dict[str, float]:
    """The validation numbers of the epoch the run selected (what a recipe is chosen on, never the
    test split): each ``val_<metric>`` of that epoch for the metrics the study scores."""
    wanted = {k for k in run_scores(metrics) if "@" not in k}
    row = next((r for r in metrics.get("history", []) if r.get("epoch") == metrics.get("selected_epoch") and "val_loss" in r), {})
    return {k: float(row[f"val_{k}"]) for k in sorted(wanted) if isinstance(row.get(f"val_{k}"), (int, float))}


def interval_lines(runs: list[dict], metric: str) -> str:
    """One line per run: the metric and its bootstrap interval (when the runs have one)."""
    lines = [f"- {r['protocol']} seed {r['seed']}: {metric} {r['scores'][metric]:.3f} "
             f"(95% CI {r['intervals'][metric]['low']:.3f}-{r['intervals'][metric]['high']:.3f}, "
             f"{r['intervals'][metric]['n_patients']} test patients)"
             for r in runs if metric in r.get("intervals", {}) and metric in r["scores"]]
    return "\n".join(lines)


def mean_std(xs: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def summarise(runs: list[dict], protocols: list[str]) -> list[dict]:
    """Per protocol: seeds, values per metric, mean and std, mean wall time."""
    out = []
    for protocol in protocols:
        rs = sorted((r for r in runs if r["protocol"] == protocol), key=lambda r: r["seed"])
        if not rs:
            continue
        keys = [k for k in rs[0]["scores"] if all(k in r["scores"] for r in rs)]
        row = {"protocol": protocol, "seeds": [r["seed"] for r in rs], "wall_time_s_mean": statistics.fmean(r["wall_time_s"] for r in rs)}
        validated = [r["validation"] for r in rs if r.get("validation")]
        if len(validated) == len(rs):  # what recipes are compared on: the selected models' validation scores
            row["validation_mean"] = {k: statistics.fmean(v[k] for v in validated) for k in validated[0]
                                      if all(k in v for v in validated)}
        for k in keys:
            values = [r["scores"][k] for r in rs]
            m, s = mean_std(values)
            row[k] = {"values": values, "mean": m, "std": s}
        out.append(row)
    return out


def table(summary: list[dict]) -> str:
    """Markdown table: one row per protocol, ``mean +- std`` per metric."""
    if not summary:
        return "(no finished runs)"
    keys = [k for k, v in summary[0].items() if isinstance(v, dict) and "values" in v]  # the test metrics
    lines = ["| protocol | seeds | " + " | ".join(keys) + " | wall time per run |",
             "|---" * (len(keys) + 3) + "|"]
    for row in summary:
        # one seed has no spread to show: "+- 0.000" would claim one
        cells = [("" if k not in row else f"{row[k]['mean']:.3f} +- {row[k]['std']:.3f}" if len(row[k]["values"]) > 1
                  else f"{row[k]['mean']:.3f} (one seed)") for k in keys]
        lines.append(f"| {row['protocol']} | {len(row['seeds'])} | " + " | ".join(cells) + f" | {row['wall_time_s_mean'] / 60:.1f} min |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--tag", required=True, help="names the runs and benchmarks/results/results-<tag>.json")
    p.add_argument("--protocols", default=",".join(PROTOCOL_NAMES))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--order", choices=("seed", "protocol"), default="seed",
                   help="seed: every protocol of seed 0 first, so a cut-short study still compares protocols")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch threads per training")
    p.add_argument("--runs-dir", default="runs/results")
    p.add_argument("--results-dir", default=str(RESULTS))
    p.add_argument("--finished-only", action="store_true",
                   help="summarise the planned runs that have finished and train nothing (a study cut short); "
                        "exits non-zero while some are missing")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")
    args = p.parse_args(argv)

    protocols, seeds = _list(args.protocols), [int(s) for s in _list(args.seeds)]
    bad = [x for x in protocols if x not in PROTOCOL_NAMES]
    if bad:
        print(f"results_protocols: unknown protocol {bad[0]!r}; choose from {', '.join(PROTOCOL_NAMES)}", file=sys.stderr)
        return 2
    cfg = load_config(args.config, args.overrides)  # a bad key fails here, named, before any run starts
    pairs = [(pr, s) for s in seeds for pr in protocols] if args.order == "seed" else [(pr, s) for pr in protocols for s in seeds]
    try:
        plan = [plan_run(args.config, [*args.overrides, f"split.protocol={protocol}"], protocol, seed,
                         f"results-{args.tag}-{protocol}-seed{seed}", args.runs_dir, args.threads) for protocol, seed in pairs]
    except RuntimeError as e:
        print(f"results_protocols: {e}", file=sys.stderr)
        return 2

    start = time.time()
    runs = [{"protocol": r.setting, "seed": r.seed, "run": str(r.run_dir), "scores": run_scores(m), "validation": run_validation(m),
             "intervals": run_intervals(m),
             "wall_time_s": m["wall_time_s"], "selected_epoch": m["selected_epoch"], "device": m["device"],
             "clients": [{k: c[k] for k in ("name", "n", "groups") if k in c} for c in m["data"].get("clients", [])]}
            for r, m in (finished_runs(plan) if args.finished_only else train_study(plan, args.jobs, args.threads))]
    summary = summarise(runs, protocols)
    text = table(summary)
    primary = TASKS[cfg.task].primary_metric
    per_run = interval_lines(runs, primary)
    print(f"\n{args.tag}: test metrics of the model selected on validation (mean +- std over seeds)\n{text}")
    for row in summary:
        if row.get("validation_mean"):
            print(f"  {row['protocol']}: mean validation score of the selected models "
                  + ", ".join(f"{k} {v:.3f}" for k, v in row["validation_mean"].items()))
    if per_run:
        print(f"\nper run, with the bootstrap interval over test patients:\n{per_run}")
    write_study(Path(args.results_dir) / f"results-{args.tag}.json",
                {"tag": args.tag, "config": args.config, "overrides": args.overrides, "protocols": protocols, "seeds": seeds,
                 "runs": runs, "summary": summary, "table_markdown": text, "per_run_intervals": per_run, "threads": args.threads, "jobs": args.jobs,
                 "finished": f"{len(runs)} of {len(plan)} planned runs",
                 **({"summarised_only": "trained nothing: wall_time_s is this summary's; each run keeps its own"}
                    if args.finished_only else {}),
                 "command": "python benchmarks/results_protocols.py " + " ".join(argv if argv is not None else sys.argv[1:])},
                start)
    return exit_code(len(runs), len(plan))


if __name__ == "__main__":
    raise SystemExit(main())
