"""Split training over emulated hospital links: epoch time, bytes and per-link throughput of the
relay (``split.protocol=sequential``) and SplitFed, with fp32 and int8 activations
(``split.compress_activations``; ``--codecs int8/int8`` compresses the returned gradients too,
``split.compress_gradients``), measured with the server and each hospital in its own network
namespace and set beside the link-time model's prediction (``benchmarks/link_time.py``).

Links (:mod:`medsplit.netem.topology`): each hospital's veth pair to the router namespace is
shaped by ``tbf`` at the profile's rate in both directions and carries half the profile's
round trip each way (so hospital <-> server has the profile's RTT; the server's own link is not
shaped). Delay and loss come from ``netem`` where the kernel has it, otherwise from
:mod:`medsplit.netem.delayer` (a TUN device in the router namespace holding each packet for
its one-way delay; loss drops TCP offload packets, see its module). The ``method`` column says
which each row used. The parties talk over medsplit's gloo transport exactly as
``python -m medsplit party`` does: the hospitals reach the server's TCPStore at its namespace
address and gloo's pair sockets listen on each party's own address (the local IP that routes
to the server), so no party needs any setting for it.

Per (protocol, codec, size) the benchmark runs, each with one warm-up epoch of one batch per
hospital and then one timed epoch of ``--steps`` batches per hospital (ResNet-34, CUT 3, two
hospitals, batch 16, synthetic images, one torch thread per party):

* ``direct``: the same namespaces, no shaping: the compute-only epoch the model starts from;
* each profile: shaped, timed, with the model's prediction beside it:
  ``predicted = direct epoch + link time``, the link time of each directed link being
  ``link_time.epoch_seconds(1, 0, bytes, messages, rate, RTT)`` (the model's formula, per link,
  with the bytes and messages the transport counted in that epoch: activations, labels,
  gradients, the relay's weight hand-over and SplitFed's uploads). The links' times add up, for
  SplitFed too: its hospitals compute at the same time, but their transfers do not overlap,
  because gloo's send waits for the receiver's ready notice and the server posts its receive
  for a hospital only when its schedule reaches that hospital (measured: at 20 Mbit/s the sum
  fits SplitFed within 6-9 %, the busier hospital's share alone misses by 20-40 %; the JSON
  keeps that share as ``busiest_hospital_link_s``).
* ``--inprocess-baseline``: the same epoch with every party in one process (one thread, messages
  still encoded and decoded with the codec), outside the namespaces: what a shaped epoch is
  compared with (``vs_inprocess`` in the JSON: shaped epoch / in-process epoch);
* ``--relay-cost``: what the delayer itself costs: the direct runs again with the delayer in
  the path at 0 ms (every packet through userspace and back), and a TCP probe of both.

Beside the model as written (one one-way delay per message) the table gives it with gloo's
rendezvous (three per message): gloo's send waits for the receiver's ready notice, so a message
whose receive is posted only once an earlier one has arrived (the rest of a frame over one chunk,
medsplit.transport.framing.CHUNK_BYTES: 4 MiB + 64 KiB, 1 MiB in result files without
``chunk_bytes``; the next message in the same direction; a receiver
still computing) pays a notice's one-way delay back and then its own. The gloo ping-pong
column measures one 8-byte exchange per link. The first time a profile is used, a TCP probe (round trip, upload and download goodput) and an 8-byte
gloo ping-pong run over it.

    sudo python benchmarks/wan.py                             # 64 px, 3 profiles, both protocols, fp32 + int8
    sudo python benchmarks/wan.py --sizes 64,128 --steps 4 --relay-cost
    python benchmarks/wan.py --reanalyse benchmarks/results/wan.json   # tables again, no runs

Prints a table and writes benchmarks/results/wan.json. Skips (exit 0, with the reason) where
network namespaces cannot be created.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]

#: name -> (rate bit/s, round trip s, loss probability per packet)
PROFILES = {
    "1G-2ms": (1e9, 0.002, 0.0),
    "100M-20ms": (100e6, 0.020, 0.0),
    "20M-50ms-0.1%": (20e6, 0.050, 0.001),
}


def _sibling(name: str):
    """``benchmarks/<name>.py`` as a module (benchmarks/ is not a package, and tests load this file by path)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def link_time_model():
    """benchmarks/link_time.py: its formula is the model."""
    return _sibling("link_time")


