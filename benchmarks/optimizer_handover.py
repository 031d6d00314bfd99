"""What a hospital's optimiser state should do at a handover: one run per (mode, seed), paired by seed.

``split.optimizer_handover``: ``carry`` (the state travels with the weights, the default),
``reset`` (fresh Adam moments at every handover) and ``local`` (each hospital keeps its own
moments, the behaviour before 2026-12). Runs with the same seed share data, split, initial weights
and batches, so the per-seed difference to ``carry`` isolates the mode.

    python benchmarks/optimizer_handover.py --seeds 0,1,2 --jobs 2 --threads 1 split.clients=4

Prints a table and writes ``benchmarks/results/optimizer_handover-<task>[-<tag>].json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from codec_accuracy import _list, _mean_std, paired_ci95  # same directory: the codec study's statistics

from medsplit.config import load_config
from medsplit.sweep import summarise_run, threads_per_job
from medsplit.sweep.study_file import exit_code, plan_run, train_study, write_study
from medsplit.tasks import TASKS

RESULTS = Path(__file__).resolve().parent / "results"
MODES = "carry,reset,local"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/sweep-clients-retinopathy.yaml")
    p.add_argument("--modes", default=MODES, help="handover modes; the first is the reference")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--jobs", type=int, default=1, help="trainings run side by side")
    p.add_argument("--threads", type=int, default=0, help="torch threads per training (default: cpu_count // jobs)")
    p.add_argument("--runs-dir", default="runs/optimizer-handover")
    p.add_argument("--tag", default="", help="names a study so its runs and results file are kept apart")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")
    args = p.parse_args()

    modes, seeds = _list(args.modes), [int(s) for s in _list(args.seeds)]
    base = load_config(args.config, args.overrides)
    study = f"{base.task}-{args.tag}" if args.tag else base.task
    threads = args.threads or threads_per_job(args.jobs)
    try:
        plan = [plan_run(args.config, [*args.overrides, f"split.optimizer_handover={mode}"], mode, seed,
                         f"handover-{study}-{mode}-seed{seed}", args.runs_dir, threads) for mode in modes for seed in seeds]
    except RuntimeError as e:
        print(f"optimizer_handover: {e}", file=sys.stderr)
        return 2

    start = time.time()
    runs = []
    for r, m in train_study(plan, args.jobs, threads):
        summary_row = summarise_run(m)
        runs.append({"mode": r.setting, "seed": r.seed, "run": str(r.run_dir), "metric": summary_row["metric"],
                     "weights_mb_per_epoch": summary_row["bytes_per_epoch_by_kind"].get("weights", 0.0) / 1e6,
                     "selected_epoch": m["selected_epoch"], "wall_time_s": m["wall_time_s"]})
    ref = {r["seed"]: r["metric"] for r in runs if r["mode"] == modes[0]}
    summary, lines = [], []
    for mode in modes:
        rs = sorted((r for r in runs if r["mode"] == mode), key=lambda r: r["seed"])
        if not rs:
            continue
        values = [r["metric"] for r in rs]
        diffs = [100 * (r["metric"] - ref[r["seed"]]) for r in rs if r["seed"] in ref]
        mean, std = _mean_std(values)
        ci = paired_ci95(diffs) if mode != modes[0] else None
        mb = statistics.fmean(r["weights_mb_per_epoch"] for r in rs)
        summary.append({"mode": mode, "seeds": [r["seed"] for r in rs], "values": values, "mean": mean, "std": std,
                        "diff_points_per_seed": diffs, "diff_points_ci95": list(ci) if ci else None, "weights_mb_per_epoch": mb})
        lines.append(f"{mode:>6} | {' '.join(f'{v:.4f}' for v in values)} | {mean:.4f} +- {std:.4f} | "
                     f"{' '.join(f'{d:+6.2f}' for d in diffs)} | {f'[{ci[0]:+.2f}, {ci[1]:+.2f}]' if ci else '':>16} | {mb:7.3f}")
    metric = TASKS[base.task].primary_metric
    print(f"\n{study}: test {metric} per seed; paired difference to {modes[0]} (points, 95% t-interval); weights MB/epoch")
    print("\n".join(lines))
    write_study(RESULTS / f"optimizer_handover-{study}.json",
                {"task": base.task, "tag": args.tag, "metric": metric, "config": args.config, "overrides": args.overrides,
                 "reference": modes[0], "runs": runs, "summary": summary, "threads_per_job": threads}, start)
    return exit_code(len(runs), len(plan))


if __name__ == "__main__":
    raise SystemExit(main())
