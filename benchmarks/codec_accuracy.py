"""What compressing the cut costs in accuracy: one training run per (codec, seed), paired by seed.

Every codec is applied to both directions (activations up, gradients down). Runs with the
same seed share data, split, initial weights and batches, so the per-seed difference to
the uncompressed run isolates the codec (plus the chaos of training: any perturbation moves
a from-scratch run, which is why several seeds are needed). Bytes are the Channel's counts
of what was serialised, activations plus gradients, per training epoch.

    python benchmarks/codec_accuracy.py                                    # retinopathy default config
    python benchmarks/codec_accuracy.py --seeds 0,1,2 --jobs 2 train.schedule=cosine train.epochs=25
    MEDSPLIT_DATA=../shared/data python benchmarks/codec_accuracy.py --config configs/sweep-cut-unet.yaml split.cut=1

Runs go to ``--runs-dir`` (one ordinary medsplit run each, with its own report) and are
resumable: a finished run is read back, an interrupted one continues from its checkpoint, and
a run folder holding another config stops the benchmark before anything trains (the sweeps'
check).
``--jobs`` runs trainings side by side, each in its own process on ``cpu_count // jobs``
threads (the sweeps' runner, :func:`medsplit.sweep.train_points`).
Prints a table and writes ``benchmarks/results/codec_accuracy-<task>[-<tag>].json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from medsplit.config import load_config
from medsplit.sweep import summarise_run, threads_per_job
from medsplit.sweep.study_file import exit_code, plan_run, train_study, write_study
from medsplit.tasks import TASKS

RESULTS = Path(__file__).resolve().parent / "results"


def _list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def run_name(study: str, codec: str, seed: int) -> str:
    return f"codec-{study}-{codec}-seed{seed}"


def cut_bytes_per_epoch(metrics: dict) -> float:
    """Activation plus gradient bytes of the training phase, per epoch."""
    by_kind = summarise_run(metrics)["bytes_per_epoch_by_kind"]
    return by_kind.get("activation", 0.0) + by_kind.get("gradient", 0.0)


def run_row(codec: str, seed: int, run_dir: Path, metrics: dict, metric: str) -> dict:
    """What the study keeps of one run's metrics.json. The score is the run's headline metric
    (test AUC, or the mean test Dice: ``metrics["test"]["dice"]`` is a per-image summary)."""
    return {"codec": codec, "seed": seed, "run": str(run_dir), metric: summarise_run(metrics)["metric"],
            "bytes_per_epoch": cut_bytes_per_epoch(metrics), "wall_time_s": metrics["wall_time_s"],
            "selected_epoch": metrics["selected_epoch"], "device": metrics["device"]}


def _mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def paired_ci95(diffs: list[float]) -> tuple[float, float] | None:
    """95% confidence interval of the mean paired difference (Student t over seeds); ``None``
    with fewer than two seeds. It is what a "costs at most 1 point" claim has to rest on: the
    seed-to-seed spread of a from-scratch run is several times a point."""
    if len(diffs) < 2:
        return None
    from scipy.stats import t

    mean, std = _mean_std(diffs)
    half = float(t.ppf(0.975, len(diffs) - 1)) * std / len(diffs) ** 0.5
    return mean - half, mean + half


def verdict(codec: str, ratio: float, ci: tuple[float, float] | None, max_loss: float = 1.0,
            min_ratio: float = 3.9) -> str:
    """One line on the issue's target for a codec: >= ``min_ratio`` x fewer bytes at <= ``max_loss``
    points lost, judged on the confidence interval, not on the mean alone."""
    head = f"{codec}: {ratio:.2f}x fewer bytes ({'meets' if ratio >= min_ratio else 'misses'} >= {min_ratio}x)"
    if ci is None:
        return f"{head}; one seed, so no interval: the accuracy side is not shown"
    lo, hi = ci
    if lo >= -max_loss:
        return f"{head}; change {lo:+.2f} to {hi:+.2f} points (95% CI): a loss above {max_loss:g} point is ruled out"
    if hi < -max_loss:
        return f"{head}; change {lo:+.2f} to {hi:+.2f} points (95% CI): it loses more than {max_loss:g} point"
    return (f"{head}; change {lo:+.2f} to {hi:+.2f} points (95% CI): a loss above {max_loss:g} point is not ruled "
            "out (more seeds would narrow it)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/retinopathy.yaml")
    p.add_argument("--codecs", default="none,int8", help="codecs applied to both directions; the first is the reference")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--jobs", type=int, default=1, help="trainings run side by side")
    p.add_argument("--threads", type=int, default=0, help="torch threads per training (default: cpu_count // jobs)")
    p.add_argument("--runs-dir", default="runs/codec-accuracy")
    p.add_argument("--tag", default="", help="names a study, so that another config's runs, reports and results "
                   "JSON do not overwrite the stock ones (codec-<task>-<tag>-...)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")
    args = p.parse_args()

    codecs, seeds = _list(args.codecs), [int(s) for s in _list(args.seeds)]
    base = load_config(args.config, args.overrides)  # fails here, naming the key, before any run starts
    task = base.task
    study = f"{task}-{args.tag}" if args.tag else task  # names the runs and the results file
    metric = TASKS[task].primary_metric
    threads = args.threads or threads_per_job(args.jobs)
    try:
        plan = [plan_run(args.config, [*args.overrides, f"split.compress_activations={codec}",
                                       f"split.compress_gradients={codec}"], codec, seed, run_name(study, codec, seed),
                         args.runs_dir, threads) for codec in codecs for seed in seeds]
    except RuntimeError as e:
        print(f"codec_accuracy: {e}", file=sys.stderr)
        return 2

    start = time.time()
    runs = [run_row(r.setting, r.seed, r.run_dir, m, metric) for r, m in train_study(plan, args.jobs, threads)]
    ref_codec = codecs[0]
    ref = {r["seed"]: r for r in runs if r["codec"] == ref_codec}
    summary = []
    lines, verdicts = [], []
    for codec in codecs:
        rs = sorted((r for r in runs if r["codec"] == codec), key=lambda r: r["seed"])
        if not rs:
            continue
        values = [r[metric] for r in rs]
        diffs = [100 * (r[metric] - ref[r["seed"]][metric]) for r in rs if r["seed"] in ref]
        mean, std = _mean_std(values)
        dmean, dstd = _mean_std(diffs) if diffs else (float("nan"), float("nan"))
        ci = paired_ci95(diffs) if codec != ref_codec else None
        mb = statistics.fmean(r["bytes_per_epoch"] for r in rs) / 1e6
        ratio = (statistics.fmean(r["bytes_per_epoch"] for r in ref.values()) / 1e6 / mb) if ref else float("nan")
        summary.append({"codec": codec, "seeds": [r["seed"] for r in rs], "values": values, "mean": mean, "std": std,
                        "diff_points_per_seed": diffs, "diff_points_mean": dmean, "diff_points_std": dstd,
                        "diff_points_ci95": list(ci) if ci else None,
                        "mb_per_epoch": mb, "bytes_ratio_vs_reference": ratio})
        if codec != ref_codec:
            verdicts.append(verdict(codec, ratio, ci))
        lines.append((codec, " ".join(f"{v:.4f}" for v in values), f"{mean:.4f} +- {std:.4f}",
                      " ".join(f"{d:+6.2f}" for d in diffs), f"{dmean:+6.2f} +- {dstd:5.2f}",
                      f"[{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "", f"{mb:8.2f}", f"{ratio:10.2f}x"))
    head = ("codec", "per seed", "mean +- std", "diff per seed (points)", "diff mean +- std", "diff 95% CI",
            "MB/epoch", "fewer bytes")
    widths = [max(len(h), *(len(row[i]) for row in lines)) if lines else len(h) for i, h in enumerate(head)]
    print(f"\n{task}: test {metric} per seed, and the paired difference to {ref_codec} (points)")
    for row in (head, *lines):
        print(" | ".join(cell.rjust(w) if i in (0, 6, 7) else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))))
    if verdicts:
        print("\ntarget (issue 5: >= 3.9x fewer bytes at <= 1 point lost):")
        for v in verdicts:
            print(f"  {v}")
    write_study(RESULTS / f"codec_accuracy-{study}.json",
                {"task": task, "tag": args.tag, "metric": metric, "config": args.config, "overrides": args.overrides,
                 "reference": ref_codec, "runs": runs, "summary": summary, "verdicts": verdicts, "jobs": args.jobs,
                 "threads_per_job": threads}, start)
    return exit_code(len(runs), len(plan))


if __name__ == "__main__":
    raise SystemExit(main())