_parties = _sibling("bench_parties")  # run_parties, last_json: the benchmarks' party processes
_compare = _sibling("wan_compare")  # predictions beside the runs, and the tables
_child = _sibling("wan_child")  # what each child process runs
NAMES = _child.NAMES


@dataclass
class Settings:
    """What every measurement of one benchmark run shares."""

    steps: int = 4  # timed batches per hospital
    batch: int = 16
    model: str = "resnet34"
    cut: int = 3
    probe_bytes: int = 10_000_000  # bytes of the TCP probe (each direction)
    party_timeout: float = 900.0
    sysctls: dict = field(default_factory=dict)  # for every party namespace
    microbatches: int = 1  # split.microbatches of the party runs


def _child_env() -> dict:
    """The environment of every process this benchmark starts: one torch thread, this checkout first."""
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def gloo_pingpong(topology, exchanges: int = 20) -> dict:
    """The hospital's view of a gloo ping-pong with the server (see ``wan_child.run_pingpong``)."""
    env = _child_env()
    address = f"{topology.address(0)}:29512"
    cmds = [[*topology.exec_prefix(rank), sys.executable, __file__, "--pingpong", str(exchanges), "--party", str(rank),
             "--address", address] for rank in (0, 1)]
    outs = _parties.run_parties(cmds, env, 300, [f"gloo ping-pong party {rank}" for rank in (0, 1)])
    return _parties.last_json(outs[1])


def run_parties(topology, settings: Settings, protocol: str, codec: str, size: int) -> dict:
    """Every party in its own namespace; returns the slowest party's epoch time and the links."""
    address = f"{topology.address(0)}:29511"
    env = _child_env()
    cmds = [[*topology.exec_prefix(rank), sys.executable, __file__, "--party", str(rank), "--address", address,
             "--protocols", protocol, "--codecs", codec, "--sizes", str(size), "--steps", str(settings.steps),
             "--batch", str(settings.batch), "--model", settings.model, "--cut", str(settings.cut),
             "--microbatches", str(settings.microbatches)] for rank in range(len(NAMES))]
    # nothing outlives the measurement (the namespaces go right after)
    outs = _parties.run_parties(cmds, env, settings.party_timeout,
                       [f"party {name} in {topology.party(rank)}" for rank, name in enumerate(NAMES)])
    parties = [_parties.last_json(out) for out in outs]
    return {"epoch_s": max(r["epoch_s"] for r in parties), "parties": parties}


# ---- the benchmark ---------------------------------------------------------------------------

def inprocess_epoch(settings: Settings, protocol: str, codec: str, size: int) -> dict:
    """``wan_child.run_inprocess`` in a child process of its own (one thread, like each party)."""
    env = _child_env()
    cmd = [sys.executable, __file__, "--inprocess", "--protocols", protocol, "--codecs", codec, "--sizes", str(size),
           "--steps", str(settings.steps), "--batch", str(settings.batch), "--model", settings.model, "--cut", str(settings.cut)]
    outs = _parties.run_parties([cmd], env, settings.party_timeout, ["the in-process run"])
    return _parties.last_json(outs[0])


def shaped_links(rate_bps: float | None, rtt_s: float, loss: float):
    """The server unshaped, every hospital on a link of ``rate_bps``, ``rtt_s`` to the server, ``loss``."""
    from medsplit.netem.topology import Link

    return [Link()] + [Link(rate_bps, rtt_s / 2, loss)] * (len(NAMES) - 1)


