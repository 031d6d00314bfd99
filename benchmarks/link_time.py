"""Time per training epoch of a split ResNet-34 over a hospital link, per cut and codec.

    epoch time = steps * (compute + bytes * 8 / bandwidth + messages * latency)

* compute: seconds per batch of the split training step (client part, server part, both
  optimisers, the channel), measured on this machine at ``--size`` px (default 64), plus
  the codec's own encode + decode time, measured separately on the very tensors that
  cross (activation forward, gradient backward). Measuring the codec apart keeps its few
  milliseconds out of the step-to-step noise of a shared CPU.
* bytes and messages: everything the Channel counts per batch (activation, labels,
  gradient), at ``--target-size`` px (default 224). They come from a forward/backward at
  that size on PyTorch's meta device (shapes only, no arithmetic), through the same
  Channel and codecs, so they are the exact wire-format sizes. At 64 -> 224 px every
  crossing tensor grows by exactly (224/64)^2 = 12.25 (both sizes are multiples of 32),
  headers and per-channel scales do not.
* latency: one-way, RTT / 2 per message (a step is activation + labels out, gradient back).

Compute stays at the measured size (this CPU at 224 px is ~7x slower again; on a GPU
compute is far smaller), so the table isolates what the link adds. Only one client-server
pair is modelled: the relay's per-epoch weight hand-over and FedAvg uploads are left out.

    python benchmarks/link_time.py                       # defaults, < 3 minutes on 2 CPU cores
    python benchmarks/link_time.py --codecs none,int8 --cuts 1,3,5 --steps 5

Writes benchmarks/results/link_time.json and benchmarks/results/link_time.png.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from medsplit.models import build_model
from medsplit.split import Channel, SplitModel, cut, two_party
from medsplit.split.codecs import CODECS, Codec, codecs_for, make_codec

RESULTS = Path(__file__).resolve().parent / "results"


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _split_model(table, cut_at: int, channel: Channel, make_optimizer=None) -> SplitModel:
    return two_party(cut(table, cut_at), F.cross_entropy, channel, make_optimizer)


def measure_steps(table, cuts: list[int], size: int, batch: int, steps: int, warmup: int) -> dict[int, dict]:
    """Median seconds per training step at ``size`` px for every cut, the tensors that crossed
    on the last step (by kind) and the bytes counted per step at this size.

    Steps are taken round-robin over the cuts (cut 0, 1, ..., 7, then again), so load from
    other processes on a shared machine falls on every cut alike instead of on a few.
    """
    # Fused Adam, as the training loop uses: the per-parameter loop costs more than the model on a CPU.
    make = lambda params: torch.optim.Adam(params, lr=1e-3, fused=True)  # noqa: E731
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, 3, size, size, generator=g), torch.randint(0, 2, (batch,), generator=g)
    state: dict[int, dict] = {}
    for c in cuts:
        channel = Channel(check_finite=False)
        crossed: dict[str, dict[str, torch.Tensor]] = {}
        channel.tap(lambda t, crossed=crossed: crossed.__setitem__(t.kind, {k: v.detach() for k, v in t.tensors.items()}))
        state[c] = {"model": _split_model(table, c, channel, make), "channel": channel, "crossed": crossed, "times": []}
    for k in range(warmup + steps):
        for c in cuts:
            t = time.perf_counter()
            state[c]["model"].train_step(x, y)
            if k >= warmup:
                state[c]["times"].append(time.perf_counter() - t)
    return {c: {"step_s": statistics.median(s["times"]), "crossed": s["crossed"],
                "bytes": s["channel"].total_bytes() / (warmup + steps)} for c, s in state.items()}


def codec_overhead(codec: Codec, crossed: dict[str, dict[str, torch.Tensor]], repeats: int = 5) -> float:
    """Median seconds to encode and decode one step's activation and gradient with ``codec``."""
    tensors = [crossed[k] for k in ("activation", "gradient") if k in crossed]
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for named in tensors:
            codec.decode(codec.encode(named))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def count_traffic(meta_table, cut_at: int, codec: str, size: int, batch: int) -> dict:
    """Bytes and messages per training step at ``size`` px, counted by the Channel on the meta device."""
    channel = Channel(check_finite=False, codecs=codecs_for(codec, codec))
    shapes: dict[str, list[int]] = {}
    messages = []

    def observe(t) -> None:
        messages.append(t.kind)
        if t.kind == "activation":
            shapes.update({k: list(v.shape[1:]) for k, v in t.tensors.items()})

    channel.tap(observe)
    model = _split_model(meta_table, cut_at, channel)
    x = torch.empty(batch, 3, size, size, device="meta")
    y = torch.empty(batch, dtype=torch.long, device="meta")
    model.forward_backward(x, y)
    return {"bytes": channel.total_bytes(), "messages": len(messages), "kinds": messages, "sends": shapes}


