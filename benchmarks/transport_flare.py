"""What NVIDIA FLARE costs as a medsplit transport: start-up time and per-step overhead.

For each image size and split protocol (CUT 3, 2 hospitals, ResNet-34, CPU, one thread per
party) it runs one epoch three ways on the same config and data: in-process (today's default),
FLARE's simulator and, with ``--poc``, FLARE's POC mode (one process per site, gRPC on loopback,
mutual TLS). It reports

* ``epoch_s``: the evaluating hospital's epoch time (training + validation), per transport;
* ``overhead_per_step_ms``: (transport epoch - in-process epoch) / training steps;
* ``startup_s``: wall time of the whole FLARE run minus the evaluating hospital's own run time
  (FLARE starting, connecting and stopping the sites; in POC also provisioning);
* bytes per step counted by the Channel, and payload bytes handed to FLARE (split + control).

Separate sites are separate processes: on a machine with spare cores, SplitFed's hospitals then
compute in parallel, which one process does not, so its "overhead" can be negative.

Prints a table and writes ``benchmarks/results/transport_flare-cpu.json``; the transport table of
``benchmarks/transport.py`` (inprocess, gloo) is merged with it by hand.

    .venv/bin/python benchmarks/transport_flare.py --sizes 64,128 --protocols sequential,splitfed --poc

``--pingpong`` (on by default) adds the transport alone: round-trip time of payloads of several
sizes between the server site and one hospital site, with no training around it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medsplit.config import load_config  # noqa: E402
from medsplit.flare import require_nvflare  # noqa: E402


def _cfg(tmp: Path, size: int, protocol: str, images: int, batch: int, extra: list[str]):
    return load_config(ROOT / "configs" / "retinopathy.yaml", [
        "data.source=synthetic", f"data.synthetic_size={images}", f"data.img_size={size}", "data.augment=false",
        "model.name=resnet34", "split.cut=3", "split.clients=2", f"split.protocol={protocol}", "train.epochs=1",
        f"train.batch_size={batch}", "train.eval_batch_size=64", "train.threads=1", "train.device=cpu",
        "output.tensorboard=false", f"output.runs_dir={tmp}/runs", f"output.reports_dir={tmp}/reports",
        f"data.cache_dir={tmp}/cache", f"output.name=bench-{protocol}-{size}", *extra])


def _steps(m: dict, batch: int) -> int:
    return sum(-(-c["n"] // batch) - (1 if c["n"] % batch == 1 and c["n"] > batch else 0) for c in m["data"]["clients"])


def measure(size: int, protocol: str, images: int, batch: int, poc: bool, extra: list[str]) -> dict:
    from medsplit.flare.simulate import run_simulator
    from medsplit.train.loop import train

    tmp = Path(tempfile.mkdtemp(prefix=f"flare-bench-{size}-{protocol}-"))
    cfg = _cfg(tmp, size, protocol, images, batch, extra)
    t = time.time()
    ref = json.loads((train(cfg, quiet=True) / "metrics.json").read_text())
    inproc_wall = time.time() - t
    steps = _steps(ref, batch)
    epoch = lambda m: next(r["seconds"] for r in m["history"] if r.get("client") == "all")  # noqa: E731
    split_bytes = sum(r["bytes"] for r in ref["bytes"])
    row = {"size": size, "protocol": protocol, "steps": steps, "inprocess_epoch_s": epoch(ref),
           "inprocess_wall_s": inproc_wall, "bytes_per_step": split_bytes / steps, "test_auc_inprocess": ref["test"].get("auc")}
    modes = [("simulator", lambda out: run_simulator(cfg, ["hospital-a", "hospital-b"], out, tmp / "ws", timeout_s=600))]
    if poc:
        from medsplit.flare.poc import run_poc

        modes.append(("poc", lambda out: run_poc(cfg, ["hospital-a", "hospital-b"], out, timeout_s=600)))
    for mode, run in modes:
        out = tmp / mode
        t = time.time()
        status = run(out)
        wall = time.time() - t
        if status["status"] != "ok":
            raise RuntimeError(f"{mode} run failed: {status}")
        m = json.loads((out / "metrics.json").read_text())
        info = m["transport"]
        row.update({
            f"{mode}_epoch_s": epoch(m), f"{mode}_wall_s": wall, f"{mode}_startup_s": wall - m["wall_time_s"],
            f"{mode}_overhead_per_step_ms": 1000 * (epoch(m) - epoch(ref)) / steps,
            f"{mode}_payload_bytes": info["payload_bytes_sent"], f"{mode}_control_bytes": info["control_bytes_sent"],
            f"{mode}_messages": sum(r["messages"] for r in info["links"] if r["direction"] == "send"),
            f"{mode}_test_equal": m["test"].get("auc") == ref["test"].get("auc") and m["test_loss"] == ref["test_loss"],
        })
        if mode == "poc":
            row["poc_tls"] = status.get("tls")
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="64,128")
    p.add_argument("--protocols", default="sequential,splitfed")
    p.add_argument("--images", type=int, default=200, help="synthetic images (60%% train, split over 2 hospitals)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--poc", action="store_true", help="also run FLARE's POC mode (processes, gRPC, mutual TLS)")
    p.add_argument("--pingpong", default="1000,500000,2000000,8000000",
                   help="payload sizes (bytes) for the per-message round trip, server <-> one hospital ('' skips)")
    p.add_argument("--rounds", type=int, default=10, help="round trips per payload size")
    p.add_argument("--pingpong-only", action="store_true", help="only the round-trip measurement")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "transport_flare-cpu.json"))
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    version = require_nvflare()
    rows = []
    for size in ([] if args.pingpong_only else [int(s) for s in args.sizes.split(",")]):
        for protocol in args.protocols.split(","):
            rows.append(measure(size, protocol, args.images, args.batch, args.poc, args.overrides))
            print(json.dumps(rows[-1]), flush=True)
    pingpong = {}
    if args.pingpong:
        from medsplit.flare.pingpong import run_pingpong

        sizes = [int(s) for s in args.pingpong.split(",")]
        for mode in ["simulator"] + (["poc"] if args.poc else []):
            pingpong[mode] = run_pingpong(mode, sizes, args.rounds, Path(tempfile.mkdtemp(prefix=f"flare-ping-{mode}-")))
            print(json.dumps({mode: pingpong[mode]}), flush=True)
    import torch

    result = {"nvflare": version, "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
              "threads_per_party": 1, "model": "resnet34", "cut": 3, "hospitals": 2, "rows": rows,
              "pingpong": pingpong, "load_average_at_end": list(__import__("os").getloadavg())}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    cols = ["size", "protocol", "steps", "inprocess_epoch_s", "simulator_epoch_s", "simulator_overhead_per_step_ms",
            "simulator_startup_s"] + (["poc_epoch_s", "poc_overhead_per_step_ms", "poc_startup_s"] if args.poc else []) + ["bytes_per_step"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    for mode, ping in pingpong.items():
        print(f"\n{mode}: round trip server -> hospital -> server (median of {args.rounds})")
        print("| payload bytes | median ms | min ms | max ms |\n|---|---|---|---|")
        for r in ping:
            print(f"| {r['bytes']} | {r['median_round_trip_ms']:.1f} | {r['min_round_trip_ms']:.1f} | {r['max_round_trip_ms']:.1f} |")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