def measure(settings: Settings, links, method: str, protocol: str, codec: str, size: int, probe: bool) -> dict:
    """One timed epoch in freshly built namespaces (removed again before this returns)."""
    from medsplit.netem.probe import probe_between
    from medsplit.netem.topology import Topology, congestion_control

    load = os.getloadavg()
    with Topology(links, method=method, sysctls=settings.sysctls) as topology:
        row = {"method": topology.method, "congestion_control": congestion_control(topology, 1), "load_before": load}
        if probe:
            row["probe"] = probe_between(topology, 0, 1, settings.probe_bytes)
            row["gloo_pingpong"] = gloo_pingpong(topology)
        started = time.time()
        row.update(run_parties(topology, settings, protocol, codec, size))
        row["wall_s"] = time.time() - started
    row["load_after"] = os.getloadavg()
    row["delayer_counts"] = topology.delayer_counts
    return row


def _chunk_bytes(rows: list[dict]) -> int | None:
    """The gloo frames' chunk size the parties ran with (medsplit.transport.framing.CHUNK_BYTES)."""
    return next((p["chunk_bytes"] for r in rows for p in r.get("parties", []) if "chunk_bytes" in p), None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="64")
    ap.add_argument("--protocols", default="sequential,splitfed")
    ap.add_argument("--codecs", default="none,int8",
                    help="per run ACT (split.compress_activations; gradients go back in fp32) or ACT/GRAD "
                         "(split.compress_gradients too), e.g. none,int8,int8/int8")
    ap.add_argument("--profiles", default=",".join(PROFILES), help=f"from {', '.join(PROFILES)}".replace("%", "%%"))  # argparse %-formats help
    ap.add_argument("--steps", type=int, default=4, help="timed batches per hospital")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--model", default="resnet34")
    ap.add_argument("--cut", type=int, default=3)
    ap.add_argument("--method", default="auto", choices=["auto", "netem", "delayer"], help="delay and loss by")
    ap.add_argument("--relay-cost", action="store_true", help="also run the direct rows through the delayer at 0 ms")
    ap.add_argument("--probe-bytes", type=int, default=10_000_000, help="bytes of the TCP probe per profile")
    ap.add_argument("--no-slow-start-after-idle", action="store_true",
                    help="net.ipv4.tcp_slow_start_after_idle=0 in every party namespace (Linux default: 1)")
    ap.add_argument("--party-timeout", type=float, default=900)
    ap.add_argument("--out", type=Path, default=RESULTS / "wan.json")
    ap.add_argument("--reanalyse", type=Path, default=None,
                    help="recompute the predictions and tables of a results file (no runs); writes it back")
    ap.add_argument("--microbatches", type=int, default=1,
                    help="split.microbatches of the party runs (the in-process baseline runs without: 1)")
    ap.add_argument("--inprocess-baseline", action="store_true",
                    help="also time the same epoch with every party in one process (one thread), outside the namespaces")
    ap.add_argument("--inprocess", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--party", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--pingpong", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--address", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.pingpong is not None:
        print(json.dumps(_child.run_pingpong(args.party, args.address, args.pingpong)), flush=True)
        return 0
    if args.inprocess:
        import torch

        torch.set_num_threads(1)
        print(json.dumps(_child.run_inprocess(args.protocols, args.codecs, int(args.sizes), args.steps, args.batch, args.model,
                                       args.cut)), flush=True)
        return 0
    if args.party is not None:
        import torch

        torch.set_num_threads(1)
        print(json.dumps(_child.run_party(args.party, args.address, args.protocols, args.codecs, int(args.sizes), args.steps,
                                   args.batch, args.model, args.cut, args.microbatches)), flush=True)
        return 0

    sys.path.insert(0, str(ROOT))
    from medsplit.netem.topology import Link, remove_stale, unavailable

    model = link_time_model()
    if args.reanalyse:
        result = json.loads(args.reanalyse.read_text())
        _compare.derive(result["rows"], model, result.get("microbatches") or 1, result.get("chunk_bytes"))
        _compare.write(result, args.reanalyse)
        return 0

    settings = Settings(steps=args.steps, batch=args.batch, model=args.model, cut=args.cut, probe_bytes=args.probe_bytes,
                        party_timeout=args.party_timeout, microbatches=args.microbatches,
                        sysctls={"net.ipv4.tcp_slow_start_after_idle": "0"} if args.no_slow_start_after_idle else {})
    why = unavailable()
    if why:
        print(f"SKIPPED: {why}")
        return 0
    # SIGTERM (a timeout, a job runner) would end Python without its finally blocks: turn it into
    # SystemExit so that every namespace is taken down; a SIGKILL leaves them to remove_stale.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stale = remove_stale()
    if stale:
        print(f"removed stale namespaces of killed runs: {', '.join(stale)}")
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    unknown = sorted(set(profiles) - set(PROFILES))
    if unknown:
        raise SystemExit(f"unknown profile(s) {unknown}; choose from {list(PROFILES)}")
    started = time.time()
    rows = []

    probed: set[str] = set()
    for size in [int(s) for s in args.sizes.split(",")]:
        for protocol in args.protocols.split(","):
            for codec in args.codecs.split(","):
                key = {"size": size, "protocol": protocol, "codec": codec}
                direct = measure(settings, [Link()] * len(NAMES), "auto", protocol, codec, size, probe="direct" not in probed)
                probed.add("direct")
                rows.append({**key, "profile": "direct", "rate_bps": None, "rtt_s": 0.0, "loss": 0.0, **direct,
                             "links": _compare.link_rows(_compare.directed_links(direct["parties"]))})
                _compare.derive(rows, model, settings.microbatches, _chunk_bytes(rows))
                _compare.print_row(rows[-1])
                if args.inprocess_baseline:
                    rows.append({**key, "profile": "in-process", "rate_bps": None, "rtt_s": 0.0, "loss": 0.0,
                                 "method": "none", "load_before": os.getloadavg(),
                                 **inprocess_epoch(settings, protocol, codec, size), "links": []})
                    _compare.derive(rows, model, settings.microbatches, _chunk_bytes(rows))
                    _compare.print_row(rows[-1])
                if args.relay_cost:
                    zero = measure(settings, [Link()] * len(NAMES), "delayer", protocol, codec,
                                   size, probe="delayer-0" not in probed)
                    probed.add("delayer-0")
                    rows.append({**key, "profile": "direct+delayer-0ms", "rate_bps": None, "rtt_s": 0.0, "loss": 0.0, **zero,
                                 "links": _compare.link_rows(_compare.directed_links(zero["parties"]))})
                    _compare.derive(rows, model, settings.microbatches, _chunk_bytes(rows))
                    _compare.print_row(rows[-1])
                for profile in profiles:
                    rate, rtt, loss = PROFILES[profile]
                    got = measure(settings, shaped_links(rate, rtt, loss), args.method, protocol, codec, size, probe=profile not in probed)
                    probed.add(profile)
                    rows.append({**key, "profile": profile, "rate_bps": rate, "rtt_s": rtt, "loss": loss, **got,
                                 "links": _compare.link_rows(_compare.directed_links(got["parties"]))})
                    _compare.derive(rows, model, settings.microbatches, _chunk_bytes(rows))
                    _compare.print_row(rows[-1])
    result = {
        "benchmark": "wan", "model": args.model, "cut": args.cut, "hospitals": len(NAMES) - 1, "batch": args.batch,
        "steps_per_hospital": args.steps, "microbatches": args.microbatches, "inprocess_microbatches": 1, "threads_per_party": 1, "party_sysctls": settings.sysctls, "cores": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(), "kernel": platform.release(),
        "shared_machine": "the CPU was shared with other sessions: timings are noisy; load averages are recorded per row",
        "profiles": {k: {"rate_bps": r, "rtt_s": t, "loss": l} for k, (r, t, l) in PROFILES.items()},
        "rows": rows, "elapsed_s": time.time() - started,
        # the gloo frames' chunk size (medsplit.transport.framing.CHUNK_BYTES): files without it used 1 MiB
        "chunk_bytes": _chunk_bytes(rows),
    }
    _compare.write(result, args.out)
    print(f"\n{time.time() - started:.0f} s. Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
