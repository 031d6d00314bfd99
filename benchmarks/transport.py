"""Per-step time of the split protocols with every party in one process (``inprocess``) against
one process per party over torch.distributed (``gloo``, TCP on loopback), on the same config.

For each image size and protocol (ResNet-34, CUT 3, 2 hospitals, batch 16, synthetic uint8
images decoded to float per step as in training) it runs one warm-up epoch and then times one
epoch of ``--steps`` batches per hospital:

* inprocess: one process runs every party (``--threads`` torch threads);
* gloo: the server and the two hospitals are three processes (``--threads`` each); the epoch
  time is the slowest party's. SplitFed's hospitals then compute in parallel; the relay's take
  turns.

Per step = epoch time / (steps x hospitals); bytes per step = what the Channel counted (payload;
gloo adds 32 bytes of framing per message, 64 with split.secret_file). Targets (issue 12): gloo adds <= 10 % per-step time
at 128 px on CPU; SplitFed with 2 hospitals in processes is no slower per epoch than in one.
Prints a table and writes JSON + a Markdown table to benchmarks/results/.

    python benchmarks/transport.py                              # 64 and 128 px, both protocols, CPU
    python benchmarks/transport.py --sizes 128 --steps 8 --device cuda   # gloo between GPU processes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench_parties import last_json, run_parties  # benchmarks/bench_parties.py (run as a script: its folder is on the path)

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]


def _protocol(protocol: str, size: int, channel, device):
    from medsplit.models import build_model
    from medsplit.train.protocols import PROTOCOLS

    torch.manual_seed(0)
    table = build_model("resnet34", num_classes=2).to(device)

    def make_opt(params):
        return torch.optim.Adam(params, lr=1e-3, fused=True)

    return PROTOCOLS[protocol](table, 3, 2, make_opt, F.cross_entropy, channel)


def _images(client: int, steps: int, batch: int, size: int):
    g = torch.Generator().manual_seed(1000 + client)
    return (torch.randint(0, 256, (steps * batch, 3, size, size), dtype=torch.uint8, generator=g),
            torch.randint(0, 2, (steps * batch,), generator=g))


def _epoch(proto, hosts, steps: int, batch: int, size: int, device, data) -> float:
    """One epoch of ``steps`` batches per hospital; returns its wall time here."""
    def step(model, k, idx):
        name = f"client{k}"
        if name in hosts:
            x = (data[k][0][idx].to(device).float() / 127.5) - 1.0
            y = data[k][1][idx].to(device)
        elif "server" in hosts:
            x = torch.empty(len(idx), 3, size, size, device="meta")
            y = torch.empty(len(idx), dtype=torch.int64, device="meta")
        else:
            proto.channel.next_step()
            return
        model.train_step(x, y)

    batches = [[torch.arange(s * batch, (s + 1) * batch) for s in range(steps)] for _ in range(2)]
    if "server" not in hosts and hosts != {"client0", "client1", "server", "aggregator"}:
        batches = [b if f"client{k}" in hosts else [] for k, b in enumerate(batches)]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    proto.run_epoch(batches, step)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def run_inprocess(protocol: str, size: int, steps: int, batch: int, device) -> dict:
    from medsplit.split import Channel

    channel = Channel()
    proto = _protocol(protocol, size, channel, device)
    data = [_images(k, steps, batch, size) for k in range(2)]
    hosts = {"client0", "client1", "server", "aggregator"}
    _epoch(proto, hosts, 1, batch, size, device, data)  # warm-up
    before = channel.total_bytes()
    seconds = _epoch(proto, hosts, steps, batch, size, device, data)
    return {"epoch_s": seconds, "bytes": channel.total_bytes() - before}


def run_party(rank: int, address: str, protocol: str, size: int, steps: int, batch: int, device) -> dict:
    """One party of the gloo measurement (a child process)."""
    from medsplit.split import Channel
    from medsplit.transport.gloo import GlooTransport

    names = ["server", "client0", "client1"]
    transport = GlooTransport(names[rank], {"server": 0, "client0": 1, "client1": 2, "aggregator": 0}, address, 300)
    hosts = {"server", "aggregator"} if rank == 0 else {names[rank]}
    channel = Channel(transport=transport, local=frozenset(hosts), device=str(device))
    try:
        proto = _protocol(protocol, size, channel, device)
        data = [_images(k, steps, batch, size) if f"client{k}" in hosts else None for k in range(2)]
        _epoch(proto, hosts, 1, batch, size, device, data)
        before = {k: v.payload_bytes for k, v in transport.stats.items()}
        framing = {k: v.framing_bytes for k, v in transport.stats.items()}
        counted_before = sum(r["bytes"] for r in channel.byte_rows() if r["sender"] in hosts)
        seconds = _epoch(proto, hosts, steps, batch, size, device, data)
        sent = sum(v.payload_bytes - before.get(k, 0) for k, v in transport.stats.items() if k[0] == "send")
        framed = sum(v.framing_bytes - framing.get(k, 0) for k, v in transport.stats.items() if k[0] == "send")
        counted = sum(r["bytes"] for r in channel.byte_rows() if r["sender"] in hosts) - counted_before
        return {"party": names[rank], "epoch_s": seconds, "sent_bytes": sent, "counted_bytes": counted, "framing_bytes": framed}
    finally:
        transport.close()


def run_gloo(protocol: str, size: int, steps: int, batch: int, device, threads: int) -> dict:
    from medsplit.transport.gloo import free_port

    address = f"127.0.0.1:{free_port()}"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    cmds = [[sys.executable, __file__, "--party", str(rank), "--address", address, "--protocols", protocol,
             "--sizes", str(size), "--steps", str(steps), "--batch", str(batch), "--device", str(device),
             "--threads", str(threads)] for rank in range(3)]
    outs = run_parties(cmds, env, 1800, [f"gloo party {rank}" for rank in range(3)])
    rows = [last_json(out) for out in outs]
    assert sum(r["sent_bytes"] for r in rows) == sum(r["counted_bytes"] for r in rows), rows
    return {"epoch_s": max(r["epoch_s"] for r in rows), "bytes": sum(r["counted_bytes"] for r in rows),
            "framing_bytes": sum(r["framing_bytes"] for r in rows), "parties": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="64,128")
    ap.add_argument("--protocols", default="sequential,splitfed")
    ap.add_argument("--steps", type=int, default=4, help="timed batches per hospital")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--party", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--address", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.party is not None:
        out = run_party(args.party, args.address, args.protocols, int(args.sizes), args.steps, args.batch, device)
        print(json.dumps(out))
        return 0
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        for protocol in args.protocols.split(","):
            one = run_inprocess(protocol, size, args.steps, args.batch, device)
            many = run_gloo(protocol, size, args.steps, args.batch, device, args.threads)
            n = args.steps * 2
            row = {"size": size, "protocol": protocol, "steps": n,
                   "inprocess_step_s": one["epoch_s"] / n, "gloo_step_s": many["epoch_s"] / n,
                   "inprocess_img_s": n * args.batch / one["epoch_s"], "gloo_img_s": n * args.batch / many["epoch_s"],
                   "overhead_pct": 100 * (many["epoch_s"] / one["epoch_s"] - 1),
                   "bytes_per_step": one["bytes"] / n, "gloo_bytes_per_step": many["bytes"] / n,
                   "framing_bytes_per_step": many["framing_bytes"] / n}
            rows.append(row)
            print(json.dumps(row), flush=True)
    header = ("| px | protocol | in-process s/step | gloo s/step | gloo vs in-process | img/s in-process | img/s gloo | MB/step |\n"
              "|---:|---|---:|---:|---:|---:|---:|---:|")
    lines = [header] + [
        f"| {r['size']} | {r['protocol']} | {r['inprocess_step_s']:.3f} | {r['gloo_step_s']:.3f} | {r['overhead_pct']:+.1f} % | "
        f"{r['inprocess_img_s']:.1f} | {r['gloo_img_s']:.1f} | {r['bytes_per_step'] / 1e6:.2f} |" for r in rows]
    table = "\n".join(lines)
    print(table)
    meta = {"device": str(device), "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "threads_per_process": args.threads, "batch": args.batch, "model": "resnet34", "cut": 3, "hospitals": 2,
            "load_average_at_end": os.getloadavg(), "torch": torch.__version__}
    RESULTS.mkdir(exist_ok=True)
    stem = f"transport-{device.type}"
    (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    (RESULTS / f"{stem}.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
