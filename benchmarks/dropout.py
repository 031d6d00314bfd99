"""What losing a hospital costs: the full federation against the same runs with one hospital
leaving (``split.dropout``), several seeds each, in one process.

    python benchmarks/dropout.py                     # RetinaMNIST recipe (make data), SplitFed, 3 hospitals
    python benchmarks/dropout.py --protocol sequential --seeds 0,1,2

Each (setting, seed) is one ordinary medsplit run under ``--runs-dir`` (a finished one is read
back, so the study can be stopped and restarted). The test metric of each setting is reported as
mean and 95% t-interval over seeds, and the cost as the paired difference (dropout minus full,
same seed) with its 95% t-interval; the epoch time with every hospital against the epochs after
the dropout shows what the lost hospital's share of the epoch was. Prints a table and writes
``benchmarks/results/dropout-<tag>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from medsplit.config import load_config
from medsplit.config.dropout_schedule import parse_dropout
from medsplit.results.studies import mean_interval
from medsplit.train.loop import train
from medsplit.train.fault_injection import FAULT_ENV

RESULTS = Path(__file__).resolve().parent / "results"


def interval(values: list[float]) -> dict:
    """Mean and 95% t-interval of ``values`` (over seeds; the results page's interval)."""
    ci = mean_interval(values)
    return {"mean": statistics.fmean(values), "low": ci[0] if ci else None, "high": ci[1] if ci else None, "n": len(values)}


def epoch_seconds(metrics: dict) -> dict[int, list[float]]:
    """Seconds of each epoch by the number of hospitals that took part at its end."""
    out: dict[int, list[float]] = {}
    for row in metrics["history"]:
        if row["client"] == "all":
            out.setdefault(row.get("hospitals", metrics["clients"]), []).append(row["seconds"])
    return out


def _command(argv: list[str]) -> str:
    """The command that reproduces the results (where the runs are kept does not change them)."""
    words = list(argv)
    if "--runs-dir" in words:
        i = words.index("--runs-dir")
        del words[i:i + 2]
    return " ".join(["python benchmarks/dropout.py", *words])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="retinamnist", help="a shipped config's name or a YAML file")
    ap.add_argument("--protocol", default="splitfed")
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--dropout", default="client1:epoch=6:after=0", help="the split.dropout schedule of the dropout runs")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--transport", default="inprocess", choices=("inprocess", "gloo"),
                    help="gloo: every party in its own process, and the dropout is a real kill (MEDSPLIT_FAULT) at the "
                         "schedule's point instead of split.dropout")
    ap.add_argument("--set", action="append", default=[], help="more config overrides (key=value)")
    ap.add_argument("--runs-dir", default="runs/dropout")
    ap.add_argument("--tag", default=None, help="results file name (default: <config>-<protocol>)")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    tag = args.tag or f"{Path(args.config).stem}-{args.protocol}"
    settings = {"full": ["split.min_hospitals=null"],
                "dropout": [f"split.min_hospitals={args.clients - 1}", f"split.dropout={args.dropout}"]}
    fault = None
    if args.transport == "gloo":  # the schedule's point as a kill: epoch from 0, the step it would not take
        (d,) = parse_dropout(args.dropout, args.clients)
        fault = f"client{d.hospital}:epoch={d.epoch}:step={d.after}"
        settings["dropout"] = [f"split.min_hospitals={args.clients - 1}"]
        tag += "-gloo"
    runs: dict[str, list[dict]] = {name: [] for name in settings}
    t0 = time.time()
    for seed in seeds:
        for name, extra in settings.items():
            run_name = f"{tag}-{name}-seed{seed}"
            cfg = load_config(args.config, [f"split.protocol={args.protocol}", f"split.clients={args.clients}",
                                            f"split.transport={args.transport}",
                                            f"train.seed={seed}", f"train.threads={args.threads}", "output.tensorboard=false",
                                            f"output.runs_dir={args.runs_dir}", f"output.name={run_name}", *extra, *args.set])
            done = Path(args.runs_dir) / run_name / "metrics.json"
            if not done.exists():
                print(f"[{time.time() - t0:6.0f} s] training {run_name}", flush=True)
                if fault and name == "dropout":
                    os.environ[FAULT_ENV] = fault  # the party processes inherit it
                try:
                    train(cfg, quiet=True, overwrite=True)
                finally:
                    os.environ.pop(FAULT_ENV, None)
            runs[name].append(json.loads(done.read_text()))
    metric = "auc" if "auc" in runs["full"][0]["test"] else "dice"
    score = lambda m: float(m["test"][metric] if metric == "auc" else m["test"][metric]["mean"])  # noqa: E731
    result = {"config": args.config, "protocol": args.protocol, "clients": args.clients, "dropout": args.dropout,
              "transport": args.transport, **({"fault": fault} if fault else {}),
              "seeds": seeds, "metric": metric, "settings": {},
              "runs_wall_s": sum(m["wall_time_s"] for ms in runs.values() for m in ms),  # the runs' own, also when read back
              "command": _command(argv if argv is not None else sys.argv[1:])}
    for name, ms in runs.items():
        seconds: dict[int, list[float]] = {}
        for m in ms:
            for n, s in epoch_seconds(m).items():
                seconds.setdefault(n, []).extend(s)
        result["settings"][name] = {
            "test": interval([score(m) for m in ms]), "per_seed": [score(m) for m in ms],
            "accuracy": interval([float(m["test"]["accuracy"]) for m in ms]) if metric == "auc" else None,
            "epoch_seconds_by_hospitals": {str(n): statistics.fmean(s) for n, s in sorted(seconds.items())},
            "dropouts": ms[0].get("dropouts", []), "runs": [m["run"] for m in ms]}
    result["cost"] = interval([score(d) - score(f) for d, f in zip(runs["dropout"], runs["full"])])
    fmt = lambda i: f"{i['mean']:.3f}" + (f" [{i['low']:.3f}, {i['high']:.3f}]" if i["low"] is not None else "")  # noqa: E731
    # the results page's table (medsplit.results shows a file's "rows")
    result["rows"] = [{"setting": name, f"test {metric} (mean, 95% CI over seeds)": fmt(r["test"]),
                       "seconds per epoch by hospitals present": ", ".join(f"{n}: {v:.1f}" for n, v in r["epoch_seconds_by_hospitals"].items())}
                      for name, r in result["settings"].items()]
    result["rows"].append({"setting": "cost (dropout - full, paired by seed)", f"test {metric} (mean, 95% CI over seeds)": fmt(result["cost"]),
                           "seconds per epoch by hospitals present": ""})
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"dropout-{tag}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"\n{args.protocol}, {args.clients} hospitals, {len(seeds)} seeds; dropout: {args.dropout}")
    print(f"| setting | test {metric} (mean, 95% CI over seeds) | seconds per epoch by hospitals present |")
    print("|---|---|---|")
    for row in result["rows"]:
        print("| " + " | ".join(str(v) for v in row.values()) + " |")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
