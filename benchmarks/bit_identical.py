"""Is a refactor bit-identical? Run a tiny set of runs and save every number they measure, or
compare two such records number by number.

The tiny set covers both tasks (retinopathy classification, lungs segmentation with a U-Net),
every protocol (sequential relay, SplitFed, SplitFed-V1, centralised, FedAvg) in-process, the
protocols that run as processes over gloo (``split.transport=gloo``) and in FLARE's simulator
(``split.transport=flare``, skipped without nvflare), plus an in-process run interrupted after its
first epoch and resumed. Each run's ``metrics.json`` is kept whole except what the clock or the
machine decides: history rows' ``seconds``, ``wall_time_s``, link timings, host names and pids,
and the temporary folder the runs wrote to (replaced by ``<root>``).

    OMP_NUM_THREADS=1 python benchmarks/bit_identical.py run --out benchmarks/results/refactor_baseline.json
    OMP_NUM_THREADS=1 python benchmarks/bit_identical.py run --out /tmp/after.json
    python benchmarks/bit_identical.py compare benchmarks/results/refactor_baseline.json /tmp/after.json \\
        --out benchmarks/results/refactor_comparison.json

``compare`` exits 0 when every number (and every string, None and key) of every run both records
hold agrees exactly, 1 otherwise; it lists each difference by its path in the record.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing it
    sys.path.insert(0, str(ROOT))

TASKS = {
    "retinopathy": ["task=retinopathy", "data.synthetic_size=48", "model.name=resnet18", "split.cut=3",
                    "train.batch_size=16", "train.eval_batch_size=32"],
    "lungs": ["task=lungs", "data.synthetic_size=32", "model.name=unet-classic", "model.base_channels=4", "split.cut=1",
              "train.batch_size=8", "train.eval_batch_size=16"],
}
IN_PROCESS = ("sequential", "splitfed", "splitfed-v1", "centralised", "fedavg")
AS_PROCESSES = ("sequential", "splitfed")  # the protocols that run with each party in its own process
# keys whose values the clock or the machine decides; FLARE's handed_to_flare counts include the
# final report message, which carries the link timings (floats whose printed length varies)
CLOCK_KEYS = {"seconds", "wall_time_s", "job_wall_time_s", "elapsed_s", "elapsed", "link_seconds", "host",
              "handed_to_flare"}
# A party's pid travels in the start-up handshake, so the control messages' byte counts depend on
# how many digits it has (pids wrap at /proc/sys/kernel/pid_max): kept as its digit count.
PID_KEY = "pid"


def _overrides(root: Path, task: str, protocol: str, name: str, *extra: str) -> list[str]:
    return TASKS[task] + [
        "data.source=synthetic", "data.img_size=32", "data.augment=true", "train.epochs=2", "train.threads=1",
        "output.tensorboard=false", f"output.runs_dir={root}/runs", f"output.reports_dir={root}/reports",
        f"data.cache_dir={root}/cache", f"split.protocol={protocol}", "split.clients=2", "split.timeout_s=120",
        f"output.name={name}", *extra]


def plan(placements: tuple[str, ...]) -> list[tuple[str, str, str, str, tuple[str, ...]]]:
    """(label, task, protocol, placement, extra overrides) of every run of the tiny set."""
    runs = []
    for task in TASKS:
        if "inprocess" in placements:
            runs += [(f"{task}/{p}/inprocess", task, p, "inprocess", ()) for p in IN_PROCESS]
            runs.append((f"{task}/sequential/inprocess-resumed", task, "sequential", "resume", ()))
        if "gloo" in placements:
            runs += [(f"{task}/{p}/gloo", task, p, "gloo", ()) for p in AS_PROCESSES]
        if "flare" in placements:
            runs += [(f"{task}/{p}/flare", task, p, "flare", ()) for p in AS_PROCESSES]
    return runs


def scrub(value, root: str | None = None):
    """``value`` without what the clock or the machine decides; ``root`` replaced by ``<root>``."""
    if isinstance(value, dict):
        return {k: (f"{len(str(v))} digits" if k == PID_KEY and isinstance(v, int) else scrub(v, root))
                for k, v in value.items() if k not in CLOCK_KEYS}
    if isinstance(value, list):
        return [scrub(v, root) for v in value]
    if isinstance(value, str) and root:
        return value.replace(root, "<root>")
    return value


def run_one(root: Path, task: str, protocol: str, placement: str, extra: tuple[str, ...]) -> dict:
    from medsplit.config import load_config
    from medsplit.train.loop import train

    name = placement
    transport = {"gloo": ["split.transport=gloo"], "flare": ["split.transport=flare"]}.get(placement, [])
    cfg = load_config(None, _overrides(root, task, protocol, name, *transport, *extra))
    if placement == "resume":
        run_dir = train(cfg, quiet=True, stop_after_epoch=1)
        run_dir = train(cfg, resume=run_dir, quiet=True)
    else:
        run_dir = train(cfg, quiet=True)
    record = json.loads((Path(run_dir) / "metrics.json").read_text())
    # the selected weights, byte for byte (checkpoints are not compared: whether they are kept is a setting)
    weights = {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in sorted(Path(run_dir).rglob("*.safetensors"))}
    return {"metrics": record, "weights_sha256": weights}


def run(out: Path, placements: tuple[str, ...], only: str | None) -> None:
    import torch

    torch.set_num_threads(1)
    results, timings = {}, {}
    for label, task, protocol, placement, extra in plan(placements):
        if only and only not in label:
            continue
        if placement == "flare" and importlib.util.find_spec("nvflare") is None:  # the optional [flare] extra
            print(f"skip {label}: nvflare is not installed", flush=True)
            continue
        root = Path(tempfile.mkdtemp(prefix="bitid-"))
        t = time.time()
        try:
            results[label] = scrub(run_one(root, task, protocol, placement, extra), str(root))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        timings[label] = round(time.time() - t, 1)
        print(f"{label}: {timings[label]} s", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"runs": results, "seconds": timings}, indent=1, sort_keys=True) + "\n")
    print(f"saved {out} ({len(results)} runs)")


def differences(a, b, path: str = "") -> list[dict]:
    """Every place where ``a`` and ``b`` differ (a missing key, another type, another value)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append({"path": f"{path}/{k}", "before": a.get(k, "<missing>"), "after": b.get(k, "<missing>")})
            else:
                out += differences(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [{"path": path, "before": f"{len(a)} items", "after": f"{len(b)} items"}]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    if type(a) is not type(b) or a != b:
        return [{"path": path, "before": a, "after": b}]
    return []


def count_numbers(value) -> int:
    if isinstance(value, dict):
        return sum(count_numbers(v) for v in value.values())
    if isinstance(value, list):
        return sum(count_numbers(v) for v in value)
    return int(isinstance(value, (int, float)) and not isinstance(value, bool))


def compare(before: dict, after: dict) -> dict:
    before, after = scrub(before), scrub(after)  # records saved before a key joined CLOCK_KEYS
    shared = sorted(set(before["runs"]) & set(after["runs"]))
    runs = {}
    for label in shared:
        diffs = differences(before["runs"][label], after["runs"][label])
        runs[label] = {"numbers": count_numbers(before["runs"][label]), "differences": diffs}
    return {"compared_runs": len(shared), "numbers_compared": sum(r["numbers"] for r in runs.values()),
            "differing_runs": [k for k, r in runs.items() if r["differences"]],
            "only_before": sorted(set(before["runs"]) - set(after["runs"])),
            "only_after": sorted(set(after["runs"]) - set(before["runs"])), "runs": runs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the tiny set and save its numbers")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--placements", default="inprocess,gloo,flare", help="comma-separated: inprocess,gloo,flare")
    r.add_argument("--only", default=None, help="run only the labels containing this text (e.g. lungs/splitfed)")
    c = sub.add_parser("compare", help="compare two saved records")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    c.add_argument("--out", type=Path, default=None, help="where to save the comparison (JSON)")
    args = p.parse_args(argv)
    if args.command == "run":
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        run(args.out, tuple(args.placements.split(",")), args.only)
        return 0
    result = compare(json.loads(args.before.read_text()), json.loads(args.after.read_text()))
    result.update(before=str(args.before), after=str(args.after))
    for label, row in result["runs"].items():
        print(f"{'same' if not row['differences'] else 'DIFFERS':8s} {label:40s} {row['numbers']} numbers")
        for d in row["differences"][:10]:
            print(f"         {d['path']}: {str(d['before'])[:60]} -> {str(d['after'])[:60]}")
    print(f"{result['compared_runs'] - len(result['differing_runs'])} of {result['compared_runs']} runs identical "
          f"({result['numbers_compared']} numbers compared); only before: {result['only_before']}; only after: {result['only_after']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"saved {args.out}")
    ok = result["compared_runs"] and not result["differing_runs"] and not result["only_before"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
