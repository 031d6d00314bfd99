"""Time FSHA iterations at 64 px on the available device and extrapolate to the paper's 10,000.

    python benchmarks/fsha_speed.py [--device auto|cpu|cuda] [--iterations 20] [--threads N]

One iteration = one client forward/backward through the channel, the hijacker's adversarial
gradient, one pilot/decoder step and one critic step with gradient penalty. Prints a table and
writes benchmarks/results/fsha_speed-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from medsplit.attacks.fsha import FSHAClientSession, FSHAConfig, FSHAServer
from medsplit.models import build_model
from medsplit.split import Channel, cut

PAPER_ITERATIONS = 10_000


def time_setting(model: str, cut_at: int, size: int, batch: int, iterations: int, device: torch.device) -> dict:
    """Seconds per FSHA iteration (after 3 warm-up iterations) for one model/cut."""
    if model == "unet-classic":
        table, channels = build_model(model, num_classes=1, in_channels=1, base_channels=8), 1
    else:
        table, channels = build_model(model, num_classes=2, in_channels=3), 3
    part = cut(table, cut_at)[0].to(device)
    key = part.sends[-1] if model == "unet-classic" else part.sends[0]
    with torch.no_grad():
        shape = tuple(part({"x": torch.rand(2, channels, size, size, device=device)})[key].shape[1:])
    cfg = FSHAConfig(batch_size=batch, width=16)
    server = FSHAServer(channels, size, shape, cfg, nonnegative=True).to(device)
    session = FSHAClientSession(part, key, Channel(), server, cfg.lr_client)
    x = torch.rand(batch, channels, size, size, device=device)
    for _ in range(3):
        session.round(x, None, x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iterations):
        session.round(x, None, x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    per = (time.perf_counter() - start) / iterations
    return {"model": model, "cut": cut_at, "img_size": size, "batch": batch, "activation": list(shape),
            "seconds_per_iteration": per, "extrapolated_seconds_10k": per * PAPER_ITERATIONS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (1 on a shared machine)")
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    rows = [time_setting("unet-classic", 1, 64, args.batch, args.iterations, device),
            time_setting("unet-classic", 2, 64, args.batch, args.iterations, device),
            time_setting("resnet18", 3, 64, args.batch, args.iterations, device)]
    print(f"{'model':14s} {'cut':>3s} {'px':>4s} {'batch':>5s} {'s/iter':>8s} {'10k iters':>10s}")
    for r in rows:
        print(f"{r['model']:14s} {r['cut']:3d} {r['img_size']:4d} {r['batch']:5d} {r['seconds_per_iteration']:8.3f} "
              f"{r['extrapolated_seconds_10k'] / 60:8.1f} min")
    out = Path(__file__).resolve().parent / "results" / f"fsha_speed-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"device": str(device), "threads": torch.get_num_threads(), "platform": platform.platform(),
              "torch": torch.__version__, "iterations_timed": args.iterations, "rows": rows,
              "note": "timed while the machine may be shared; see load average"}
    out.write_text(json.dumps(record, indent=1))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
