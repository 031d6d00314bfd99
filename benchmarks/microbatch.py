"""Epoch time of the relay with micro-batches pipelined across the cut (``split.microbatches``), with
every party in one process (``inprocess``) against one process per party over gloo on loopback.

ResNet-34, CUT 3, 2 hospitals, batch 16, synthetic uint8 images decoded per step as in training;
for each image size and each M it runs one warm-up epoch of one batch per hospital, then times one
epoch of ``--steps`` batches per hospital (the gloo epoch is the slowest party's). Rows of the same
size run one after the other so that they share the machine's load; the 1-minute load average is
recorded before and after each row, because these machines are shared (the numbers move with the
other users' work: compare rows measured side by side, not across runs).

``--nonblocking`` (default on) uses GlooTransport's own ``start_send``, which returns once a frame
is posted; ``--no-nonblocking`` puts back the blocking default of ``Transport`` in every party
process, which returns only once the receiver has posted its receive.

    OMP_NUM_THREADS=1 python benchmarks/microbatch.py                     # 64 px, M = 1, 2, 4
    OMP_NUM_THREADS=1 python benchmarks/microbatch.py --sizes 64,128 --steps 4

Writes benchmarks/results/microbatch.json (rows and the machine) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench_parties import last_json, run_parties  # benchmarks/bench_parties.py (run as a script: its folder is on the path)

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PARTIES = ("server", "client0", "client1")
RANKS = {"server": 0, "client0": 1, "client1": 2, "aggregator": 0}


def _protocol(channel, microbatches: int, device):
    from medsplit.models import build_model
    from medsplit.train.protocols import PROTOCOLS

    torch.manual_seed(0)
    table = build_model("resnet34", num_classes=2).to(device)
    return PROTOCOLS["sequential"](table, 3, 2, lambda p: torch.optim.Adam(p, lr=1e-3), F.cross_entropy, channel,
                                   microbatches=microbatches)


def _images(client: int, steps: int, batch: int, size: int):
    g = torch.Generator().manual_seed(1000 + client)
    return (torch.randint(0, 256, (steps * batch, 3, size, size), dtype=torch.uint8, generator=g),
            torch.randint(0, 2, (steps * batch,), generator=g))


def _epoch(proto, hosts, steps: int, batch: int, size: int, data) -> float:
    """One relay epoch of ``steps`` batches per hospital; its wall time in this process."""
    def step(model, k, idx):
        if f"client{k}" in hosts:
            x, y = data[k][0][idx].float() / 127.5 - 1.0, data[k][1][idx]
        elif "server" in hosts:
            x = torch.empty(len(idx), 3, size, size, device="meta")
            y = torch.empty(len(idx), dtype=torch.int64, device="meta")
        else:  # the other hospital's step: nothing of it runs here
            proto.channel.next_step()
            return
        model.train_step(x, y)

    batches = [[torch.arange(s * batch, (s + 1) * batch) for s in range(steps)] for _ in range(2)]
    t0 = time.perf_counter()
    proto.run_epoch(batches, step)
    return time.perf_counter() - t0


def run_inprocess(size: int, steps: int, batch: int, microbatches: int) -> dict:
    from medsplit.split import Channel

    channel = Channel()
    proto = _protocol(channel, microbatches, "cpu")
    data = [_images(k, steps, batch, size) for k in range(2)]
    hosts = set(RANKS)
    _epoch(proto, hosts, 1, batch, size, data)  # warm-up
    before = channel.total_bytes()
    return {"epoch_s": _epoch(proto, hosts, steps, batch, size, data), "bytes": channel.total_bytes() - before}


def run_party(rank: int, address: str, size: int, steps: int, batch: int, microbatches: int, nonblocking: bool) -> dict:
    """One party of the gloo measurement (a child process)."""
    from medsplit.split import Channel
    from medsplit.transport.gloo import GlooTransport

    if not nonblocking:  # measure gloo with sends that wait for delivery (the Transport default)
        from medsplit.transport.base import Transport

        GlooTransport._start_send = Transport._start_send
    name = PARTIES[rank]
    transport = GlooTransport(name, RANKS, address, 300)
    hosts = {"server", "aggregator"} if rank == 0 else {name}
    channel = Channel(transport=transport, local=frozenset(hosts))
    try:
        proto = _protocol(channel, microbatches, "cpu")
        data = [_images(k, steps, batch, size) if f"client{k}" in hosts else None for k in range(2)]
        _epoch(proto, hosts, 1, batch, size, data)
        counted_before = sum(r["bytes"] for r in channel.byte_rows() if r["sender"] in hosts)
        seconds = _epoch(proto, hosts, steps, batch, size, data)
        counted = sum(r["bytes"] for r in channel.byte_rows() if r["sender"] in hosts) - counted_before
        return {"party": name, "epoch_s": seconds, "counted_bytes": counted}
    finally:
        transport.close()


def run_gloo(size: int, steps: int, batch: int, microbatches: int, nonblocking: bool) -> dict:
    from medsplit.transport.gloo import free_port

    address = f"127.0.0.1:{free_port()}"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmds = [[sys.executable, __file__, "--party", str(rank), "--address", address, "--sizes", str(size),
             "--steps", str(steps), "--batch", str(batch), "--microbatches", str(microbatches),
             "--nonblocking" if nonblocking else "--no-nonblocking"] for rank in range(len(PARTIES))]
    rows = [last_json(out) for out in run_parties(cmds, env, 1800, [f"gloo party {name}" for name in PARTIES])]
    return {"epoch_s": max(r["epoch_s"] for r in rows), "bytes": sum(r["counted_bytes"] for r in rows), "parties": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="64")
    ap.add_argument("--microbatches", default="1,2,4")
    ap.add_argument("--steps", type=int, default=3, help="timed batches per hospital")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3, help="measurements of each setting (median and min reported)")
    ap.add_argument("--nonblocking", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--out", type=Path, default=RESULTS / "microbatch.json")
    ap.add_argument("--party", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--address", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.party is not None:
        print(json.dumps(run_party(args.party, args.address, int(args.sizes), args.steps, args.batch,
                                   int(args.microbatches), args.nonblocking)))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    ms = [int(v) for v in args.microbatches.split(",")]
    samples: dict[tuple[int, int], list[dict]] = {(size, m): [] for size in sizes for m in ms}
    for size in sizes:
        # Repeats interleave the settings, so that each setting meets the machine's load as often.
        for repeat in range(args.repeats):
            for m in ms:
                load_before = os.getloadavg()[0]
                one = run_inprocess(size, args.steps, args.batch, m)
                many = run_gloo(size, args.steps, args.batch, m, args.nonblocking)
                sample = {"repeat": repeat, "inprocess_epoch_s": one["epoch_s"], "gloo_epoch_s": many["epoch_s"],
                          "inprocess_mb": one["bytes"] / 1e6, "gloo_mb": many["bytes"] / 1e6,
                          "load1_before": load_before, "load1_after": os.getloadavg()[0]}
                samples[(size, m)].append(sample)
                print(json.dumps({"size": size, "microbatches": m, **sample}), flush=True)
    rows = []
    for (size, m), runs in samples.items():
        inproc = statistics.median(r["inprocess_epoch_s"] for r in runs)
        gloo = statistics.median(r["gloo_epoch_s"] for r in runs)
        rows.append({"size": size, "microbatches": m, "steps_per_hospital": args.steps, "repeats": len(runs),
                     "inprocess_epoch_s": inproc, "gloo_epoch_s": gloo, "gloo_vs_inprocess_pct": 100 * (gloo / inproc - 1),
                     "inprocess_epoch_s_min": min(r["inprocess_epoch_s"] for r in runs),
                     "gloo_epoch_s_min": min(r["gloo_epoch_s"] for r in runs),
                     "gloo_mb": runs[0]["gloo_mb"], "inprocess_mb": runs[0]["inprocess_mb"],
                     "load1_min": min(min(r["load1_before"], r["load1_after"]) for r in runs),
                     "load1_max": max(max(r["load1_before"], r["load1_after"]) for r in runs), "samples": runs})
    lines = ["| px | M | in-process epoch s (median, min) | gloo relay epoch s (median, min) | gloo vs in-process | MB | "
             "load (1 min) range |", "|---:|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {r['size']} | {r['microbatches']} | {r['inprocess_epoch_s']:.2f} ({r['inprocess_epoch_s_min']:.2f}) | "
              f"{r['gloo_epoch_s']:.2f} ({r['gloo_epoch_s_min']:.2f}) | {r['gloo_vs_inprocess_pct']:+.1f} % | "
              f"{r['gloo_mb']:.2f} | {r['load1_min']:.1f}-{r['load1_max']:.1f} |" for r in rows]
    print("\n".join(lines))
    meta = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads_per_process": 1,
            "shared_machine": "yes: other sessions ran beside this benchmark; see each row's load average",
            "model": "resnet34", "cut": 3, "hospitals": 2, "batch": args.batch, "protocol": "sequential",
            "gloo_sends": "non-blocking (start_send)" if args.nonblocking else "blocking (gloo's own)",
            "torch": torch.__version__, "command": " ".join(["python", "benchmarks/microbatch.py", *(argv or sys.argv[1:])])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
