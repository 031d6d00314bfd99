"""The HTML report of a sweep (and the JSON summary beside it): the test metric as mean and
standard deviation over seeds against the axis, bytes per epoch, wall time, every point,
the failed ones with their tracebacks, and the original study's numbers beside ours.

Written by :func:`medsplit.sweep.run_sweep` to ``<reports_dir>/sweep-<axis>-<task>.html``
(and ``.json``, which the index page reads).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from medsplit.atomic import write_atomic
from medsplit.config import Config
from medsplit.original_study import (
    ORIGINAL_STUDY,
    ORIGINAL_STUDY_CAVEATS,
    ORIGINAL_STUDY_REPO,
)
from medsplit.report.tables import without_empty_columns
from medsplit.report.explain import KAPPA_WORDS, cut_list
from medsplit.report.figures import line_plot
from medsplit.report.html import Report
from medsplit.sweep.plan import baseline_protocols, pooled_protocols
from medsplit.sweep.summarise import compare_to, seed_groups

__all__ = ["original_study_section", "write_sweep_report"]


def metric_label(task: str) -> str:
    """The task's headline metric's display name (``AUC``, ``Dice``): what the report calls
    the metric when no finished run names it (every point failed or was not run)."""
    from medsplit.tasks import TASKS  # imports torch: only for such a report

    return TASKS[task].metric_label


def _series_label(g: dict) -> str:
    return g["protocol"] if g["partition"] is None else f"{g['protocol']}, {g['partition']}"


def _axis_figure(groups: list[dict], xs: list[int], key: str, std_key: str | None, xlabel: str, ylabel: str,
                 title: str, logy: bool = False):
    """Split protocols (and baselines that vary with the axis) as lines with error bars over
    ``xs``; baselines that do not vary with it as horizontal lines with a +-std band."""
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


def original_study_section(report: Report, task: str, axis: str, metric_name: str, groups: list[dict]) -> None:
    """Add the original study's printed numbers for this (task, axis) beside this sweep's iid
    means, naming the study's metric per row so it is never passed off as ours."""
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


def write_sweep_report(base: Config, axis: str, values: list[int], seeds: list[int], protocols: list[str],
                       partitions: list[str], baselines: bool, base_config: Path, overrides: list[str], out_dir: Path,
                       results: list[dict]) -> Path:
    """Write ``sweep-<axis>-<task>.html`` and its JSON summary into ``base.output.reports_dir``;
    returns the HTML's path.

    Args:
        base: the base config with the sweep's overrides (task, model, reports folder).
        axis, values, seeds, protocols, partitions, baselines: the sweep's grid, as run.
        base_config: the YAML file the sweep started from (named in the report).
        overrides: the sweep's ``key=value`` overrides.
        out_dir: the sweep's folder (its runs are in ``out_dir/runs``).
        results: one row per point, in plan order (see :func:`medsplit.sweep.summarise.seed_groups`).
    """
    task = base.task
    metric_name = next((r["metric_name"] for r in results if r.get("metric_name")), None) or metric_label(task)
    metric2_name = next((r["metric2_name"] for r in results if r.get("metric2_name")), "")
    xs = sorted(values)
    groups = seed_groups(results)
    failed = [r for r in results if r["status"] == "failed"]
    not_run = [r for r in results if r["status"] == "not run"]
    split_groups = [g for g in groups if not g["baseline"] and g["metric"] is not None]
    best = max(split_groups, key=lambda g: g["metric"], default=None)
    # the headline's "centralised" is the pooled baseline: every hospital's data in one party
    pooled = pooled_protocols()
    central = next((g for g in groups if g["protocol"] in pooled), None)
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
               "partitions": join(partitions), "baselines": ", ".join(baseline_protocols()) if baselines else "none",
               "base config": str(base_config), "overrides": " ".join(overrides) or "none",
               "runs folder": str(out_dir / "runs"),
               "devices": join(sorted({r["device"] for r in results if r.get("device")})),
               "model": base.model.name, "image size": base.data.img_size, "epochs": base.train.epochs})
    for sentence in cut_list(task, base.to_dict(), xs) if axis == "cut" else []:
        report.text(sentence)
    if "kappa" in f"{metric_name} {metric2_name}".lower():
        report.text(KAPPA_WORDS)

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
    report.table(without_empty_columns([{"protocol": g["protocol"], "partition": g["partition"], axis: g["value"], "runs": g["seeds"],
                   "finished": g["finished"], metric_name: g["metric"], "std": g["metric_std"],
                   "test-set CI \u00b1": g["ci_halfwidth"], "vs best split": compare_to(g, best),
                   metric2_name: g["metric2"], f"{metric2_name} std": g["metric2_std"],
                   "MB/epoch": g["mb_per_epoch"],
                   "wall time (s)": g["wall_time_s"]} for g in groups]),
                 caption="std: sample standard deviation over seeds (left out with one seed): training randomness. "
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
    original_study_section(report, task, axis, metric_name, groups)
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
