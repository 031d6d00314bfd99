"""Time FSHA iterations at 64 px on the available device and extrapolate to the paper's 10,000.

    python benchmarks/fsha_speed.py [--device auto|cpu|cuda] [--iterations 20] [--threads N] [--batch 16] [--out FILE]

One iteration is what the attack harness runs per FSHA iteration: one round of the real
two-party protocol (:class:`~medsplit.attacks.fsha_protocol.HijackedSplitModel`: every part
forward and backward through the channel, the hijacker's adversarial gradient to the client's
first part, every party's optimiser step), then one pilot/decoder step and one critic step
with gradient penalty. Prints a table and writes benchmarks/results/fsha_speed-<device>.json
(or ``--out``).
"""

from __future__ import annotations

import argparse
import os
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from medsplit.attacks.fsha import FSHAConfig
from medsplit.attacks.fsha_protocol import HijackedSplitModel
from medsplit.attacks.tap import activation_shape
from medsplit.attacks.targets import parts_on
from medsplit.models import build_model
from medsplit.split import cut, two_party

PAPER_ITERATIONS = 10_000


def time_setting(model: str, cut_at: int, size: int, batch: int, iterations: int, device: torch.device) -> dict:
    """Seconds per FSHA iteration (after 3 warm-up iterations) for one model/cut."""
    cfg = FSHAConfig(batch_size=batch, width=16)
    if model == "unet-classic":  # the lung U-Net: masks as targets, the loss at the client decoder
        table, channels = build_model(model, num_classes=1, in_channels=1, base_channels=8), 1
        loss = lambda out, y: F.binary_cross_entropy_with_logits(out, y.float())  # noqa: E731
        y = torch.randint(0, 2, (batch, 1, size, size), device=device)
    else:  # the fundus ResNet: class labels cross to the server
        table, channels = build_model(model, num_classes=2, in_channels=3), 3
        loss = F.cross_entropy
        y = torch.randint(0, 2, (batch,), device=device)
    split = two_party(parts_on(cut(table, cut_at), device), loss,
                      make_optimizer=lambda ps: torch.optim.Adam(ps, lr=cfg.lr_client))
    x = torch.rand(batch, channels, size, size, device=device)
    hijacked = HijackedSplitModel.against(split, x, x, cfg)
    shape = activation_shape(split, x)
    hijacked.train()
    for _ in range(3):
        hijacked.train_step(x, y, x_aux=x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iterations):
        hijacked.train_step(x, y, x_aux=x)
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
    ap.add_argument("--out", type=Path, default=None, help="result file (default benchmarks/results/fsha_speed-<device>.json)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    load_before = os.getloadavg()
    rows = [time_setting("unet-classic", 1, 64, args.batch, args.iterations, device),
            time_setting("unet-classic", 2, 64, args.batch, args.iterations, device),
            time_setting("resnet18", 3, 64, args.batch, args.iterations, device)]
    print(f"{'model':14s} {'cut':>3s} {'px':>4s} {'batch':>5s} {'s/iter':>8s} {'10k iters':>10s}")
    for r in rows:
        print(f"{r['model']:14s} {r['cut']:3d} {r['img_size']:4d} {r['batch']:5d} {r['seconds_per_iteration']:8.3f} "
              f"{r['extrapolated_seconds_10k'] / 60:8.1f} min")
    out = args.out or Path(__file__).resolve().parent / "results" / f"fsha_speed-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"device": str(device), "threads": torch.get_num_threads(), "platform": platform.platform(),
              "torch": torch.__version__, "iterations_timed": args.iterations, "rows": rows,
              "iteration": "one full protocol round with the hijacking server (HijackedSplitModel.train_step: every "
                           "part and party) plus the server's autoencoder and critic updates, as the attack harness runs it",
              "load_before": load_before, "load_after": os.getloadavg(),
              "note": "timed while the machine may be shared: the load averages (1, 5, 15 min) are recorded"}
    out.write_text(json.dumps(record, indent=1))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