def epoch_seconds(steps: int, compute_s: float, nbytes: float, messages: int, bandwidth_bps: float, rtt_s: float) -> float:
    return steps * (compute_s + nbytes * 8 / bandwidth_bps + messages * rtt_s / 2)


def _link_name(bandwidth_bps: float, rtt_s: float) -> str:
    bw = f"{bandwidth_bps / 1e9:g} Gbit/s" if bandwidth_bps >= 1e9 else f"{bandwidth_bps / 1e6:g} Mbit/s"
    return f"{bw}, {rtt_s * 1e3:g} ms RTT"


def _short_link(bandwidth_bps: float, rtt_s: float) -> str:
    bw = f"{bandwidth_bps / 1e9:g}G" if bandwidth_bps >= 1e9 else f"{bandwidth_bps / 1e6:g}M"
    return f"{bw} {rtt_s * 1e3:g}ms"


def plot(rows: list[dict], links: list[tuple[float, float]], codecs: list[str], path: Path) -> None:
    """One panel per link (rows: RTT, columns: bandwidth), one line per codec; dashed: compute only."""
    rtts = sorted({r for _, r in links})
    bws = sorted({b for b, _ in links})
    fig = Figure(figsize=(4.4 * len(bws), 3.4 * len(rtts)), layout="constrained")
    axes = fig.subplots(len(rtts), len(bws), squeeze=False, sharex=True, sharey=True)
    cuts = sorted({r["cut"] for r in rows})
    for i, rtt in enumerate(rtts):
        for j, bw in enumerate(bws):
            ax = axes[i][j]
            for k, codec in enumerate(codecs):
                mine = sorted((r for r in rows if r["codec"] == codec), key=lambda r: r["cut"])
                epoch = [next(l["epoch_s"] for l in r["links"] if l["bandwidth_bps"] == bw and l["rtt_s"] == rtt) for r in mine]
                ax.plot([r["cut"] for r in mine], [e / 60 for e in epoch], marker="o", markersize=3.5, color=f"C{k}", label=codec)
            compute = sorted((r for r in rows if r["codec"] == "none"), key=lambda r: r["cut"])
            ax.plot([r["cut"] for r in compute], [r["steps_per_epoch"] * r["compute_s"] / 60 for r in compute],
                    linestyle="--", color="#777", linewidth=1.2, label="compute only")
            ax.set_title(_link_name(bw, rtt), fontsize=10)
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(v)[0] in "2358" else ""))
            ax.set_xticks(cuts)
            ax.grid(alpha=0.3, which="both")
            if i == len(rtts) - 1:
                ax.set_xlabel("cut (CUT=N)")
            if j == 0:
                ax.set_ylabel("minutes per epoch")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Split ResNet-34: epoch time over a link (bytes at 224 px, compute measured on this machine)", fontsize=11)
    fig.savefig(path, dpi=110, facecolor="white")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=64, help="image size for the measured compute (px)")
    ap.add_argument("--target-size", type=int, default=224, help="image size the bytes are counted at (px)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per cut (median taken)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--cuts", type=_ints, default=list(range(8)))
    ap.add_argument("--codecs", default="none,fp16,int8,topk0.1", help=f"comma-separated, from {','.join(CODECS)}")
    ap.add_argument("--bandwidths", type=_floats, default=[100e6, 1e9, 10e9], help="bits per second")
    ap.add_argument("--rtts", type=_floats, default=[0.001, 0.010], help="round-trip times in seconds")
    ap.add_argument("--train-images", type=int, default=1950,
                    help="images per epoch (default: EyePACS 3,000 less 15%% validation and 20%% test)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: on a shared CPU, oversubscribed threads spin and time 10x slower; 0 keeps torch's default)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]
    for c in codecs:
        make_codec(c)  # fail now, naming the valid codecs, not after minutes of timing
    if args.threads:
        torch.set_num_threads(args.threads)
    links = [(bw, rtt) for rtt in args.rtts for bw in args.bandwidths]
    steps_per_epoch = math.ceil(args.train_images / args.batch)
    started = time.time()

    torch.manual_seed(0)
    table = build_model("resnet34", num_classes=2)
    meta_table = copy.deepcopy(table).to("meta")
    measured = measure_steps(table, args.cuts, args.size, args.batch, args.steps, args.warmup)
    print(f"timed {args.steps} steps x {len(args.cuts)} cuts in {time.time() - started:.0f} s", flush=True)
    rows = []
    for c in args.cuts:
        compute, crossed = measured[c]["step_s"], measured[c]["crossed"]
        # The meta-device count must equal what the real step counted, or the 224 px bytes mean nothing.
        check = count_traffic(meta_table, c, "none", args.size, args.batch)
        if check["bytes"] != measured[c]["bytes"]:
            raise RuntimeError(f"cut {c}: meta count {check['bytes']} != measured {measured[c]['bytes']} bytes per step")
        for codec in codecs:
            overhead = 0.0 if codec == "none" else codec_overhead(make_codec(codec), crossed)
            traffic = count_traffic(meta_table, c, codec, args.target_size, args.batch)
            small = count_traffic(meta_table, c, codec, args.size, args.batch)
            row = {
                "cut": c, "codec": codec, "sends": traffic["sends"], "steps_per_epoch": steps_per_epoch,
                "compute_s": compute + overhead, "step_s": compute, "codec_overhead_s": overhead,
                "bytes_per_batch": traffic["bytes"], "bytes_per_batch_at_measured_size": small["bytes"],
                "messages_per_batch": traffic["messages"],
                "links": [{"bandwidth_bps": bw, "rtt_s": rtt, "link": _link_name(bw, rtt),
                           "epoch_s": epoch_seconds(steps_per_epoch, compute + overhead, traffic["bytes"], traffic["messages"], bw, rtt)}
                          for bw, rtt in links],
            }
            rows.append(row)

    header = f"{'cut':>3} {'sends (C,H,W)':>16} {'codec':>8} {'MB/batch':>9} {'compute s':>9} " + " ".join(
        f"{_short_link(bw, rtt):>10}" for bw, rtt in links)
    print(f"\nEpoch time in seconds ({steps_per_epoch} steps of {args.batch} images). Compute: {args.size} px on this "
          f"machine; bytes: {args.target_size} px (x{(args.target_size / args.size) ** 2:g} the crossing tensors of "
          f"{args.size} px); latency RTT/2 per message. Links: bandwidth in bit/s (M, G) and RTT.\n")
    print(header)
    for r in rows:
        sends = "+".join("x".join(map(str, s)) for s in r["sends"].values())
        print(f"{r['cut']:>3} {sends:>16} {r['codec']:>8} {r['bytes_per_batch'] / 1e6:>9.2f} {r['compute_s']:>9.3f} "
              + " ".join(f"{l['epoch_s']:>10.1f}" for l in r["links"]))

    device = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    result = {
        "benchmark": "link_time", "device": device, "torch": torch.__version__, "model": "resnet34",
        "measured_size": args.size, "target_size": args.target_size, "batch": args.batch, "steps": args.steps,
        "warmup": args.warmup, "train_images": args.train_images, "steps_per_epoch": steps_per_epoch,
        "spatial_ratio": (args.target_size / args.size) ** 2,
        "formula": "epoch_s = steps_per_epoch * (compute_s + bytes_per_batch * 8 / bandwidth_bps + messages_per_batch * rtt_s / 2)",
        "notes": [f"compute_s: median split training step at {args.size} px on this machine plus the codec's "
                  "encode+decode time on the tensors that crossed",
                  f"bytes_per_batch: counted by the Channel at {args.target_size} px on the meta device (exact wire sizes)",
                  "one client-server pair; relay weight hand-over and FedAvg uploads are not included"],
        "rows": rows, "elapsed_s": time.time() - started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "link_time.json").write_text(json.dumps(result, indent=2))
    plot(rows, links, codecs, args.out / "link_time.png")
    print(f"\n{time.time() - started:.0f} s. Wrote {args.out / 'link_time.json'} and {args.out / 'link_time.png'}")
    return result


if __name__ == "__main__":
    main()
