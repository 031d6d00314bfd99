"""What a sweep keeps of each run and how it pools them over seeds: headline metric, its
test-set interval, bytes per epoch, time, the clients' mix; mean and sample std per
(protocol, partition, axis value); differences judged against the test-set intervals.

Pure functions of the runs' ``metrics.json`` records: no training, no files written.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["client_mix", "compare_to", "mean_std", "seed_groups", "summarise_run"]


def summarise_run(record: dict) -> dict[str, Any]:
    """What a sweep (or a benchmark) keeps of a run's metrics.json: headline metrics, training
    bytes per epoch (in all and by kind), time."""
    # imports torch: a sweep worker loads this module and sets its threads before torch loads
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


def mean_std(xs: list[float | None]) -> tuple[float | None, float | None, int]:
    """Mean and sample standard deviation (ddof=1; ``None`` with a single value) of the defined values."""
    vals = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    if not vals:
        return None, None, 0
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
    return mean, std, len(vals)


def seed_groups(results: list[dict]) -> list[dict[str, Any]]:
    """Points pooled over seeds: one row per (protocol, partition, axis value).

    Args:
        results: the sweep's rows (:func:`medsplit.sweep.run_sweep`), each with its point's
            fields (``protocol``, ``partition``, ``value``, ``baseline``), its ``status`` and,
            when finished, what :func:`summarise_run` keeps.
    """
    keyed: dict[tuple, list[dict]] = {}
    for r in results:
        keyed.setdefault((r["protocol"], r["partition"], r["value"]), []).append(r)
    rows = []
    for (protocol, partition, value), members in keyed.items():
        ok = [m for m in members if m["status"] not in ("failed", "not run")]
        metric, metric_std, n = mean_std([m.get("metric") for m in ok])
        metric2, metric2_std, _ = mean_std([m.get("metric2") for m in ok])
        bpe, _, _ = mean_std([m.get("bytes_per_epoch") for m in ok])
        wall, wall_std, _ = mean_std([m.get("wall_time_s") for m in ok])
        halfwidth, _, _ = mean_std([(m["metric_high"] - m["metric_low"]) / 2 for m in ok
                                    if m.get("metric_low") is not None and m.get("metric_high") is not None])
        rows.append({
            "protocol": protocol, "partition": partition, "value": value, "baseline": members[0]["baseline"],
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

